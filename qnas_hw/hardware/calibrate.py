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

from qnas_hw.atomic_write import nearest_existing
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
    train, _ = _split(measured, X, y)
    return _wall_fit(backend, X, y, train, "NNLS on local wall-clock timings of this backend's submit()")


def _wall_fit(
    backend: Backend, X: np.ndarray, y: np.ndarray, train: np.ndarray, source: str
) -> tuple[CostModel, FitQuality, np.ndarray]:
    """The wall-clock model fitted on the ``train`` rows of ``X``/``y``; judged on the others.

    One function for a measured design and for a refit on a study's jobs, so
    both write the same model (the device prior of a snapshot kept beside it).
    """
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
        provenance={**base.provenance, "wall_model": {"fitted": True, "source": source}},
    )
    return model, _quality(y, pred, train, ~train), pred


def _fit_device(backend: Backend, measured: list) -> tuple[CostModel, FitQuality, np.ndarray]:
    """NNLS of reported QPU seconds on IBM's usage terms: per job, per circuit, executions x (length + delay + init).

    The same features :meth:`CostModel.predict_device` multiplies, so IBM's
    documented formula is the special case (2 s, 0, 1) and a fit says how the
    device departs from it.
    """
    X = np.stack([w.device_features(backend.rep_delay_s) for _, w, _, _ in measured])
    y = np.array([s for _, _, s, _ in measured])
    train, _ = _split(measured, X, y)
    source = (
        "NNLS on the QPU usage seconds IBM reported for the calibration jobs (RuntimeJobV2.metrics()['usage'], the "
        f"figure job.usage() returns), {DEVICE_FEATURES_TEXT}"
    )
    return _device_fit(backend.name, backend.rep_delay_s, X, y, train, source)


#: What the device coefficients multiply, said in every device fit's provenance.
DEVICE_FEATURES_TEXT = (
    "on the features jobs, circuits and executions x (scheduled duration + rep_delay + reset/init duration)"
)


def _device_fit(
    backend_name: str, rep_delay_s: float, X: np.ndarray, y: np.ndarray, train: np.ndarray, source: str
) -> tuple[CostModel, FitQuality, np.ndarray]:
    """The device model fitted on the ``train`` rows of ``X``/``y`` (device features); judged on the others.

    Takes the backend's name and rep delay rather than the backend, so a refit
    of a cloud QPU from a study's ledger needs no connection to the provider.
    """
    coef = fit_nnls(X[train], y[train])
    pred = X @ coef
    model = CostModel(
        backend=backend_name,
        timing_source="device",
        device=dict(zip(DEVICE_COEFFS, map(float, coef), strict=True)),
        rep_delay_s=rep_delay_s,
        provenance={"device_model": {"fitted": True, "source": source}},
    )
    return model, _quality(y, pred, train, ~train), pred


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


def _old_and_new(prev: PreviousFit | None, fit: FitQuality, replaced: str) -> str:
    """The previous fit beside the new one (``replaced``: the verb for a replaced file, past or future), so a
    replaced or overridden file's quality is never lost silently; what to do about it is the caller's sentence."""
    if prev is None:
        return "previous fit: none (no file replaced or overridden)"
    verb = replaced if prev.replaces else "overrides the shipped"
    return f"{verb} {prev.path}: old {fit_figures(prev.fit)}; new {fit_figures(fit)}"


def _previous_line(report: CalibrationReport) -> str:
    """Old vs new fit of a measured design; an overriding fit that is worse says how to go back."""
    prev = report.previous
    line = _old_and_new(prev, report.fit, "replaced")
    if prev is not None and not prev.replaces and is_worse(report.fit, prev.fit):
        line += f". The new fit is worse: delete {report.path} to use the shipped one again"
    return line


# ------------------------------------------------------------ refit on a study's own jobs
#: What a job's reported seconds are: provider QPU usage (IBM), billed execution time (Braket), our wall clock.
REPORTED_UNITS = {
    "qpu": "QPU seconds the provider reported (IBM usage)",
    "billed": "billed execution seconds the provider reported (Braket)",
    "wall": "local wall-clock seconds, submission to result (a local simulation, not QPU time)",
}
#: Fraction of a refit's jobs held out to judge it (as in the measured design).
HELDOUT_FRACTION = 0.3


@dataclass(frozen=True)
class MeasuredJob:
    """One finished job as a refit reads it: what it ran (one workload per PUB, as priced) and what was reported.

    Plain data, filled from a ledger row by :mod:`qnas_hw.jobs.usage`; the fit
    knows nothing of ledgers or studies.  ``unit`` is one of
    :data:`REPORTED_UNITS`; ``predicted_s`` is what the cost model of the day
    predicted in that unit, where it had one.
    """

    key: str
    backend: str
    workloads: tuple[Workload, ...]
    seconds: float
    unit: str
    finished_at: str
    study: str = ""
    batch: str = ""
    provider_job_id: str | None = None
    predicted_s: float | None = None

    def device_features(self) -> np.ndarray:
        """The job's device features: its PUBs' summed (one job, every PUB's circuits and executions)."""
        return np.sum([w.device_features() for w in self.workloads], axis=0)

    def wall_features(self) -> np.ndarray:
        return np.sum([w.wall_features() for w in self.workloads], axis=0)


class RefitError(CostModelError):
    """The studies' jobs cannot be refitted as asked (none, too few, another backend): nothing was written."""


def refit_kind(backend: Backend) -> tuple[str, tuple[str, ...]]:
    """Which model a refit of ``backend`` fits, and which reported units it fits on: ``calibrate``'s own choice.

    A cloud QPU's device model is fitted on provider-reported seconds; a local
    simulator's (or a snapshot's) wall model on the local wall clock.
    """
    if backend.is_simulator:
        return "wall_model", ("wall",)
    return "device_model", ("qpu", "billed")


def min_jobs(fit_of: str) -> int:
    """Jobs a refit needs: twice the coefficients plus two, so both the fit and the held-out check have rows."""
    coefficients = len(DEVICE_COEFFS) if fit_of == "device_model" else len(WALL_FEATURES)
    return 2 * coefficients + 2


def refit_split(X: np.ndarray, seed: int) -> np.ndarray:
    """Training mask: about 70% of the jobs, always with each feature's smallest and largest job.

    Held-out jobs then lie inside the range the fit saw, as the measured
    design's held-out points do (they are drawn from the same ranges), so the
    held-out error measures interpolation to unseen jobs, not extrapolation
    from a training set that happened to miss the one long job.
    """
    n = len(X)
    extremes = {int(i) for k in range(X.shape[1]) if np.ptp(X[:, k]) > 0 for i in (X[:, k].argmin(), X[:, k].argmax())}
    rest = [int(i) for i in np.random.default_rng(seed).permutation(n) if int(i) not in extremes]
    n_held = min(max(2, round(HELDOUT_FRACTION * n)), len(rest))
    if n_held < 2:  # nearly every job is an extreme of some feature: hold out at random instead
        rest = [int(i) for i in np.random.default_rng(seed).permutation(n)]
        n_held = max(2, round(HELDOUT_FRACTION * n))
    train = np.ones(n, dtype=bool)
    train[rest[:n_held]] = False
    return train


@dataclass(frozen=True)
class RefitReport:
    """A refit on studies' jobs: the model, its held-out quality, the file it replaces, and whether it was written."""

    backend: str
    path: Path
    fit: FitQuality
    model: CostModel
    jobs: list[MeasuredJob]
    predicted: list[float]
    heldout: list[bool]
    previous: PreviousFit | None
    written: bool
    would_refuse: bool = False

    @property
    def fit_of(self) -> str:
        return str(self.model.provenance["calibration"]["fit_of"])


def check_refit_jobs(backend_name: str, fit_of: str, units: tuple[str, ...], jobs: list[MeasuredJob]) -> None:
    """Refuse rows of another backend or unit, and too few rows, before anything is fitted or written."""
    foreign = sorted({j.backend for j in jobs if j.backend != backend_name})
    if foreign:
        n = sum(j.backend != backend_name for j in jobs)
        raise RefitError(
            f"{plural(n, 'job')} of the rows to refit {backend_name} ran on {', '.join(foreign)}; a cost model is "
            f"fitted on its own backend's jobs only: pass --backend {foreign[0]} to refit that one"
        )
    wrong = sorted({j.unit for j in jobs if j.unit not in units})
    if wrong:
        wanted = " or ".join(REPORTED_UNITS[u] for u in units)
        raise RefitError(
            f"the {fit_of.replace('_', ' ')} of {backend_name} is fitted on {wanted}, but some rows report "
            f"{', '.join(wrong)}: they cannot be fitted together"
        )
    needed = min_jobs(fit_of)
    if len(jobs) < needed:
        n_coef = len(DEVICE_COEFFS) if fit_of == "device_model" else len(WALL_FEATURES)
        raise RefitError(
            f"{plural(len(jobs), 'finished job')} on {backend_name} can be refitted; a refit of the "
            f"{fit_of.replace('_', ' ')} ({n_coef} coefficients) needs at least {needed}: run more jobs (a longer "
            f"search, hw-eval) or measure a design with `qnas-hw calibrate --backend {backend_name}`"
        )


def refit_from_jobs(
    backend: Backend,
    jobs: list[MeasuredJob],
    target_path: Path,
    *,
    studies: list[str],
    seed: int = 0,
    force: bool = False,
    dry_run: bool = False,
) -> RefitReport:
    """Fit the model ``calibrate`` fits for ``backend`` on jobs already run (no new job); write it unless ``dry_run``.

    The same NNLS, features and held-out judgement as a measured calibration
    (:class:`FitQuality`), the same refusal of a fit worse than the file it
    replaces (unless ``force``; the new fit kept as ``<file>.rejected``), and
    the studies, job count and date range in the file's provenance.  A dry run
    fits and reports but writes nothing, not even the ``.rejected`` file.
    """
    fit_of, units = refit_kind(backend)
    check_refit_jobs(backend.name, fit_of, units, jobs)
    if not dry_run:
        check_writable(target_path)
    jobs = sorted(jobs, key=lambda j: (j.key, j.study))  # by content, not finishing order: a reproducible split
    previous = previous_fit(target_path, backend.name, force)
    if fit_of == "device_model":
        X = np.stack([j.device_features() for j in jobs])
    else:
        X = np.stack([j.wall_features() for j in jobs])
    y = np.array([j.seconds for j in jobs])
    train = refit_split(X, seed)
    source = (
        f"NNLS on the {REPORTED_UNITS[jobs[0].unit]} of {plural(len(jobs), 'job')} already run by the studies "
        f"{', '.join(studies)} (qnas-hw calibrate --from-study), "
        + (DEVICE_FEATURES_TEXT if fit_of == "device_model" else "on the wall features of each job's PUBs")
    )
    if fit_of == "device_model":
        model, fit, pred = _device_fit(backend.name, _rep_delay(jobs), X, y, train, source)
    else:
        model, fit, pred = _wall_fit(backend, X, y, train, source)
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    provenance = _refit_provenance(backend.name, fit_of, created, seed, studies, jobs, pred, train)
    model = replace(model, fit=fit, created=created, provenance={**model.provenance, "calibration": provenance})
    report = RefitReport(
        backend=backend.name,
        path=target_path,
        fit=fit,
        model=model,
        jobs=jobs,
        predicted=[float(p) for p in pred],
        heldout=[bool(not t) for t in train],
        previous=previous,
        written=False,
    )
    if dry_run:
        worse = previous is not None and previous.replaces and not force and is_worse(fit, previous.fit)
        return replace(report, would_refuse=worse)
    with WriterLock(target_path, f"qnas-hw calibrate --backend {backend.name} --from-study"):
        _refuse_if_worse(model, fit, previous, force)
        model.save(target_path)
    return replace(report, written=True)


def check_writable(path: Path) -> None:
    """Refuse, before fitting, a calibration file that cannot be written (a read-only place, a mistyped --out)."""
    place = nearest_existing(path.parent)
    if not os.access(place, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise RefitError(
            f"cannot write the calibration file {path}: {place} is read-only. Nothing was written; pass --out with "
            "a file in a writable directory (or --dry-run to see the fit)"
        )


def _rep_delay(jobs: list[MeasuredJob]) -> float:
    """The rep delay the jobs ran with (recorded per PUB at submission), so a cloud QPU need not be asked."""
    delays = [w.rep_delay_s for j in jobs for w in j.workloads if w.rep_delay_s]
    return float(statistics.median(delays)) if delays else 0.0


def _refit_provenance(
    backend_name: str,
    fit_of: str,
    created: str,
    seed: int,
    studies: list[str],
    jobs: list[MeasuredJob],
    pred: np.ndarray,
    train: np.ndarray,
) -> dict[str, Any]:
    """Where a refit's numbers come from: the studies (jobs and dates of each), every job, the package versions."""
    per_study = []
    for study in studies:
        mine = [j for j in jobs if j.study == study]
        per_study.append(
            {
                "study": study,
                "jobs": len(mine),
                "first": min((j.finished_at for j in mine), default=None),
                "last": max((j.finished_at for j in mine), default=None),
                "batches": sorted({j.batch for j in mine}),
            }
        )
    return {
        "fit_of": fit_of,
        "backend": backend_name,
        "created": created,
        "source": "studies",
        "from_studies": per_study,
        "jobs": len(jobs),
        "date_range": [min(j.finished_at for j in jobs), max(j.finished_at for j in jobs)],
        "reported_unit": jobs[0].unit,
        "heldout_split": {"seed": seed, "fraction": HELDOUT_FRACTION, "extremes_in_training": True},
        "versions": _versions(),
        "python": platform.python_version(),
        "points": [
            {
                "key": j.key,
                "provider_job_id": j.provider_job_id,
                "study": j.study,
                "batch": j.batch,
                "finished_at": j.finished_at,
                "heldout": bool(not t),
                "measured_s": j.seconds,
                "predicted_s": float(p),
                "predicted_at_submission_s": j.predicted_s,
                "workloads": [w.to_dict() for w in j.workloads],
            }
            for j, p, t in zip(jobs, pred, train, strict=True)
        ],
    }


def refit_summary_lines(report: RefitReport) -> list[str]:
    """What a refit fitted, how well, against the file it replaces, and what was (not) written."""
    prov = report.model.provenance["calibration"]
    studies = "; ".join(
        f"{s['study']}: {plural(s['jobs'], 'job')} ({s['first']} .. {s['last']})" for s in prov["from_studies"]
    )
    unit = REPORTED_UNITS[prov["reported_unit"]]
    coef = report.model.device if report.fit_of == "device_model" else report.model.wall
    lines = [
        f"backend {report.backend}: refit of the {report.fit_of.replace('_', ' ')} on {plural(prov['jobs'], 'job')} "
        f"already run ({unit})",
        f"from {studies}",
        f"fit: {fit_figures(report.fit)}",
        "coefficients: " + ", ".join(f"{k} {v:.6g}" for k, v in (coef or {}).items()),
        _refit_previous_line(report),
    ]
    if report.written:
        lines.append(f"wrote {report.path}")
    elif report.would_refuse:
        lines.append(f"dry run: nothing written; {report.path} would be kept (the new fit is worse; --force replaces)")
    else:
        lines.append(f"dry run: nothing written; would write {report.path}")
    return lines


def _refit_previous_line(report: RefitReport) -> str:
    """Old vs new fit of a refit (shown before anything is written, so in the future tense)."""
    prev = report.previous
    line = _old_and_new(prev, report.fit, "replaces")
    if prev is not None and is_worse(report.fit, prev.fit):
        line += " (the new fit is worse)"
    return line
