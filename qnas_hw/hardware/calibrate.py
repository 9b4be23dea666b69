"""``qnas-hw calibrate``: measure a backend, fit the cost model, write ``<backend>.json`` (user calibration dir).

A designed set of HQNN circuits varies width, depth, shots and the number of
circuit executions per job; each is run through the backend's own
``submit`` and timed by the backend's own clock: for real IBM devices the
usage IBM reports for the job (``RuntimeJobV2.metrics()["usage"]``, the figure
``job.usage()`` returns, waited for until it is final), for local simulators
the submission-to-result wall clock.  Coefficients are fitted by non-negative least squares on a
training split and judged on *held-out* circuits (R^2, MAPE), so a good
score means the model generalises to circuits it has not seen.

The file goes to the user calibration directory (``$QNAS_CALIBRATION_DIR``,
else ``$XDG_DATA_HOME/qnas-hw/calibration``), where it overrides the shipped
file of the same name; the shipped data is never edited.  A fit with a worse
held-out error than the file it would replace is refused (``force`` replaces
it anyway) and saved beside it as ``<backend>.json.rejected``, so minutes of
measurement (or paid QPU jobs) are not thrown away.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from qnas_hw.hardware.backends import get_backend
from qnas_hw.hardware.backends.base import Backend, JobHandle, SamplerPub, calibration_dir, user_calibration_dir
from qnas_hw.hardware.cost import (
    DEVICE_COEFFS,
    WALL_FEATURES,
    CostModel,
    CostModelError,
    FitQuality,
    Workload,
    calibration_file_name,
    calibration_path,
    fit_nnls,
    init_duration_s,
    mape,
    r2_score,
)
from qnas_hw.hardware.transpilation import Transpiler, TranspileRecord
from qnas_hw.locking import WriterLock
from qnas_hw.model.space import Architecture
from qnas_hw.text import plural

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
class CalibrationStep:
    """Progress: ``done`` of ``total`` jobs measured (the warm-up job is the first), the last one's label and time."""

    done: int
    total: int
    label: str
    seconds: float


#: Called after every measured job (the CLI draws a progress bar or prints a line from it).
StepCallback = Callable[[CalibrationStep], None]


@dataclass(frozen=True)
class PreviousFit:
    """The file a calibration replaces (``replaces``: same path) or overrides by name (a shipped file)."""

    path: Path
    fit: FitQuality | None
    replaces: bool


class CalibrationRefused(CostModelError):
    """The new fit is worse than the file it would replace: that file is kept (``force`` replaces it)."""


@dataclass(frozen=True)
class CalibrationReport:
    backend: str
    path: Path
    fit: FitQuality
    timing_source: str
    measurements: list[Measurement]
    model: CostModel
    previous: PreviousFit | None = None

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
    *,
    force: bool = False,
    on_step: StepCallback | None = None,
) -> CalibrationReport:
    """Run the design on ``backend_name``, fit, write the calibration JSON and return the report.

    Local simulators (and local runs of device snapshots) are fitted on
    wall-clock; real QPUs (``ibm:<device>``) on provider-reported QPU seconds,
    which then replace the device prior.  Snapshot backends keep their device
    model (the QPU's time cannot be measured offline) and gain the local
    wall-clock fit used for job timeouts and local evaluation budgets.

    ``out_path`` defaults to the user calibration directory.  An existing file
    there with a better held-out MAPE is kept unless ``force`` (raises
    :class:`CalibrationRefused`, naming both fits); ``on_step`` hears of every
    measured job.
    """
    backend = get_backend(backend_name)
    target_path = out_path or calibration_path(backend.name)
    # one writer per calibration file (a second `calibrate` would overwrite the first one's fit)
    with WriterLock(target_path, f"qnas-hw calibrate --backend {backend.name}"):
        return _calibrate(backend, target_path, seed, quick, repeats, force=force, on_step=on_step)


def previous_fit(target_path: Path, backend_name: str, force: bool = False) -> PreviousFit | None:
    """The fit a new file at ``target_path`` would replace, or the shipped one it would override by name.

    Checked before measuring: a file of another backend at the target (a
    mistyped ``--out``) is refused now, not after minutes of jobs.  An
    unreadable file has no fit to defend and is replaced.
    """
    if target_path.is_file():
        try:
            old = CostModel.load(target_path, max_age_days=None)
        except CostModelError as exc:
            log.warning("replacing unreadable calibration file %s: %s", target_path, exc)
            return PreviousFit(target_path, None, replaces=True)
        if old.backend != backend_name and not force:
            raise CalibrationRefused(
                f"{target_path} holds the calibration of backend {old.backend!r}, not {backend_name!r}; choose "
                f"another --out (default {calibration_path(backend_name)}) or pass --force to overwrite it"
            )
        return PreviousFit(target_path, old.fit, replaces=True)
    if target_path.parent.resolve() != user_calibration_dir().resolve():
        return None  # a file elsewhere overrides nothing the lookups see
    shipped = calibration_dir() / calibration_file_name(backend_name)
    if not shipped.is_file():
        return None
    try:
        return PreviousFit(shipped, CostModel.load(shipped, max_age_days=None).fit, replaces=False)
    except CostModelError:
        return None


def is_worse(new: FitQuality, old: FitQuality | None) -> bool:
    """Whether ``new`` generalises worse than ``old``: a higher held-out MAPE (the figure the README reports).

    MAPE, not R^2, decides: the search compares small and large candidates
    alike, so relative error is what matters; an old fit with no finite MAPE
    has nothing to defend.
    """
    if old is None or not math.isfinite(old.mape_heldout):
        return False
    return not math.isfinite(new.mape_heldout) or new.mape_heldout > old.mape_heldout


def fit_figures(fit: FitQuality | None) -> str:
    """``held-out MAPE 11.6%, held-out R^2 0.987 (train R^2 0.991; 34 train / 14 held-out)``, or why there is none."""
    if fit is None:
        return "no fit figures (a prior or an unreadable file)"
    return (
        f"held-out MAPE {100 * fit.mape_heldout:.1f}%, held-out R^2 {fit.r2_heldout:.3f} (train R^2 "
        f"{fit.r2_train:.3f}; {fit.n_train} train / {fit.n_heldout} held-out)"
    )


def _refuse_if_worse(model: CostModel, fit: FitQuality, previous: PreviousFit | None, force: bool) -> None:
    """Keep a better existing file: save the new fit as ``<file>.rejected`` and raise :class:`CalibrationRefused`."""
    if previous is None or not previous.replaces or force or not is_worse(fit, previous.fit):
        return
    rejected = model.save(previous.path.with_name(previous.path.name + ".rejected"))
    raise CalibrationRefused(
        f"kept {previous.path}: the new fit is worse. Existing: {fit_figures(previous.fit)}. New: "
        f"{fit_figures(fit)}. The new fit is saved in {rejected}; re-run with --force to replace the file "
        "with a new measurement (timings on a busy machine are noisy)"
    )


def _calibrate(
    backend: Any,
    target_path: Path,
    seed: int,
    quick: bool,
    repeats: int | None,
    *,
    force: bool = False,
    on_step: StepCallback | None = None,
) -> CalibrationReport:
    previous = previous_fit(target_path, backend.name, force)
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
    step = on_step or (lambda _: None)
    total = len(points) + 1

    warm, _ = _run_point(backend, transpiler.transpile(WARM_UP.arch()), WARM_UP, rng, 1)
    log.info("calibration %s: warm-up job 1/%d -> %.4f s (not fitted)", backend.name, total, warm)
    step(CalibrationStep(1, total, "warm-up", warm))

    measured: list[tuple[DesignPoint, Workload, float, TranspileRecord]] = []
    jobs: list[dict[str, Any]] = []
    for i, p in enumerate(points, start=2):
        rec = transpiler.transpile(p.arch())
        seconds, info = _run_point(backend, rec, p, rng, reps)
        measured.append((p, _workload(backend, rec, p), seconds, rec))
        jobs.append(info)
        log.info("calibration %s: job %d/%d %s -> %.4f s", backend.name, i, total, p, seconds)
        step(CalibrationStep(i, total, _label(p), seconds))

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
    _refuse_if_worse(model, fit, previous, force)
    path = model.save(target_path)
    ms = [Measurement(p, s, float(pr), w, rec.summary()) for (p, w, s, rec), pr in zip(measured, preds, strict=True)]
    return CalibrationReport(backend.name, path, fit, model.timing_source, ms, model, previous)


def _label(p: DesignPoint) -> str:
    return (
        f"{plural(p.width, 'qubit')} x {plural(p.layers, 'layer')}, {plural(p.shots, 'shot')}, "
        f"{plural(p.rows * p.pubs, 'circuit')}"
    )


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
        _previous_line(report),
        "held-out  width layers shots circuits  measured_s  predicted_s",
    ]
    for row in report.table():
        lines.append(
            f"{'  *' if row['heldout'] else '   '}       {row['width']:>5} {row['layers']:>6} {row['shots']:>5} "
            f"{row['circuits']:>8}  {row['measured_s']:>10.4f}  {row['predicted_s']:>11.4f}"
        )
    lines.append(f"median measured {statistics.median(m.seconds for m in report.measurements):.4f} s")
    return lines


def _previous_line(report: CalibrationReport) -> str:
    """Old vs new fit, so a replaced or overridden file's quality is never lost silently."""
    prev = report.previous
    if prev is None:
        return "previous fit: none (no file replaced or overridden)"
    verb = "replaced" if prev.replaces else "overrides the shipped"
    line = f"{verb} {prev.path}: old {fit_figures(prev.fit)}; new {fit_figures(report.fit)}"
    if not prev.replaces and is_worse(report.fit, prev.fit):
        line += f". The new fit is worse: delete {report.path} to use the shipped one again"
    return line
