"""Hardware-in-the-loop evaluation: a trained candidate's validation accuracy measured on a backend.

For each candidate the classical front-end runs locally (``model.encode``),
the quantum layer runs on the backend, and the head decodes the measured
``<Z_q>`` (``model.decode``).  What runs is the candidate's
:class:`~qnas_hw.hardware.execution.CandidateProgram`, the same one the search's
``device`` and ``noisy`` modes run: transpiled and placed on the device's best
qubits once per candidate, and, for a candidate wider than the study's qubit
budget, its cut plan's subexperiments (reconstructed with the addon).  The
validation samples become rows of one parameter array per circuit, chunked
into jobs of at most ``chunk_rows`` rows, never one job per sample; readout
mitigation (mthree, on by default) adds one calibration job per qubit set.
Every job goes through the spending guard, the ledger and the retrying
executor, so a crash at any point loses nothing and ``resume`` pays only for
what is missing.

Seeds: job ``i`` of a candidate uses a seed derived from (seed, architecture,
i), so a resumed or repeated evaluation sends byte-identical jobs (same
ledger keys) and, on seeded simulators, gets identical counts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qnas_hw.hardware.backends.base import Backend
from qnas_hw.hardware.cost import CostModel
from qnas_hw.hardware.execution import ProgramBuilder, z_from_distributions
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.jobs.executor import AsyncExecutor, JobProgress, JobSpec, RetryPolicy, StopRequest
from qnas_hw.jobs.guard import Budget, BudgetExceeded, SpendPlan, check_budget, plan_spend, price_job
from qnas_hw.jobs.ledger import JobLedger, LedgerState
from qnas_hw.jobs.usage import CostComparison, compare_costs, job_costs
from qnas_hw.model.space import Architecture

log = logging.getLogger(__name__)

_RESULTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS hw_eval_results (
    batch TEXT NOT NULL,
    arch TEXT NOT NULL,
    backend TEXT NOT NULL,
    accuracy REAL NOT NULL,
    simulator_accuracy REAL,
    n_samples INTEGER NOT NULL,
    shots INTEGER NOT NULL,
    result TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (batch, arch)
)
"""


class QuantumModel(Protocol):
    """What hardware evaluation needs from a trained HQNN (:class:`qnas_hw.model.hqnn.HQNN`)."""

    def encode(self, x: Any) -> Any: ...
    def quantum_weights(self) -> Any: ...
    def decode(self, z: Any) -> Any: ...


@dataclass(frozen=True)
class HardwareEvalSettings:
    shots: int = 1024
    chunk_rows: int = 64  # parameter rows (samples) per job
    seed: int = 0
    max_samples: int | None = None  # evaluate a stratified, seeded subset of N validation samples only
    optimization_level: int = 1
    concurrency: int = 4
    policy: RetryPolicy | None = None
    budget: Budget = field(default_factory=Budget)
    dry_run: bool = False
    resume: bool = False
    mitigation: bool = True  # mthree readout mitigation from measured calibrations (one job per qubit set)

    def __post_init__(self) -> None:
        for name in ("shots", "chunk_rows", "concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {self.max_samples!r}")


@dataclass(frozen=True)
class CandidateHardwareResult:
    """One candidate measured on the backend."""

    arch: str
    backend: str
    n_samples: int
    accuracy: float
    simulator_accuracy: float | None
    shots: int  # total shots spent (rows x shots)
    jobs: int
    job_ids: list[str]
    reused_jobs: int
    quantum_seconds: float | None  # provider-reported QPU time (None for local simulators)
    wall_seconds: float | None  # sum of per-job submission-to-result times
    predicted_seconds: float
    predicted_usd: float | None
    timing_source: str
    depth: int
    n_2q: int
    layout: list[int] = field(default_factory=list)
    esp: float | None = None
    mitigation: str = "none"
    circuits_per_sample: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HardwareEvalReport:
    backend: str
    batch: str
    plan: SpendPlan
    results: list[CandidateHardwareResult]
    dry_run: bool
    refusal: str | None = None  # dry run: what the guard would refuse, if anything
    #: the batch's jobs, predicted against reported (seconds per unit, Braket Tracker dollars): see jobs.usage
    costs: list[CostComparison] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "batch": self.batch,
            "dry_run": self.dry_run,
            "refusal": self.refusal,
            "plan": self.plan.to_dict(),
            "results": [r.to_dict() for r in self.results],
            "job_costs": [c.to_dict() for c in self.costs],
        }


# ------------------------------------------------------------------ pure helpers
def expectations_from_counts(rows: Sequence[dict[str, int]], n_qubits: int) -> np.ndarray:
    """``<Z_q>`` per row from measured counts (qiskit keys: clbit n-1 first; measure_all maps clbit q to qubit q)."""
    from qnas_hw.hardware.execution import probabilities

    for r, counts in enumerate(rows):
        if any(len(k.replace(" ", "")) < n_qubits for k in counts):
            raise ValueError(f"row {r}: a count key has fewer than {n_qubits} bits")
    return z_from_distributions(probabilities(rows), n_qubits)


def _scorer(
    backend: Backend, ledger: JobLedger, settings: HardwareEvalSettings, planner: Any | None, batch: str
) -> Any:
    from qnas_hw.search.scoring import DeviceScorer

    transpiler = Transpiler(backend, optimization_level=settings.optimization_level, seed=settings.seed)
    builder = ProgramBuilder(backend, transpiler, planner, settings.shots)
    return DeviceScorer(builder, backend, ledger, device_settings(settings, batch))


def command_executor(
    backend: Backend,
    ledger: JobLedger,
    settings: Any,
    batch: str,
    *,
    on_progress: Any = None,
    stop: Any = None,
) -> AsyncExecutor:
    """The job executor of a command (hw-eval, predict): its concurrency, retries and resume, under ``batch``."""
    return AsyncExecutor(
        backend,
        ledger,
        concurrency=settings.concurrency,
        policy=settings.policy or RetryPolicy.for_backend(backend),
        batch=batch,
        resume=settings.resume,
        on_progress=on_progress,
        stop=stop,
    )


def device_settings(settings: Any, batch: str) -> Any:
    """The device scorer's settings from a command's (hw-eval's, predict's): seed, concurrency, rows per job,
    mitigation, retries and budget, under the ledger batch ``batch``."""
    from qnas_hw.search.scoring import DeviceSettings

    return DeviceSettings(
        seed=settings.seed,
        concurrency=settings.concurrency,
        chunk_rows=settings.chunk_rows,
        mitigation=settings.mitigation,
        policy=settings.policy,
        budget=settings.budget,
        batch=batch,
    )


def candidate_jobs(
    arch: Architecture,
    model: QuantumModel,
    X: Any,
    transpiler: Transpiler,
    settings: HardwareEvalSettings,
    planner: Any | None = None,
) -> list[JobSpec]:
    """The data jobs of one candidate: its program's circuits, the samples as parameter rows, chunked."""
    from qnas_hw.search.scoring import DeviceScorer, DeviceSettings

    builder = ProgramBuilder(transpiler.backend, transpiler, planner, settings.shots)
    scorer = DeviceScorer(
        builder, transpiler.backend, None, DeviceSettings(seed=settings.seed, chunk_rows=settings.chunk_rows)
    )
    return scorer.prepare(arch, model, X, np.zeros(len(X))).jobs


def batch_name(backend: Backend, settings: HardwareEvalSettings) -> str:
    return f"hw-eval|{backend.name}|shots={settings.shots}|seed={settings.seed}"


def sample_subset(y: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray:
    """Indices of the validation samples evaluated: a stratified subset of ``max_samples`` (never the first N)."""
    from qnas_hw.data import stratified_subset

    return stratified_subset(y, max_samples, seed)


# ------------------------------------------------------------------ evaluation
def evaluate_on_backend(
    candidates: Sequence[tuple[Architecture, QuantumModel]],
    X: Any,
    y: Any,
    backend: Backend,
    ledger: JobLedger,
    settings: HardwareEvalSettings | None = None,
    *,
    cost_model: CostModel | None = None,
    planner: Any | None = None,
    on_progress: Callable[[JobProgress], None] | None = None,
    stop: StopRequest | None = None,
) -> HardwareEvalReport:
    """Plan, guard, run and score every candidate; results are stored in the ledger's database.

    ``X``/``y`` are the validation samples (tensors or arrays); ``planner``
    (the study's cut planner) makes candidates wider than its budget run as
    their cut plans.  Raises :class:`~qnas_hw.jobs.guard.BudgetExceeded`
    before submitting anything when the plan breaks a limit;
    ``settings.dry_run`` returns the plan only.  ``on_progress`` and ``stop``
    go to the executor, as in a ``device`` search: the jobs' progress for the
    caller to show, and its Ctrl-C (:class:`~qnas_hw.jobs.JobsInterrupted`
    once the jobs in flight are recorded; ``resume`` continues).
    """
    import torch

    settings = settings or HardwareEvalSettings()
    if not candidates:
        raise ValueError("no candidates to evaluate; pick --which all or check that the study has a front")
    X_t = torch.as_tensor(X)
    y_np = np.asarray(torch.as_tensor(y).cpu().numpy()).reshape(-1)
    if X_t.shape[0] != y_np.shape[0] or y_np.size == 0:
        raise ValueError(f"X has {X_t.shape[0]} samples and y {y_np.shape[0]}; give matching, non-empty arrays")
    if settings.max_samples is not None:
        keep = sample_subset(y_np, settings.max_samples, settings.seed)
        X_t, y_np = X_t[torch.as_tensor(keep)], y_np[keep]
    if len({a.canonical() for a, _ in candidates}) != len(candidates):
        raise ValueError("the same architecture appears twice among the candidates")
    batch = batch_name(backend, settings)
    scorer = _scorer(backend, ledger, settings, planner, batch)
    prepared = [scorer.prepare(arch, model, X_t, y_np) for arch, model in candidates]
    groups = scorer.all_jobs(prepared)
    done = {r.key for r in ledger.jobs() if r.state is LedgerState.DONE and r.backend == backend.name}
    plan = plan_spend(backend, groups, done_keys=done, budget=settings.budget, cost_model=cost_model)
    if settings.dry_run:
        try:
            check_budget(plan)
            refusal = None
        except BudgetExceeded as exc:
            refusal = str(exc)
        return HardwareEvalReport(backend.name, batch, plan, [], dry_run=True, refusal=refusal)
    check_budget(plan)
    executor = command_executor(backend, ledger, settings, batch, on_progress=on_progress, stop=stop)
    all_specs = [s for specs in groups.values() for s in specs]
    model = cost_model or CostModel.for_backend(backend)
    for spec in all_specs:  # what each job is predicted to cost, and on what, kept with it in the ledger
        spec.meta.update(price_job(backend, spec, model))
    outcomes = {o.key: o for o in executor.run_sync(all_specs)}
    # per-candidate predictions cover all its jobs (the plan above only prices what is left to run)
    full = plan_spend(backend, groups, cost_model=cost_model) if done else plan
    plan_by_label = {line.label: line for line in full.lines}
    mitigators: dict[Any, Any] = {}
    results = []
    for p in prepared:
        acc, details = scorer.finish(p, outcomes, mitigators)
        results.append(_result(p, acc, details, X_t, y_np, plan_by_label[p.arch.canonical()], plan, backend))
    store_results(ledger, batch, results)
    costs = compare_costs(job_costs(ledger, backend.name, [batch]))
    return HardwareEvalReport(backend.name, batch, plan, results, dry_run=False, costs=costs)


def _result(
    p: Any,
    acc: float,
    details: dict[str, Any],
    X: Any,
    y: np.ndarray,
    line: Any,
    plan: SpendPlan,
    backend: Backend,
) -> CandidateHardwareResult:
    import torch

    model = p.model
    sim_acc = None
    if callable(model):  # the simulated forward pass, for the noise gap
        with torch.no_grad():
            sim_acc = float((model(X).argmax(dim=-1).cpu().numpy() == y).mean())
    t = details.get("_timings", {})
    rec = p.program.runs[0].record
    return CandidateHardwareResult(
        arch=p.arch.canonical(),
        backend=backend.name,
        n_samples=int(y.size),
        accuracy=float(acc),
        simulator_accuracy=sim_acc,
        shots=int(y.size * p.program.shots_per_row),
        jobs=len(p.jobs),
        job_ids=[j or "" for j in t.get("job_ids", [])],
        reused_jobs=int(t.get("reused_jobs", 0)),
        quantum_seconds=t.get("quantum_seconds"),
        wall_seconds=t.get("wall_seconds"),
        predicted_seconds=float(line.seconds),
        predicted_usd=line.device_usd,
        timing_source=plan.timing_source,
        depth=rec.depth,
        n_2q=rec.n_2q,
        layout=list(details.get("layout") or []),
        esp=details.get("esp"),
        mitigation=str(details.get("mitigation", "none")),
        circuits_per_sample=p.program.circuits_per_row,
    )


def store_results(ledger: JobLedger, batch: str, results: Sequence[CandidateHardwareResult]) -> None:
    """Upsert per-candidate results into ``hw_eval_results`` (one committed transaction)."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with ledger.transaction() as conn:
        conn.execute(_RESULTS_SCHEMA)
        for r in results:
            conn.execute(
                "INSERT OR REPLACE INTO hw_eval_results(batch, arch, backend, accuracy, simulator_accuracy, n_samples,"
                " shots, result, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    batch,
                    r.arch,
                    r.backend,
                    r.accuracy,
                    r.simulator_accuracy,
                    r.n_samples,
                    r.shots,
                    json.dumps(r.to_dict(), sort_keys=True),
                    now,
                ),
            )


def stored_results(ledger: JobLedger) -> list[dict[str, Any]]:
    """Every stored hardware result (for reports), newest first."""
    rows = ledger.select(  # a read: works on a read-only ledger and on a study that never stored a result
        "SELECT batch, result, created_at FROM hw_eval_results ORDER BY created_at DESC, rowid DESC",
        table="hw_eval_results",
    )
    return [{"batch": b, "created_at": c, **json.loads(r)} for b, r, c in rows]


# ------------------------------------------------------------------ studies
def pick_architectures(study: Any, which: str) -> list[Architecture]:
    """``front``: the study's front as the report shows it; ``all``: every feasible evaluated candidate.

    The front is :func:`~qnas_hw.search.fronts.study_front` of the study's
    records (within resolution, best first), computed here rather than read
    from the last generation record: studies made before the record stored
    that front hold the exact one there, and the measured candidates must be
    the report table's rows, no more and no fewer.
    """
    if which == "front":
        from qnas_hw.search.fronts import study_front

        if not study.generations():
            raise ValueError(f"study {study.path} has no finished generation yet; run or resume the search first")
        front = study_front(study.candidates(), study.objective_names)
        log.info("hw-eval --which front: %d candidates (exact front: %d)", len(front.shown), len(front.exact))
        return [front.candidates[i].arch for i in front.shown]
    if which == "all":
        seen: dict[str, Architecture] = {}
        for rec in study.candidates():
            if rec.feasible:
                seen.setdefault(rec.arch.canonical(), rec.arch)
        return list(seen.values())
    raise ValueError(f"--which must be 'front' or 'all', got {which!r}")


def _verify_supercircuit(study: Any, fingerprint: str) -> None:
    from qnas_hw.search.study import StudyError

    stored = study.meta_json("supercircuit")
    if stored is not None and stored.get("fingerprint") != fingerprint:
        raise StudyError(
            f"the SuperCircuit next to {study.path} (fingerprint {fingerprint}) is not the one its candidates were "
            f"scored with ({stored.get('fingerprint')}, torch {stored.get('torch')}, {stored.get('threads')} threads); "
            "restore the run's supercircuit.pt from a backup"
        )


def _candidate_model(study: Any, objective: Any, arch: Architecture) -> Any:
    """The candidate's fine-tuned model; its weights re-derived (and checked) when the file is gone or damaged."""
    from qnas_hw.atomic_write import DamagedFileError
    from qnas_hw.search.evaluation import load_candidate, rederive_weights

    try:
        return load_candidate(objective.supercircuit, arch, objective.weights_dir)
    except (FileNotFoundError, DamagedFileError) as exc:
        log.warning("%s; fine-tuning %s again with the search's seed", exc, arch.canonical())
    record = next((c for c in study.candidates() if c.arch.canonical() == arch.canonical()), None)
    if record is None:
        raise ValueError(f"{arch.canonical()} is not in {study.path}")
    ve = record.details.get("val_error") or {}
    stored = ve.get("ideal_val_acc", ve.get("val_acc"))
    if stored is None:
        raise ValueError(f"{arch.canonical()} has no stored validation accuracy to check re-derived weights against")
    return rederive_weights(objective, arch, float(stored), objective.rung_epochs(ve))


def evaluate_study(
    study_path: Path | str,
    backend: Backend,
    which: str = "front",
    settings: HardwareEvalSettings | None = None,
    *,
    on_progress: Callable[[JobProgress], None] | None = None,
    stop: StopRequest | None = None,
) -> HardwareEvalReport:
    """Hardware evaluation of a finished (or paused) search: its fine-tuned candidates on its validation split.

    A missing or damaged ``supercircuit.pt`` is trained again (deterministic;
    its fingerprint must equal the one the study recorded) and missing or
    damaged candidate weights are re-derived by the search's own fine-tune
    (same seed), checked against the accuracy the study stored.
    """
    from qnas_hw.config import stored_config
    from qnas_hw.search.building import _build_accuracy_objective, _use_threads, load_splits
    from qnas_hw.search.study import Study

    writes = settings is None or not settings.dry_run
    study = Study.open(study_path, write=writes, purpose="qnas-hw hw-eval")
    try:
        config = stored_config(study.config, source=f"configuration stored in {study.path}")
        _use_threads(config)
        splits = load_splits(config)
        objective = _build_accuracy_objective(config, study.path.parent, False, None, splits)
        _verify_supercircuit(study, objective.supercircuit.fingerprint())
        archs = pick_architectures(study, which)
        candidates = [(a, _candidate_model(study, objective, a)) for a in archs]
        X, y = splits.val.tensors
        from qnas_hw.hardware.cutting import CutPlanner

        budget = min(config.hardware.qubit_budget, backend.num_qubits)
        planner = CutPlanner(budget, seed=config.seed, max_qubits=backend.num_qubits)
        ledger = JobLedger(study)
        try:
            return evaluate_on_backend(
                candidates, X, y, backend, ledger, settings, planner=planner, on_progress=on_progress, stop=stop
            )
        finally:
            ledger.close()
    finally:
        study.close()
