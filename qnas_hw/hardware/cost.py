"""Calibrated runtime (and money) cost of running a candidate on a backend.

Two models, never mixed up:

* **device** model, for anything that stands for a real QPU (IBM snapshots,
  Braket device snapshots, real devices): what the *QPU* would spend,

      seconds = jobs * per_job_s + circuits * per_circuit_s
                + total_shots * (scheduled_duration + rep_delay + init) * duration_scale

  with the scheduled duration from the device's own instruction durations, its
  repetition delay and, on IBM devices, the qubit-initialisation (``reset``)
  time IBM adds to every execution.  For IBM this is IBM's own documented
  usage estimate (see :data:`IBM_PRIOR`); ``qnas-hw calibrate --backend
  ibm:<device>`` refits the three coefficients on the jobs' reported usage.
  Without such a fit the coefficients are documented priors (see
  ``calibration/README.md``), flagged ``fitted: false``.  Simulating a
  snapshot locally says nothing about the QPU's time, so local wall-clock is
  never used here.
* **wall** model, for local simulators: wall-clock seconds, fitted by
  non-negative least squares on measured runs (``qnas-hw calibrate``):

      seconds = sum_k coef_k * feature_k(workload)

  over :data:`WALL_FEATURES` (per job, per circuit, per shot, per gate, the
  state-vector / density-matrix work terms gates * 2^w and gates * 4^w, and
  gates per PUB: simulators prepare each PUB's circuit once, whatever its number
  of parameter rows, and without that term two-PUB jobs were under-predicted 2x).

Circuit cutting multiplies the work: ``n_subexperiments`` circuits per
original circuit and ``sampling_overhead`` times the shots for the same
precision.  Dollars: Braket's per-task + per-shot prices from the snapshot.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from scipy.optimize import nnls

from qnas_hw.atomic_write import atomic_write_text
from qnas_hw.hardware.backends.base import Backend, SamplerPub, find_calibration_file, user_calibration_dir
from qnas_hw.hardware.transpilation import active_qubits, gate_counts

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_MAX_AGE_DAYS = 180
WALL_FEATURES: tuple[str, ...] = (
    "jobs",
    "circuits",
    "shots",
    "gates",
    "shot_gates",
    "sv_work",
    "dm_work",
    "pub_gates",
)
#: Added after the first shipped fits; a file without it predates the term and loads with 0.
OPTIONAL_WALL_FEATURES: frozenset[str] = frozenset({"pub_gates"})
DEVICE_COEFFS: tuple[str, ...] = ("per_job_s", "per_circuit_s", "duration_scale")

#: Where IBM documents its usage formula, as read for :data:`IBM_PRIOR`.
IBM_USAGE_GUIDE = (
    "IBM Quantum Platform guide 'Workload usage', section 'Estimate usage before submitting a job', "
    "https://quantum.cloud.ibm.com/docs/en/guides/estimate-job-run-time (source: Qiskit/documentation "
    "docs/guides/estimate-job-run-time.ipynb at commit 033a72ba4c6e84570958ac66e94976af91cb3b04, read 2026-11-30)"
)
#: Prior device coefficients for IBM QPUs when no real usage has been fitted: IBM's documented estimate
#: ``<per sub-job overhead, about 2 s> + (rep_delay + <circuit length>) * <num executions>``, executions = circuits
#: after PUB broadcasting x shots, plus the ``reset`` (init) duration per execution that IBM's code example adds when
#: ``init_qubits`` is on (the default).  IBM's formula has no per-circuit term, so none is assumed here.
IBM_PRIOR = {
    "per_job_s": 2.0,
    "per_circuit_s": 0.0,
    "duration_scale": 1.0,
    "source": "prior, not fitted: IBM's documented usage estimate, "
    "usage = <per sub-job overhead, about 2 s> + (rep_delay + <circuit length>) x <num executions>, with "
    "<num executions> = circuits after PUB broadcasting x shots, rep_delay = backend.default_rep_delay and the "
    "target's reset (init) duration added per execution as in IBM's code example (init_qubits on, the default); no "
    f"per-circuit term. {IBM_USAGE_GUIDE}. One job is counted as one sub-job: IBM does not document when it splits "
    "a job into several. Fit the device's own values with `qnas-hw calibrate --backend ibm:<device>`.",
}
BRAKET_PRIOR = {
    "per_job_s": 0.0,
    "per_circuit_s": 0.0,
    "duration_scale": 1.0,
    "source": "prior, not fitted, and no external document behind it: Braket reports no QPU seconds, so device "
    "time is modelled as shots x (scheduled duration + shot overhead), both from the device snapshot "
    "(calibration/devices/<device>.json, retrieved 2026-11-25, see calibration/README.md), with zero per-task and "
    "per-circuit overheads. Braket bills per task and per shot: the dollar figure uses the snapshot's prices, "
    "which were recalled and not re-verified on 2026-11-25.",
}


class CostModelError(ValueError):
    """A calibration file that cannot be trusted (corrupt, wrong backend, wrong schema, stale)."""


@dataclass(frozen=True)
class Workload:
    """What one evaluation (or one batch of jobs) executes.

    ``circuits`` counts circuit executions (parameter rows); ``total_shots``
    defaults to circuits * shots and differs when cutting redistributes shots.
    ``tasks`` counts provider tasks (Braket: one program set per PUB).
    ``init_s`` is the per-shot qubit initialisation IBM adds to every execution
    (:func:`init_duration_s`; 0 where the provider documents none).
    """

    jobs: int
    circuits: int
    shots: int
    n_gates: int
    width: int
    duration_s: float = 0.0
    rep_delay_s: float = 0.0
    total_shots: int | None = None
    tasks: int | None = None
    init_s: float = 0.0

    @property
    def shots_total(self) -> int:
        return self.total_shots if self.total_shots is not None else self.circuits * self.shots

    @property
    def pubs(self) -> int:
        """PUBs (distinct circuits) executed: one per provider task, else one per job."""
        return self.tasks if self.tasks is not None else self.jobs

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON numbers (what a ledger row keeps of what its job was priced on)."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        """A workload read back from :meth:`to_dict`; unknown keys (a newer writer's) are ignored."""
        names = cls.__dataclass_fields__
        missing = [k for k in ("jobs", "circuits", "shots", "n_gates", "width") if k not in data]
        if missing:
            raise CostModelError(f"workload {data!r} lacks {missing}; it cannot be priced or fitted")
        return cls(**{k: v for k, v in data.items() if k in names})

    def device_features(self, rep_delay_fallback: float = 0.0) -> np.ndarray:
        """``[jobs, circuits, executions x (duration + rep_delay + init)]``: what the device coefficients multiply.

        One definition for prediction and for the calibration fit, so a fitted
        ``duration_scale`` means the same thing wherever it is used.
        """
        per_shot = self.duration_s + (self.rep_delay_s or rep_delay_fallback) + self.init_s
        return np.array([float(self.jobs), float(self.circuits), self.shots_total * per_shot])

    def wall_features(self) -> np.ndarray:
        c, g, w = float(self.circuits), float(self.n_gates), float(self.width)
        s = float(self.shots_total)
        return np.array(
            [
                float(self.jobs),
                c,
                s,
                c * g,
                s * g,
                c * g * 2.0 ** (w - 10),  # scaled so coefficients stay O(1e-6..1)
                c * g * 4.0 ** (w - 10),
                float(self.pubs) * g,
            ]
        )


@dataclass(frozen=True)
class FitQuality:
    r2_train: float
    r2_heldout: float
    mape_heldout: float
    n_train: int
    n_heldout: int

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def fit_nnls(features: np.ndarray, seconds: np.ndarray, relative: bool = True) -> np.ndarray:
    """Non-negative least squares; ``relative`` weights rows by 1/seconds so small jobs count as much as big ones.

    Wall-clock noise on a shared box is roughly proportional to run time, and
    the search compares small and large candidates alike, so minimising the
    relative error is what keeps MAPE low across the design.
    """
    X = np.asarray(features, dtype=float)
    y = np.asarray(seconds, dtype=float)
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise CostModelError(f"fit needs an (n, k) feature matrix and n timings, got {X.shape} and {y.shape}")
    w = 1.0 / np.maximum(y, 1e-9) if relative else np.ones_like(y)
    scale = np.maximum(np.abs(X).max(axis=0), 1e-300)  # column scaling for conditioning
    coef, _ = nnls((X / scale) * w[:, None], y * w)
    return coef / scale


def r2_score(measured: np.ndarray, predicted: np.ndarray) -> float:
    y, p = np.asarray(measured, float), np.asarray(predicted, float)
    ss_res = float(np.sum((y - p) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def mape(measured: np.ndarray, predicted: np.ndarray) -> float:
    y, p = np.asarray(measured, float), np.asarray(predicted, float)
    return float(np.mean(np.abs(p - y) / np.maximum(np.abs(y), 1e-12)))


@dataclass(frozen=True)
class CostModel:
    """Coefficients + provenance for one backend; see the module docstring for the formulas."""

    backend: str
    timing_source: str  # "device" | "wall"
    device: dict[str, float] | None = None
    wall: dict[str, float] | None = None
    rep_delay_s: float = 0.0
    fit: FitQuality | None = None
    created: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    # ------------------------------------------------------------ predict
    def predict_device(self, work: Workload) -> float:
        if self.device is None:
            raise CostModelError(f"cost model for {self.backend!r} has no device coefficients")
        d = self.device
        jobs, circuits, shot_time = work.device_features(self.rep_delay_s)
        return float(jobs * d["per_job_s"] + circuits * d["per_circuit_s"] + shot_time * d["duration_scale"])

    def predict_wall(self, work: Workload) -> float:
        if self.wall is None:
            raise CostModelError(
                f"cost model for {self.backend!r} has no wall-clock fit; run `qnas-hw calibrate --backend "
                f"{self.backend}`"
            )
        coef = np.array([self.wall[k] for k in WALL_FEATURES])
        return float(work.wall_features() @ coef)

    def predict(self, work: Workload) -> float:
        """Seconds in this model's own currency: QPU seconds for devices, wall seconds for simulators."""
        return self.predict_device(work) if self.timing_source == "device" else self.predict_wall(work)

    def key(self) -> str:
        """Content hash of the coefficients (part of objective cache keys)."""
        blob = json.dumps([self.backend, self.timing_source, self.device, self.wall, self.rep_delay_s], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    # ---------------------------------------------------------- persist
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "backend": self.backend,
            "timing_source": self.timing_source,
            "created": self.created,
            "rep_delay_s": self.rep_delay_s,
            "device_model": self.device,
            "wall_model": self.wall,
            "wall_features": list(WALL_FEATURES),
            "fit": self.fit.to_dict() if self.fit else None,
            "provenance": self.provenance,
        }

    def save(self, path: Path) -> Path:
        # atomic: a crash never leaves half a calibration file
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1, default=str) + "\n")

    @classmethod
    def load(
        cls,
        path: Path | str,
        backend_name: str | None = None,
        max_age_days: float | None = DEFAULT_MAX_AGE_DAYS,
        on_stale: str = "warn",
        now: dt.datetime | None = None,
    ) -> CostModel:
        """Read and validate a calibration file; every failure names the file and the fix."""
        path = Path(path)
        fix = f"re-run `qnas-hw calibrate --backend {backend_name or '<backend>'}`"
        if not path.is_file():
            raise CostModelError(f"calibration file {path} does not exist; {fix}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CostModelError(f"calibration file {path} is corrupt ({exc}); {fix} or restore it from git") from None
        if not isinstance(data, dict):
            raise CostModelError(f"calibration file {path} is not a JSON object; {fix}")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise CostModelError(
                f"calibration file {path} has schema_version {data.get('schema_version')!r}, expected "
                f"{SCHEMA_VERSION}; {fix}"
            )
        if backend_name is not None and data.get("backend") != backend_name:
            raise CostModelError(
                f"calibration file {path} is for backend {data.get('backend')!r}, not {backend_name!r}; "
                f"use {calibration_file_name(backend_name)} or {fix}"
            )
        model = cls._from_dict(data, path, fix)
        model._check_age(max_age_days, on_stale, now or dt.datetime.now(dt.UTC), fix)
        return model

    @classmethod
    def _from_dict(cls, data: dict[str, Any], path: Path, fix: str) -> CostModel:
        source = data.get("timing_source")
        if source not in ("device", "wall"):
            raise CostModelError(f"calibration file {path}: timing_source {source!r} must be 'device' or 'wall'; {fix}")
        device = _coeffs(data.get("device_model"), DEVICE_COEFFS, path, "device_model", fix)
        wall = _coeffs(data.get("wall_model"), WALL_FEATURES, path, "wall_model", fix, OPTIONAL_WALL_FEATURES)
        if (source == "device" and device is None) or (source == "wall" and wall is None):
            raise CostModelError(f"calibration file {path}: timing_source {source!r} but no matching model; {fix}")
        fit = data.get("fit")
        return cls(
            backend=str(data.get("backend")),
            timing_source=source,
            device=device,
            wall=wall,
            rep_delay_s=float(data.get("rep_delay_s") or 0.0),
            fit=FitQuality(**fit) if isinstance(fit, dict) else None,
            created=str(data.get("created", "")),
            provenance=dict(data.get("provenance") or {}),
            path=path,
        )

    def _check_age(self, max_age_days: float | None, on_stale: str, now: dt.datetime, fix: str) -> None:
        if max_age_days is None:
            return
        try:
            created = dt.datetime.fromisoformat(self.created)
        except ValueError:
            raise CostModelError(
                f"calibration file {self.path}: created date {self.created!r} is not ISO 8601; {fix}"
            ) from None
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        age = (now - created).total_seconds() / 86400.0
        if age <= max_age_days:
            return
        msg = (
            f"calibration file {self.path} is {age:.0f} days old (limit {max_age_days:g}); devices and "
            f"simulators drift, {fix}"
        )
        if on_stale == "error":
            raise CostModelError(msg)
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)

    # ----------------------------------------------------- construction
    @classmethod
    def for_backend(cls, backend: Backend, directory: Path | None = None, **load_kw: Any) -> CostModel:
        """The backend's calibration file or, for devices, the documented prior.

        The file ``<backend>.json`` is looked for in ``directory`` if given,
        else in the user calibration directory (what ``qnas-hw calibrate``
        writes) and then in the shipped data, so a user's fit wins.
        """
        path = find_calibration_file(calibration_file_name(backend.name), directory)
        if path is not None:
            model = cls.load(path, backend_name=backend.name, **load_kw)
            fitted = (model.provenance.get("device_model") or {}).get("fitted", True)
            if model.timing_source == "device" and not fitted:
                # a file fitted for its wall model carries the device prior of its day: use today's prior
                prior = cls.device_prior(backend)
                model = replace(model, device=prior.device, provenance={**model.provenance, **prior.provenance})
            return model
        if backend.timing_source == "device":
            return cls.device_prior(backend)
        looked = directory or f"{user_calibration_dir()} or the shipped calibration data"
        raise CostModelError(
            f"no calibration for simulator backend {backend.name!r} ({calibration_file_name(backend.name)} is not in "
            f"{looked}); run `qnas-hw calibrate --backend {backend.name}`"
        )

    @classmethod
    def device_prior(cls, backend: Backend) -> CostModel:
        prior = IBM_PRIOR if backend.provider == "ibm" else BRAKET_PRIOR
        return cls(
            backend=backend.name,
            timing_source="device",
            device={k: float(prior[k]) for k in DEVICE_COEFFS},
            rep_delay_s=backend.rep_delay_s,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            provenance={"device_model": {"fitted": False, "source": prior["source"]}},
        )


def _file_stem(name: str) -> str:
    """``ibm:ibm_brisbane`` -> ``ibm_ibm_brisbane``; ARNs become safe file names too."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def calibration_file_name(backend_name: str) -> str:
    """``<backend>.json``, the name a backend's calibration file has in every calibration directory."""
    return f"{_file_stem(backend_name)}.json"


def calibration_path(backend_name: str, directory: Path | None = None) -> Path:
    """Where ``qnas-hw calibrate`` writes the backend's file: ``directory``, else the user calibration directory.

    Never the shipped data: a wheel's files belong to the installed package and
    a checkout's are tracked; a user fit overrides them by name instead.
    """
    return (directory or user_calibration_dir()) / calibration_file_name(backend_name)


def _coeffs(
    block: Any, names: Sequence[str], path: Path, label: str, fix: str, optional: frozenset[str] = frozenset()
) -> dict[str, float] | None:
    if block is None:
        return None
    if not isinstance(block, dict):
        raise CostModelError(f"calibration file {path}: {label} must be an object; {fix}")
    block = {k: 0.0 for k in optional if k not in block} | block
    missing = [k for k in names if k not in block]
    if missing:
        raise CostModelError(f"calibration file {path}: {label} lacks coefficients {missing}; {fix}")
    out: dict[str, float] = {}
    for k in names:
        v = block[k]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise CostModelError(
                f"calibration file {path}: {label}.{k} = {v!r} is not a finite non-negative number; {fix}"
            )
        out[k] = float(v)
    return out


# ------------------------------------------------------------ estimates
@dataclass(frozen=True)
class CostEstimate:
    """Predicted cost of a batch: seconds in the model's currency, dollars where priced, total shots."""

    seconds: float
    dollars: float | None
    shots: int
    timing_source: str = "device"


def dollars_for(backend: Backend, tasks: int, total_shots: int) -> float | None:
    price = backend.pricing
    if price is None:
        return None
    return float(tasks * price.per_task_usd + total_shots * price.per_shot_usd)


def init_duration_s(backend: Backend) -> float:
    """Seconds of qubit initialisation IBM adds to every circuit execution; 0 for other providers.

    IBM's usage estimate (:data:`IBM_USAGE_GUIDE`) adds
    ``backend.target["reset"][(0,)].duration`` per execution when
    ``init_qubits`` is on, which is the runtime's default and what our jobs
    use.  Qubit 0's reset is read as IBM's example does; a target without it
    falls back to the longest reset of any qubit (an upper bound, never free).
    Braket snapshots model their per-shot overhead in ``rep_delay_s`` already,
    and simulators have no such time, so both get 0.
    """
    if backend.provider != "ibm":
        return 0.0
    target = backend.target
    if target is None or "reset" not in target.operation_names:
        return 0.0
    props = target["reset"]
    first = props.get((0,))
    if first is not None and first.duration is not None:
        return float(first.duration)
    durations = [p.duration for p in props.values() if p is not None and p.duration is not None]
    return float(max(durations, default=0.0))


def estimate_job_cost(
    backend: Backend,
    transpiled_circuits: Sequence[QuantumCircuit | SamplerPub],
    shots: int,
    n_jobs: int = 1,
    cost_model: CostModel | None = None,
) -> CostEstimate:
    """Cost of running these transpiled circuits/PUBs, split over ``n_jobs`` jobs, before submitting.

    Each PUB counts one circuit execution per parameter row; on Braket each
    PUB is one task (a program set).  Used by the spending guard, so it never
    under-counts shots.
    """
    if shots <= 0 or n_jobs <= 0:
        raise ValueError(f"shots and n_jobs must be positive, got shots={shots}, n_jobs={n_jobs}")
    model = cost_model or CostModel.for_backend(backend)
    works = pub_workloads(backend, transpiled_circuits, shots, n_jobs)
    seconds = sum(model.predict(w) for w in works)
    total_shots = sum(w.shots_total for w in works)
    tasks = len(transpiled_circuits)
    return CostEstimate(seconds, dollars_for(backend, tasks, total_shots), total_shots, model.timing_source)


def pub_workloads(
    backend: Backend, transpiled_circuits: Sequence[QuantumCircuit | SamplerPub], shots: int, n_jobs: int = 1
) -> list[Workload]:
    """One :class:`Workload` per PUB, as the cost model prices it: the first ``n_jobs`` PUBs carry a job each.

    Kept apart from :func:`estimate_job_cost` so the ledger can store exactly
    what a job was priced on (``Workload.to_dict`` per PUB), and a refit on
    reported usage (``qnas-hw calibrate --from-study``) sees the same features
    the prediction used.
    """
    init_s = init_duration_s(backend)
    works = []
    for k, item in enumerate(transpiled_circuits):
        circ = item.circuit if isinstance(item, SamplerPub) else item
        n1, n2 = gate_counts(circ)
        works.append(
            Workload(
                jobs=1 if k < n_jobs else 0,
                circuits=item.rows if isinstance(item, SamplerPub) else 1,
                tasks=1,  # each item is one PUB
                shots=item.shots_or(shots) if isinstance(item, SamplerPub) else shots,
                n_gates=n1 + n2,
                width=len(active_qubits(circ)),
                duration_s=backend.scheduled_duration(circ),
                rep_delay_s=backend.rep_delay_s,
                init_s=init_s,
            )
        )
    return works


# ------------------------------------------------------------ objective
def json_number(value: float) -> float | int:
    """A figure as JSON and SQLite hold it: exact ints below 2**53, floats otherwise (inf kept)."""
    if isinstance(value, int) and abs(value) < 2**53:
        return value
    v = float(value)
    return int(v) if v.is_integer() and abs(v) < 2**53 else v


def with_wall_fit(model: CostModel, wall: dict[str, float], fit: FitQuality, provenance: dict[str, Any]) -> CostModel:
    """A copy carrying a freshly fitted wall-clock model (device coefficients untouched)."""
    return replace(model, wall=wall, fit=fit, provenance={**model.provenance, **provenance})
