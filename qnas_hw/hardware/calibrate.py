"""``qnas-hw calibrate``: measure a backend, fit the cost model, write ``calibration/<backend>.json``.

A designed set of HQNN circuits varies width, depth, shots and the number of
circuit executions per job; each is run through the backend's own
``submit`` and timed by the backend's own clock: for real IBM devices the
usage IBM reports for the job (``RuntimeJobV2.metrics()["usage"]``, the figure
``job.usage()`` returns, waited for until it is final), for local simulators
the submission-to-result wall clock.  Coefficients are fitted by non-negative least squares on a
training split and judged on *held-out* circuits (R^2, MAPE), so a good
score means the model generalises to circuits it has not seen.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from qnas_hw.hardware.backends import get_backend
from qnas_hw.hardware.backends.base import Backend, JobHandle, SamplerPub
from qnas_hw.hardware.cost import (
    DEVICE_COEFFS,
    WALL_FEATURES,
    CostModel,
    FitQuality,
    Workload,
    calibration_path,
    fit_nnls,
    init_duration_s,
    mape,
    r2_score,
)
from qnas_hw.hardware.transpilation import Transpiler, TranspileRecord
from qnas_hw.locking import WriterLock
from qnas_hw.model.space import Architecture

log = logging.getLogger(__name__)

IDEAL_SIMULATORS = ("aer_ideal", "braket_local_sv")
#: IBM computes a job's usage after the job finishes (``usage.status`` stays ``pending`` meanwhile): poll this often,
#: for at most this long, before calling the figure missing.
USAGE_POLL_S = 5.0
USAGE_WAIT_S = 600.0

PACKAGES = (
    "qiskit",
    "qiskit-aer",
    "qiskit-ibm-runtime",
    "amazon-braket-sdk",
    "amazon-braket-default-simulator",
    "numpy",
    "scipy",
)


@dataclass(frozen=True)
class DesignPoint:
    """One calibration job: an HQNN circuit of this size, ``rows`` parameter rows x ``pubs`` PUBs."""

    width: int
    layers: int
    shots: int
    rows: int
    pubs: int
    heldout: bool

    def arch(self) -> Architecture:
        return Architecture("angle-y", self.width, self.layers, "ry-rz", "ring" if self.width > 2 else "linear")


#: First job of every calibration, never part of the fit: it pays imports, JIT and (on a QPU) a cold start.
WARM_UP = DesignPoint(2, 1, 100, 1, 1, heldout=False)


@dataclass(frozen=True)
class Measurement:
    point: DesignPoint
    seconds: float
    predicted: float
    workload: Workload
    record: dict[str, Any]


@dataclass(frozen=True)
class CalibrationReport:
    backend: str
    path: Path
    fit: FitQuality
    timing_source: str
    measurements: list[Measurement]
    model: CostModel

    def table(self) -> list[dict[str, Any]]:
        """Rows for printing predicted vs measured (held-out marked)."""
        return [
            {
                "width": m.point.width,
                "layers": m.point.layers,
                "shots": m.point.shots,
                "circuits": m.point.rows * m.point.pubs,
                "heldout": m.point.heldout,
                "measured_s": m.seconds,
                "predicted_s": m.predicted,
            }
            for m in self.measurements
        ]


def design(seed: int, quick: bool, max_width: int) -> list[DesignPoint]:
    """A randomised factorial design; about 30% of points are held out for validation.

    Held-out points are drawn from the same ranges but are distinct
    configurations, so R^2/MAPE measure interpolation to unseen circuits.
    """
    rng = np.random.default_rng(seed)
    widths = [w for w in (2, 3, 4, 6, 8, 10) if w <= max_width]
    # 48 points for a full local design: with 7 wall features, 24 points (17 fitted) left the held-out error of
    # millisecond simulator jobs at 25%; local runs are cheap (seconds to minutes), QPU designs use ``quick``
    n = 12 if quick else 48
    seen: set[tuple[int, ...]] = set()
    points: list[DesignPoint] = []
    while len(points) < n:
        cfg = (
            int(rng.choice(widths)),
            int(rng.choice([1, 2, 4])),
            int(rng.choice([100, 400, 1600])),
            int(rng.choice([1, 4, 16])),
            int(rng.choice([1, 2])),
        )
        if cfg in seen:
            continue
        seen.add(cfg)
        points.append(DesignPoint(*cfg, heldout=False))
    order = rng.permutation(n)
    n_held = max(4, round(0.3 * n))  # 4 of 12 (quick) / 14 of 48
    held = set(order[:n_held].tolist())
    return [DesignPoint(**{**p.__dict__, "heldout": i in held}) for i, p in enumerate(points)]


def _workload(backend: Backend, rec: TranspileRecord, p: DesignPoint) -> Workload:
    return Workload(
        jobs=1,
        circuits=p.rows * p.pubs,
        tasks=p.pubs,
        shots=p.shots,
        n_gates=rec.n_gates,
        width=rec.width,
        duration_s=rec.duration_s,
        rep_delay_s=backend.rep_delay_s,
        init_s=init_duration_s(backend),
    )


def _reported_usage(handle: JobHandle, backend_name: str) -> tuple[float, dict[str, Any]]:
    """The job's QPU seconds as the provider reports them, waiting while IBM still computes the figure.

    Returns the seconds and what the calibration file records about them
    (job id, which usage field, running-to-finished time from the timestamps).
    """
    deadline = time.monotonic() + USAGE_WAIT_S
    while True:
        timing = handle.timing()
        source = timing.extra.get("usage_source", "none")
        if timing.quantum_seconds is not None:
            info = {"job_id": handle.job_id, "usage_source": source}
            if "running_to_finished_s" in timing.extra:
                info["running_to_finished_s"] = timing.extra["running_to_finished_s"]
            return float(timing.quantum_seconds), info
        if source != "pending" or time.monotonic() >= deadline:
            waited = "" if source != "pending" else f" after waiting {USAGE_WAIT_S:g} s"
            raise RuntimeError(
                f"backend {backend_name}: job {handle.job_id} reported no QPU usage{waited} ({source}); a device "
                "calibration fits on the usage IBM reports, so re-run `qnas-hw calibrate --backend "
                f"{backend_name}` once the job's usage shows in its metrics"
            )
        log.info("job %s: usage still pending, asking again in %g s", handle.job_id, USAGE_POLL_S)
        time.sleep(USAGE_POLL_S)


def _run_point(
    backend: Backend, rec: TranspileRecord, p: DesignPoint, rng: np.random.Generator, repeats: int
) -> tuple[float, dict[str, Any]]:
    """Seconds by the backend's own clock (QPU usage where reported, else wall), min over repeats, and job info."""
    circ = rec.circuit
    times: list[tuple[float, dict[str, Any]]] = []
    for r in range(repeats):
        values = rng.uniform(0, 2 * np.pi, size=(p.rows, circ.num_parameters))
        pubs = [SamplerPub(circ, values) for _ in range(p.pubs)]
        handle = backend.submit(pubs, shots=p.shots, seed=int(rng.integers(2**31)))
        counts = handle.counts()
        if sum(counts[0][0].values()) != p.shots:
            raise RuntimeError(f"calibration job returned {sum(counts[0][0].values())} shots, expected {p.shots}")
        if backend.timing_source == "device" and not backend.is_simulator:
            seconds, info = _reported_usage(handle, backend.name)
        else:
            wall = handle.timing().wall_seconds
            if wall is None:
                raise RuntimeError(f"backend {backend.name} reported no wall time for job {handle.job_id}")
            seconds, info = float(wall), {}
        times.append((seconds, info))
        log.debug("point %s repeat %d: %.4f s", p, r, seconds)
    return min(times, key=lambda t: t[0])


def _versions() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def run_calibration(
    backend_name: str,
    out_path: Path | None = None,
    seed: int = 0,
    quick: bool = False,
    repeats: int | None = None,
) -> CalibrationReport:
    """Run the design on ``backend_name``, fit, write the calibration JSON and return the report.

    Local simulators (and local runs of device snapshots) are fitted on
    wall-clock; real QPUs (``ibm:<device>``) on provider-reported QPU seconds,
    which then replace the device prior.  Snapshot backends keep their device
    model (the QPU's time cannot be measured offline) and gain the local
    wall-clock fit used for job timeouts and local evaluation budgets.
    """
    backend = get_backend(backend_name)
    target_path = out_path or calibration_path(backend.name)
    # one writer per calibration file (a second `calibrate` would overwrite the first one's fit)
    with WriterLock(target_path, f"qnas-hw calibrate --backend {backend.name}"):
        return _calibrate(backend, target_path, seed, quick, repeats)


def _calibrate(backend: Any, target_path: Path, seed: int, quick: bool, repeats: int | None) -> CalibrationReport:
    transpiler = Transpiler(backend, optimization_level=1, seed=seed)
    rng = np.random.default_rng(seed)
    real_qpu = not backend.is_simulator
    ideal = backend.name in IDEAL_SIMULATORS
    # local jobs jitter on a shared CPU (ms-scale for ideal simulators, ~0.1 s for noisy Aer): the minimum of
    # 4 repeats halved the held-out error against 2 (aer_noisy MAPE 26.5% -> 18.7%); a QPU job is paid once
    reps = repeats if repeats is not None else (1 if quick or real_qpu else 4)
    # noisy simulation of >9 active qubits switches Aer/Braket to density matrices (minutes per job), so
    # noisy backends are calibrated up to 8 logical qubits; predictions beyond that are extrapolation
    max_width = min(10 if ideal else 8, backend.num_qubits)
    points = design(seed, quick or real_qpu, max_width)

    _run_point(backend, transpiler.transpile(WARM_UP.arch()), WARM_UP, rng, 1)

    measured: list[tuple[DesignPoint, Workload, float, TranspileRecord]] = []
    jobs: list[dict[str, Any]] = []
    for p in points:
        rec = transpiler.transpile(p.arch())
        seconds, info = _run_point(backend, rec, p, rng, reps)
        measured.append((p, _workload(backend, rec, p), seconds, rec))
        jobs.append(info)
        log.info("calibration %s: %s -> %.4f s", backend.name, p, seconds)

    if real_qpu:
        model, fit, preds = _fit_device(backend, measured)
    else:
        model, fit, preds = _fit_wall(backend, measured)
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    provenance = {
        "fit_of": "device_model" if real_qpu else "wall_model",
        "backend": backend.name,
        "created": created,
        "seed": seed,
        "quick": quick,
        "repeats_min_of": reps,
        "versions": _versions(),
        "python": platform.python_version(),
        "host": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "note": "shared CPU; wall-clock timings are noisy",
        },
        "design": [p.__dict__ for p in points],
        "points": [
            {
                **p.__dict__,
                "measured_s": s,
                "predicted_s": float(pr),
                "n_gates": w.n_gates,
                "width": w.width,
                "duration_s": w.duration_s,
                "rep_delay_s": w.rep_delay_s,
                "init_s": w.init_s,
                "executions": w.shots_total,
                **({"job": info} if info else {}),
            }
            for (p, w, s, _), pr, info in zip(measured, preds, jobs, strict=True)
        ],
    }
    model = replace(model, fit=fit, created=created, provenance={**model.provenance, "calibration": provenance})
    path = model.save(target_path)
    ms = [Measurement(p, s, float(pr), w, rec.summary()) for (p, w, s, rec), pr in zip(measured, preds, strict=True)]
    return CalibrationReport(backend.name, path, fit, model.timing_source, ms, model)


def _split(measured: list[tuple[DesignPoint, Workload, float, Any]], feats: np.ndarray, y: np.ndarray):
    train = np.array([not m[0].heldout for m in measured])
    return train, ~train


def _quality(y: np.ndarray, pred: np.ndarray, train: np.ndarray, held: np.ndarray) -> FitQuality:
    return FitQuality(
        r2_train=r2_score(y[train], pred[train]),
        r2_heldout=r2_score(y[held], pred[held]),
        mape_heldout=mape(y[held], pred[held]),
        n_train=int(train.sum()),
        n_heldout=int(held.sum()),
    )


def _fit_wall(backend: Backend, measured: list) -> tuple[CostModel, FitQuality, np.ndarray]:
    X = np.stack([w.wall_features() for _, w, _, _ in measured])
    y = np.array([s for _, _, s, _ in measured])
    train, held = _split(measured, X, y)
    coef = fit_nnls(X[train], y[train])
    pred = X @ coef
    wall = dict(zip(WALL_FEATURES, map(float, coef), strict=True))
    base = (
        CostModel.device_prior(backend)
        if backend.timing_source == "device"
        else CostModel(backend=backend.name, timing_source="wall")
    )
    model = CostModel(
        backend=backend.name,
        timing_source=base.timing_source,
        device=base.device,
        wall=wall,
        rep_delay_s=backend.rep_delay_s,
        provenance={
            **base.provenance,
            "wall_model": {"fitted": True, "source": "NNLS on local wall-clock timings of this backend's submit()"},
        },
    )
    return model, _quality(y, pred, train, held), pred


def _fit_device(backend: Backend, measured: list) -> tuple[CostModel, FitQuality, np.ndarray]:
    """NNLS of reported QPU seconds on IBM's usage terms: per job, per circuit, executions x (length + delay + init).

    The same features :meth:`CostModel.predict_device` multiplies, so IBM's
    documented formula is the special case (2 s, 0, 1) and a fit says how the
    device departs from it.
    """
    X = np.stack([w.device_features(backend.rep_delay_s) for _, w, _, _ in measured])
    y = np.array([s for _, _, s, _ in measured])
    train, held = _split(measured, X, y)
    coef = fit_nnls(X[train], y[train])
    pred = X @ coef
    model = CostModel(
        backend=backend.name,
        timing_source="device",
        device=dict(zip(DEVICE_COEFFS, map(float, coef), strict=True)),
        rep_delay_s=backend.rep_delay_s,
        provenance={
            "device_model": {
                "fitted": True,
                "source": "NNLS on the QPU usage seconds IBM reported for the calibration jobs (RuntimeJobV2.metrics()"
                "['usage'], the figure job.usage() returns), on the features jobs, circuits and executions x "
                "(scheduled duration + rep_delay + reset/init duration)",
            }
        },
    )
    return model, _quality(y, pred, train, held), pred


def summary_lines(report: CalibrationReport) -> list[str]:
    """Human-readable fit report (the CLI prints these)."""
    f = report.fit
    lines = [
        f"backend {report.backend}: wrote {report.path}",
        f"fit ({'QPU seconds' if report.timing_source == 'device' and report.model.wall is None else 'wall-clock'}): "
        f"R^2 train {f.r2_train:.3f}, R^2 held-out {f.r2_heldout:.3f}, MAPE held-out {100 * f.mape_heldout:.1f}% "
        f"({f.n_train} train / {f.n_heldout} held-out circuits)",
        "held-out  width layers shots circuits  measured_s  predicted_s",
    ]
    for row in report.table():
        lines.append(
            f"{'  *' if row['heldout'] else '   '}       {row['width']:>5} {row['layers']:>6} {row['shots']:>5} "
            f"{row['circuits']:>8}  {row['measured_s']:>10.4f}  {row['predicted_s']:>11.4f}"
        )
    lines.append(f"median measured {statistics.median(m.seconds for m in report.measurements):.4f} s")
    return lines
