"""New inputs classified by an export bundle on a backend, exactly as a ``device`` search runs a candidate.

The front-end and head run here (:func:`~qnas_hw.deploy.runtime.model_from_bundle`);
the bundle's circuit (or, for a cut candidate, its subexperiments, with the
plan rebuilt by the search's seeded planner to recompute per-sample QPD
coefficients) runs on the backend as the
:class:`~qnas_hw.search.scoring.DeviceScorer` of ``accuracy = "device"``
submits it: the inputs are rows of one parameter array per circuit (chunked
by ``chunk_rows``), readout-mitigated with mthree from a measured
calibration job, priced by the spending guard before anything is submitted,
every job recorded in a ledger first and retried by the executor.  So
``--max-cost``, ``--dry-run`` and ``--resume`` mean what they mean for a
search or ``hw-eval``.

Where a bundle may run: on the backend it was placed for, on that device's
other name (a Braket snapshot and its ARN), or on a local simulator
(``aer_ideal``, ``aer_noisy``, ``braket_local_sv``, ``braket_local_dm``),
which runs the placed circuit on the physical qubits it uses.  Anything else
is refused: the placement, and so the circuit, belongs to one device.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qnas_hw.deploy.bundle import Bundle, BundleError, measured_circuit

if TYPE_CHECKING:
    from qnas_hw.hardware.backends.base import Backend
    from qnas_hw.hardware.execution import CandidateProgram
    from qnas_hw.jobs.guard import Budget, SpendPlan

log = logging.getLogger(__name__)

#: local simulators that run any bundle's placed circuit (on the physical qubits it touches)
SIMULATORS = ("aer_ideal", "aer_noisy", "braket_local_sv", "braket_local_dm")
PREDICTIONS_CSV = "predictions.csv"
PREDICT_JSON = "predict.json"
LEDGER = "ledger.sqlite"
#: two-sided 95% normal quantile (Wilson interval)
Z95 = 1.959963984540054


@dataclass(frozen=True)
class PredictSettings:
    """How ``predict`` submits; ``shots=None`` takes the bundle's (the study's) shots."""

    shots: int | None = None
    chunk_rows: int | None = None
    seed: int = 0
    concurrency: int = 4
    mitigation: bool = True
    dry_run: bool = False
    resume: bool = False
    budget: Budget | None = None
    policy: Any = None


@dataclass
class PredictReport:
    """What a prediction run did and found (``predictions`` empty for a dry run)."""

    bundle: str
    architecture: str
    backend: str
    batch: str
    plan: SpendPlan
    dry_run: bool
    refusal: str | None = None
    predictions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    expectations: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    labels: np.ndarray | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.predictions)

    @property
    def accuracy(self) -> float | None:
        if self.labels is None or self.n == 0:
            return None
        return float((self.predictions == self.labels).mean())

    @property
    def accuracy_ci(self) -> tuple[float, float] | None:
        if self.labels is None or self.n == 0:
            return None
        return wilson_interval(int((self.predictions == self.labels).sum()), self.n)

    def summary(self) -> dict[str, Any]:
        ci = self.accuracy_ci
        return {
            "bundle": self.bundle,
            "architecture": self.architecture,
            "backend": self.backend,
            "batch": self.batch,
            "dry_run": self.dry_run,
            "refusal": self.refusal,
            "samples": self.n,
            "accuracy": self.accuracy,
            "accuracy_ci95": None if ci is None else list(ci),
            "ci_method": "Wilson score interval, 95%",
            "plan": self.plan.to_dict(),
            **{k: v for k, v in self.details.items() if not k.startswith("_")},
            "timings": self.details.get("_timings", {}),
        }


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion: stays inside [0, 1] and is honest at 0 or n correct."""
    if n <= 0:
        raise ValueError("an interval needs at least one sample")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# ------------------------------------------------------------------ backends
def _snapshot_of(name: str) -> str | None:
    """The Braket snapshot that describes ``name`` (``braket_<snapshot>`` or ``braket:<ARN>``), offline."""
    if name.startswith("braket:"):
        from qnas_hw.hardware.backends.braket import braket_backend_for_arn

        try:
            return str(braket_backend_for_arn(name[7:]).snapshot)
        except Exception:  # an ARN no snapshot describes is simply not the same device
            return None
    if name.startswith("braket_") and name not in SIMULATORS:
        return name[7:]
    return None


def same_device(bundle_backend: str, backend: Backend) -> bool:
    """Whether ``backend`` is the device the bundle was placed for (by name, or a Braket snapshot and its ARN)."""
    if backend.name == bundle_backend:
        return True
    mine = _snapshot_of(bundle_backend)
    return mine is not None and mine == getattr(backend, "snapshot", None)


def _snapshot_simulator(backend: Backend) -> Backend:
    """A fake IBM snapshot whose jobs run on :class:`~qnas_hw.hardware.noise.NoisySimulator` (see below)."""
    from qnas_hw.hardware.backends.base import DelegatingBackend, JobHandle, JobState, JobTiming

    class _DoneJob(JobHandle):
        def __init__(self, counts: list[list[dict[str, int]]], seconds: float) -> None:
            self._counts, self._seconds = counts, seconds
            self._id = f"local-noisy-{time.time_ns()}"

        @property
        def job_id(self) -> str:
            return self._id

        def state(self) -> JobState:
            return JobState.DONE

        def counts(self) -> list[list[dict[str, int]]]:
            return self._counts

        def timing(self) -> JobTiming:
            return JobTiming(quantum_seconds=None, wall_seconds=self._seconds)

    class SnapshotSimulator(DelegatingBackend):
        """The snapshot's own noise model (``NoiseModel.from_backend``'s errors, what Qiskit Runtime's local mode
        runs), simulated on only the qubits a circuit touches, exactly (density matrix) with seeded shots: the
        ``noisy`` search's simulator.  Local mode runs every row on the whole device's noise model, about ten
        times slower on 1,000 rows.  Same name, so the same ledger keys and cost model."""

        def __init__(self, inner: Backend) -> None:
            from qnas_hw.hardware.noise import NoisySimulator

            super().__init__(inner)
            self._sim = NoisySimulator(inner, threads=1)  # one Aer thread per job: the executor runs jobs side by side

        def submit(self, pubs: Any, shots: int, seed: int | None = None) -> JobHandle:
            started = time.perf_counter()
            counts = self._sim.run(
                [(p.circuit, p.parameter_values) for p in pubs], [p.shots_or(shots) for p in pubs], int(seed or 0)
            )
            return _DoneJob(counts, time.perf_counter() - started)

    return SnapshotSimulator(backend)


def backend_for(bundle: Bundle, name: str | None) -> Backend:
    """The backend to predict on (default: the bundle's), built so a noisy simulator uses the bundle's device."""
    from qnas_hw.hardware.backends import get_backend

    target = bundle.backend
    name = name or target
    options: dict[str, Any] = {}
    if name == "aer_noisy" and target.startswith("fake_"):
        options["noise_from"] = target
    if name == "braket_local_dm" and (snap := _snapshot_of(target)) is not None:
        options["noise_from"] = snap
    backend = get_backend(name, **options)
    check_backend(bundle, backend)
    if name.startswith("fake_"):  # an offline snapshot: its noise, simulated as the noisy search simulates it
        return _snapshot_simulator(backend)
    return backend


def check_backend(bundle: Bundle, backend: Backend) -> None:
    """Refuse a device the bundle was not placed for, and a cut plan a backend cannot run."""
    if not (same_device(bundle.backend, backend) or backend.name in SIMULATORS):
        raise BundleError(
            f"{bundle.path} was placed for {bundle.backend} (physical qubits "
            f"{bundle.manifest['placement'].get('physical_qubits')}); it runs there or on a local simulator "
            f"({', '.join(SIMULATORS)}), not on {backend.name}. To run on {backend.name}, search (or resume a study) "
            "for that backend and export its pick"
        )
    if bundle.is_cut and not backend.supports_mid_circuit_measurement:
        plan = bundle.cut_plan()["plan"]
        if int(plan.get("n_cuts", 0)) > 0:
            raise BundleError(
                f"{bundle.architecture} runs as a cut plan whose QPD terms measure qubits mid-circuit, which "
                f"{backend.name} cannot run (final measurements only); use an IBM backend or an Aer simulator"
            )


# ------------------------------------------------------------------ program
def _record(circuit: Any, backend: Backend, esp: float | None) -> Any:
    from qnas_hw.hardware.transpilation import TranspileRecord, active_qubits, gate_counts

    n1, n2 = gate_counts(circuit)
    try:
        duration = float(backend.scheduled_duration(circuit))
    except Exception:  # a simulator without instruction durations; its cost model is wall-clock anyway
        duration = 0.0
    return TranspileRecord(
        circuit=circuit,
        depth=int(circuit.depth()),
        n_1q=n1,
        n_2q=n2,
        swaps=0,
        duration_s=duration,
        physical_qubits=active_qubits(circuit),
        esp=esp,
    )


def bundle_program(bundle: Bundle, backend: Backend, shots: int) -> CandidateProgram:
    """The circuits ``predict`` runs: the bundle's, measured as the search measured them, with their shots."""
    from qnas_hw.hardware.execution import CandidateProgram, CircuitRun, measured_qubits
    from qnas_hw.model.space import Architecture

    arch = Architecture.parse(bundle.architecture)
    esp = bundle.manifest["placement"].get("esp") if same_device(bundle.backend, backend) else None
    if not bundle.is_cut:
        circuit = measured_circuit(bundle.circuit(), bundle.observables())
        run = CircuitRun("main", circuit, shots, measured_qubits(circuit), _record(circuit, backend, esp))
        return CandidateProgram(arch, [run])
    plan = bundle.cut_plan()
    cut = _rebuilt_cut(bundle, arch, plan)
    default_shots = int(plan["shots"])
    runs = []
    for entry, circuit in zip(plan["runs"], bundle.subexperiments(), strict=True):
        label = next(lab for lab in cut.experiments if str(lab) == entry["label"])
        run_shots = (
            int(entry["shots"])
            if shots == default_shots
            else cut.shots(label, entry["experiment"], shots, plan["cut_shots"])
        )
        runs.append(
            CircuitRun(
                f"{entry['label']}:{entry['experiment']}",
                circuit,
                run_shots,
                tuple(entry["measured_qubits"]),
                _record(circuit, backend, esp),
            )
        )
    return CandidateProgram(arch, runs, cut)


def _rebuilt_cut(bundle: Bundle, arch: Any, plan: dict[str, Any]) -> Any:
    """The cut execution (reconstruction rule, per-sample coefficients) from the search's seeded planner,
    checked against the bundle's plan: same subcircuits, subexperiments and coefficients."""
    from qnas_hw.hardware.cutting import CutPlanner

    p = plan["planner"]
    cut = CutPlanner(int(p["qubit_budget"]), seed=int(p["seed"]), max_qubits=int(p["max_qubits"])).execution(arch)
    coefficients = [[float(c), getattr(w, "name", str(w))] for c, w in cut.addon_coefficients]
    same = (
        [str(lab) for lab in cut.labels] == plan["labels"]
        and cut.n_experiments == len(plan["runs"])
        and np.allclose([c for c, _ in coefficients], [c for c, _ in plan["coefficients"]], atol=1e-12)
    )
    if not same:
        raise BundleError(
            f"the cut plan of {arch.canonical()} rebuilt here ({cut.n_experiments} subexperiments) is not the one in "
            f"{bundle.path / 'cut/plan.json'} ({len(plan['runs'])}): qiskit-addon-cutting differs from the export's "
            f"({bundle.manifest['versions'].get('qiskit-addon-cutting')}); install that version"
        )
    return cut


class _BundleBuilder:
    """What :class:`~qnas_hw.search.scoring.DeviceScorer` asks of a program builder, for one fixed program."""

    def __init__(self, program: CandidateProgram, backend: Backend, shots: int, key: str) -> None:
        self.program = program
        self.backend = backend
        self.shots = int(shots)
        self._key = key

    def build(self, arch: Any) -> CandidateProgram:
        if arch.canonical() != self.program.arch.canonical():
            raise BundleError(f"this bundle holds {self.program.arch.canonical()}, not {arch.canonical()}")
        return self.program

    def settings_key(self) -> str:
        return f"bundle|{self._key}|shots{self.shots}"


# ------------------------------------------------------------------ inputs
def load_inputs(path: Path | str) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs (and labels, when the file has them) from ``.npz`` (``X``/``x``, ``y``), ``.npy`` or ``.csv``.

    A CSV holds one sample per row, its features flattened; a column named
    ``label`` or ``y`` holds the labels; a header row is optional.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no data file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path) as data:
            key = next((k for k in ("X", "x", "inputs") if k in data), None)
            if key is None:
                raise BundleError(f"{path} has no array named X, x or inputs (it has {', '.join(data.files)})")
            ykey = next((k for k in ("y", "labels", "label") if k in data), None)
            return np.asarray(data[key]), None if ykey is None else np.asarray(data[ykey]).reshape(-1)
    if suffix == ".npy":
        return np.load(path), None
    if suffix == ".csv":
        return _csv_inputs(path)
    raise BundleError(f"{path}: give a .npz, .npy or .csv file")


def _csv_inputs(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r]
    if not rows:
        raise BundleError(f"{path} is empty")
    header = None
    try:
        [float(v) for v in rows[0]]
    except ValueError:
        header, rows = [h.strip().lower() for h in rows[0]], rows[1:]
    label_col = next((header.index(n) for n in ("label", "y") if header and n in header), None)
    try:
        table = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise BundleError(f"{path}: every cell must be a number ({exc})") from None
    if label_col is None:
        return table, None
    return np.delete(table, label_col, axis=1), table[:, label_col].astype(np.int64)


def shape_inputs(bundle: Bundle, X: np.ndarray) -> np.ndarray:
    """``X`` as a float32 batch of the model's input shape (flattened rows of the right size are reshaped)."""
    shape = tuple(int(d) for d in bundle.manifest["model"]["input_shape"])
    X = np.asarray(X, dtype=np.float32)
    size = int(np.prod(shape))
    if X.ndim >= 1 and X.shape[1:] == shape:
        return X
    if X.ndim >= 1 and X.size == len(X) * size:
        return X.reshape(len(X), *shape)
    raise BundleError(
        f"the inputs have shape {X.shape}, but {bundle.architecture}'s front-end takes samples of shape {shape} "
        f"({size} values each, preprocessed as the study's data set {bundle.manifest['data']['dataset']!r})"
    )


def dataset_inputs(
    bundle: Bundle, name: str, split: str = "test", data_dir: str | Path | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A split of a named data set, made as the study made it (same validation fraction and seed).

    ``limit``: a seeded, stratified subset of that many samples (the data layer's ``limit_test`` / ``limit_val``;
    the first ones of the training split).
    """
    from qnas_hw.data import load_dataset

    d = bundle.manifest["data"]
    if name != d["dataset"]:
        log.warning("the bundle was trained on %s; predicting %s with it", d["dataset"], name)
    if split not in ("train", "val", "test"):
        raise BundleError(f"--split must be train, val or test, got {split!r}")
    if limit is not None and limit < 1:
        raise BundleError(f"--limit must be >= 1, got {limit}")
    subset = {"limit_test": limit} if split == "test" else {"limit_val": limit} if split == "val" else {}
    splits = load_dataset(
        name, data_dir, val_fraction=d["val_fraction"], seed=d["seed"], limit_train=d["limit_train"], **subset
    )
    X, y = getattr(splits, split).tensors
    X, y = X.numpy(), y.numpy()
    return (X[:limit], y[:limit]) if limit is not None else (X, y)


# ------------------------------------------------------------------ predict
def batch_name(bundle: Bundle, backend: Backend, X: np.ndarray, shots: int, seed: int) -> str:
    """Ledger batch of one prediction run: the bundle, the data and the settings (a resume finds the same one)."""
    data = hashlib.sha256(np.ascontiguousarray(X, dtype=np.float32).tobytes()).hexdigest()[:12]
    return (
        f"predict|{backend.name}|{bundle.architecture}|bundle={bundle.manifest['manifest_checksum'][:12]}"
        f"|data={data}|shots={shots}|seed={seed}"
    )


def predict(
    bundle: Bundle,
    X: np.ndarray,
    y: np.ndarray | None,
    backend: Backend,
    ledger: Any,
    settings: PredictSettings | None = None,
    *,
    on_progress: Callable[[Any], None] | None = None,
    stop: Any = None,
) -> PredictReport:
    """Plan, guard, run and decode; see the module docstring.  Raises
    :class:`~qnas_hw.jobs.guard.BudgetExceeded` before submitting anything when the plan breaks a limit."""
    import torch

    from qnas_hw.deploy.runtime import model_from_bundle
    from qnas_hw.jobs.guard import BudgetExceeded, check_budget, plan_spend, price_job
    from qnas_hw.jobs.ledger import LedgerState
    from qnas_hw.search.hw_eval import command_executor, device_settings
    from qnas_hw.search.scoring import DeviceScorer, reported_usd

    settings = settings or PredictSettings()
    phases: dict[str, float] = {}
    clock = time.perf_counter()
    check_backend(bundle, backend)
    X = shape_inputs(bundle, X)
    if len(X) == 0:
        raise BundleError("no inputs to classify")
    if y is not None and len(y) != len(X):
        raise BundleError(f"{len(X)} inputs but {len(y)} labels; give one label per input")
    shots = int(settings.shots or bundle.manifest["execution"]["shots"])
    model = model_from_bundle(bundle)
    program = bundle_program(bundle, backend, shots)
    phases["load"], clock = time.perf_counter() - clock, time.perf_counter()
    batch = batch_name(bundle, backend, X, shots, settings.seed)
    builder = _BundleBuilder(program, backend, shots, bundle.manifest["manifest_checksum"][:12])
    scorer = DeviceScorer(
        builder,  # type: ignore[arg-type]  # duck-typed: the bundle's fixed program
        backend,
        ledger,
        device_settings(settings, batch),
    )
    labels = None if y is None else np.asarray(y, dtype=np.int64).reshape(-1)
    prepared = scorer.prepare(program.arch, model, torch.as_tensor(X), np.zeros(len(X)) if labels is None else labels)
    groups = scorer.all_jobs([prepared])
    done = {r.key for r in ledger.jobs() if r.state is LedgerState.DONE and r.backend == backend.name}
    plan = plan_spend(backend, groups, done_keys=done, budget=settings.budget)
    phases["plan"], clock = time.perf_counter() - clock, time.perf_counter()
    report = PredictReport(str(bundle.path), bundle.architecture, backend.name, batch, plan, settings.dry_run)
    if settings.dry_run:
        try:
            check_budget(plan)
        except BudgetExceeded as exc:
            report.refusal = str(exc)
        return report
    check_budget(plan)
    specs = [s for group in groups.values() for s in group]
    for spec in specs:  # what each job spends, kept with it in the ledger (as a device search does)
        spec.meta.update(price_job(backend, spec))
    executor = command_executor(backend, ledger, settings, batch, on_progress=on_progress, stop=stop)
    outcomes = {o.key: o for o in executor.run_sync(specs)}
    phases["jobs"], clock = time.perf_counter() - clock, time.perf_counter()
    from threadpoolctl import threadpool_limits

    # mthree solves one 2**k x 2**k system per input: OpenMP threads on matrices that small only contend for the
    # cores (7.3 s instead of 0.4 s for 1,000 inputs on a busy 2-core box); one thread gives the same solution
    with threadpool_limits(limits=1):
        z, details = scorer.measured_expectations(prepared, outcomes, {})
    with torch.no_grad():
        logits = model.decode(torch.as_tensor(z))
    report.predictions = logits.argmax(dim=-1).cpu().numpy().astype(np.int64)
    report.expectations = z
    report.labels = labels
    phases["decode"] = time.perf_counter() - clock
    details["_timings"]["phases"] = phases
    log.info("predict phases (s): %s", {k: round(v, 3) for k, v in phases.items()})
    report.details = {
        **details,
        "predicted_seconds": plan.seconds,
        "predicted_usd": plan.device_usd,
        # every job's, the readout calibration's too (Braket: the SDK Tracker's estimate; None elsewhere)
        "reported_usd": reported_usd(ledger, [spec.key(backend.name) for spec in specs]),
    }
    return report


def write_outputs(report: PredictReport, out: Path) -> tuple[Path, Path]:
    """``predictions.csv`` (per input: prediction, label, measured ``<Z>``) and ``predict.json`` (the summary)."""
    from qnas_hw.atomic_write import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    n_z = report.expectations.shape[1] if report.expectations.ndim == 2 else 0
    head = ["index", "prediction", *(["label", "correct"] if report.labels is not None else [])]
    head += [f"z_{q}" for q in range(n_z)]
    lines = [",".join(head)]
    for i, pred in enumerate(report.predictions):
        row = [str(i), str(int(pred))]
        if report.labels is not None:
            row += [str(int(report.labels[i])), str(int(pred == report.labels[i]))]
        row += [f"{v:.6f}" for v in report.expectations[i]]
        lines.append(",".join(row))
    csv_path, json_path = out / PREDICTIONS_CSV, out / PREDICT_JSON
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    atomic_write_text(json_path, json.dumps(report.summary(), indent=1, default=str) + "\n")
    return csv_path, json_path
