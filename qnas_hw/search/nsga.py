"""NSGA-II over the HQNN search space, resumable at generation granularity.

The loop uses pymoo's ask/tell interface rather than ``minimize`` because the
evaluation is ours: every candidate is first looked up in the study (by
architecture key and the combined settings key of all objectives), evaluated
only when missing, and committed to the study the moment it is finished.
After each ``tell`` the generation record and the pickled algorithm (which
carries pymoo's ``numpy.random.Generator``) are committed in ONE transaction.
Consequences:

* a run killed at any point loses at most the evaluation in progress;
* ``--resume`` unpickles the algorithm of the last completed generation, so it
  asks for exactly the offspring the uninterrupted run would have asked for,
  and the evaluations of the interrupted generation come back from the study;
* objective values do not depend on evaluation order (see
  :mod:`qnas_hw.search.evaluation`), so the resumed study equals an uninterrupted one.

Encoding: pymoo mixed variables.  Qubits and layers are ordered
(``Integer``: SBX crossover and polynomial mutation with rounding); embedding,
rotation and entangler are categories (``Choice``: uniform crossover and random
resetting), because "angle-z is between angle-y and amplitude" means nothing
and integer operators on such genes bias the search toward neighbouring labels.
Parents are chosen by NSGA-II's binary tournament (rank, then crowding).
Duplicates are eliminated against the whole study archive, not only the
population, so no offspring spends a generation slot on an architecture that
was already evaluated (:class:`ArchiveDuplicateElimination`).

Constraints are pymoo inequality constraints (``G <= 0`` feasible):
``evaluation`` (a failed evaluation is infeasible, never silently dropped),
``cut_plan`` (no cutting plan within the planner's gamma limit),
``max_qubits`` and ``max_sampling_overhead`` (from the config, compared on a
log scale so the violation is in "number of extra cuts" units).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2, binary_tournament
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.evaluator import Evaluator
from pymoo.core.mixed import MixedVariableMating, MixedVariableSampling
from pymoo.core.problem import Problem
from pymoo.core.variable import Choice, Integer
from pymoo.operators.selection.tournament import TournamentSelection
from pymoo.problems.static import StaticProblem
from pymoo.termination.max_gen import MaximumGenerationTermination

from qnas_hw.config import RunConfig, stored_config, with_overrides
from qnas_hw.model.space import GENES, Architecture, SearchSpace
from qnas_hw.progress import Progress
from qnas_hw.search.engine import CandidateOutcome, Engine, EngineError, LocalEngine, open_engine
from qnas_hw.search.fronts import study_front
from qnas_hw.search.objectives import Objective, RuntimeCostObjective, SubcircuitObjective
from qnas_hw.search.pareto import HV_BOX_META, archive_front, front_hypervolume
from qnas_hw.search.study import (
    CandidateRecord,
    GenerationRecord,
    OutcomeCounts,
    Study,
    StudyError,
    StudyStorageError,
    generation_number,
    now_iso,
    storage_problem,
)
from qnas_hw.text import plural

logger = logging.getLogger(__name__)

STUDY_FILE = "study.sqlite"
SUPERCIRCUIT_FILE = "supercircuit.pt"
WEIGHTS_DIR = "weights"
#: What pymoo sees for a non-finite objective (the study keeps the real NaN/inf); the
#: ``evaluation`` constraint already makes such a candidate infeasible.
FAILED_VALUE = 1e12


class SearchError(RuntimeError):
    """A search that cannot start or continue, with the fix in the message."""


# ---------------------------------------------------------------- problem
class ArchitectureProblem(Problem):
    """Variables, sizes and nothing else: evaluation happens in :func:`run_generation` (ask/tell), never in pymoo.

    Module-level and free of references to models or data so the pickled
    algorithm that embeds it stays small and loads in any later process.
    """

    def __init__(self, space: SearchSpace, n_obj: int, n_constr: int) -> None:
        variables: dict[str, Any] = {
            "embedding": Choice(options=list(space.embeddings)),
            "n_qubits": Integer(bounds=space.qubits),
            "n_layers": Integer(bounds=space.layers),
            "rotation": Choice(options=list(space.rotations)),
            "entangler": Choice(options=list(space.entanglers)),
        }
        super().__init__(vars=variables, n_obj=n_obj, n_ieq_constr=n_constr)

    def _evaluate(self, x: Any, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        raise SearchError("ArchitectureProblem is evaluated by the search loop (ask/tell), not by pymoo")


def decode(x: Any, space: SearchSpace) -> Architecture:
    """An individual's architecture: a mixed-variable dict, or the integer genome of studies made before them."""
    if isinstance(x, dict):
        arch = Architecture(
            embedding=str(x["embedding"]),
            n_qubits=int(x["n_qubits"]),
            n_layers=int(x["n_layers"]),
            rotation=str(x["rotation"]),
            entangler=str(x["entangler"]),
        )
        space.check(arch)
        return arch
    return space.decode([int(v) for v in x])


def _individual_key(ind: Any) -> str:
    x = ind.X
    if isinstance(x, dict):
        return "|".join(str(x[g]) for g in GENES)
    return "|".join(str(int(v)) for v in x)


class ArchiveDuplicateElimination(DuplicateElimination):
    """Duplicates within the offspring, against the population, and against every architecture already evaluated.

    pymoo's own eliminators compare with the current population only; on a
    space of a few thousand architectures that let about a third of the
    offspring repeat earlier generations (measured: 38 of 128), each one a
    wasted slot.  :attr:`archive` holds the individuals' gene keys and is
    pickled with the algorithm, so a resumed search asks for exactly the
    offspring an uninterrupted one would.
    """

    def __init__(self) -> None:
        super().__init__()
        self.archive: set[str] = set()

    def _do(self, pop: Any, other: Any, is_duplicate: np.ndarray) -> np.ndarray:
        seen = set(self.archive)
        if other is not None:
            seen.update(_individual_key(o) for o in other)
        for i, ind in enumerate(pop):
            k = _individual_key(ind)
            if k in seen:
                is_duplicate[i] = True
            else:
                seen.add(k)
        return is_duplicate


def archive_key(arch: Architecture) -> str:
    """The gene key :class:`ArchiveDuplicateElimination` stores for an evaluated architecture."""
    return "|".join(str(getattr(arch, g)) for g in GENES)


def make_algorithm(pop_size: int) -> NSGA2:
    """NSGA-II on pymoo's mixed variables, tournament parents, archive-wide duplicate elimination (module doc)."""
    dedupe = ArchiveDuplicateElimination()
    return NSGA2(
        pop_size=pop_size,
        sampling=MixedVariableSampling(),
        mating=MixedVariableMating(
            selection=TournamentSelection(func_comp=binary_tournament), eliminate_duplicates=dedupe
        ),
        eliminate_duplicates=dedupe,
    )


def remember_evaluated(algorithm: NSGA2, archs: Sequence[Architecture]) -> None:
    """Add evaluated architectures to the algorithm's archive (older pickled algorithms have none: no-op)."""
    dedupe = getattr(algorithm, "eliminate_duplicates", None)
    if isinstance(dedupe, ArchiveDuplicateElimination):
        dedupe.archive.update(archive_key(a) for a in archs)


# ------------------------------------------------------------- objectives
def build_objectives(
    config: RunConfig,
    evaluator: Objective | None,
    *,
    backend: Any | None = None,
    planner: Any | None = None,
    transpiler: Any | None = None,
) -> list[Objective]:
    """The configured objectives, in ``config.search.objectives`` order.

    ``evaluator`` is the accuracy objective (a ``ValidationErrorObjective``
    built on the trained SuperCircuit; required when ``val_error`` is
    configured).  The hardware objectives are built here from
    ``config.hardware``: the transpiler, the calibrated cost model of the
    backend and one shared cut planner, so ``runtime_s``, ``cost_usd`` and
    ``subcircuits`` read the same plan.  ``cost_usd`` on a backend without
    prices is refused here too (the config validator refuses it first, before
    any training; this guards callers that build objectives directly).
    """
    from qnas_hw.hardware.backends import get_backend
    from qnas_hw.hardware.cost import CostModel
    from qnas_hw.search.objectives import CostUsdObjective

    hw = config.hardware
    names = list(config.search.objectives)
    hardware_needed = any(n in names for n in ("runtime_s", "cost_usd", "subcircuits"))
    if hardware_needed and backend is None:
        backend = get_backend(hw.backend)
    if hardware_needed and planner is None:
        planner = make_planner(config, backend)
    if ("runtime_s" in names or "cost_usd" in names) and transpiler is None:
        transpiler = make_transpiler(config, backend)  # one transpiler: both price the same placed circuits
    if "cost_usd" in names and backend.pricing is None:
        raise SearchError(
            f"objective 'cost_usd' needs a backend with per-task/per-shot prices, and backend {backend.name!r} has "
            "none; use 'runtime_s' instead, or a priced Braket backend (e.g. braket_iqm_garnet)"
        )
    out: list[Objective] = []
    for name in names:
        if name == "val_error":
            if evaluator is None:
                raise SearchError("objective 'val_error' needs the accuracy evaluator (ValidationErrorObjective)")
            out.append(evaluator)
        elif name == "runtime_s":
            out.append(
                RuntimeCostObjective(
                    backend,
                    transpiler,
                    CostModel.for_backend(backend),
                    cut_planner=planner,
                    shots=hw.shots,
                    n_circuits=hw.n_circuits,
                    cut_shots=config.search.cut_shots,
                )
            )
        elif name == "cost_usd":
            out.append(
                CostUsdObjective(
                    backend,
                    transpiler,
                    cut_planner=planner,
                    shots=hw.shots,
                    n_circuits=hw.n_circuits,
                    cut_shots=config.search.cut_shots,
                )
            )
        elif name == "subcircuits":
            out.append(SubcircuitObjective(planner))
        else:  # pragma: no cover - the config validator rejects unknown names
            raise SearchError(f"unknown objective {name!r}")
    return out


def make_transpiler(config: RunConfig, backend: Any) -> Any:
    """The one transpiler of a search: the runtime objective and the noisy/device runs share its placements."""
    from qnas_hw.hardware.transpilation import Transpiler

    hw = config.hardware
    return Transpiler(backend, optimization_level=hw.optimization_level, seed=config.seed, layout=hw.layout)


def noisy_simulator(config: RunConfig, backend: Any) -> Any:
    """``accuracy = "noisy"``'s simulator: ``search.noisy_simulator`` with its idle noise, on the compute device."""
    from qnas_hw.config import resolve_device
    from qnas_hw.hardware.trajectories import make_noisy_simulator

    s = config.search
    idle = s.idle_schedule if s.idle_noise else None
    return make_noisy_simulator(backend, s.noisy_simulator, idle, resolve_device(config.compute.device))


def make_scorer(
    config: RunConfig,
    backend: Any,
    transpiler: Any,
    planner: Any,
    ledger: Any | None = None,
    *,
    on_jobs: Callable[[Any], None] | None = None,
    stop: Any | None = None,
) -> Any:
    """The accuracy scorer of ``search.accuracy`` (None for ``ideal``): see :mod:`qnas_hw.search.scoring`.

    ``on_jobs`` and ``stop`` reach the ``device`` scorer's executor: the
    generation's job progress for the caller to show, and its stop request.
    """
    from qnas_hw.hardware.execution import ProgramBuilder
    from qnas_hw.search.scoring import DeviceScorer, DeviceSettings, NoisyScorer

    s = config.search
    if s.accuracy == "ideal":
        return None
    builder = ProgramBuilder(
        backend, transpiler, planner, s.shots, s.cut_shots, max_cut_experiments=s.cut_max_experiments
    )
    if s.accuracy == "noisy":
        return NoisyScorer(builder, noisy_simulator(config, backend), mitigation=s.readout_mitigation, seed=config.seed)
    from qnas_hw.jobs import Budget, RetryPolicy

    d = s.device
    if ledger is None:
        raise SearchError("accuracy='device' records every job in the study's ledger; pass the study's JobLedger")
    settings = DeviceSettings(
        seed=config.seed,
        concurrency=d.concurrency,
        chunk_rows=d.chunk_rows,
        mitigation=s.readout_mitigation,
        policy=RetryPolicy.for_backend(backend, max_attempts=d.max_attempts, timeout_s=d.timeout_s),
        budget=Budget(d.max_cost_usd, d.max_qpu_seconds, d.max_shots),
        batch=device_batch(config, backend),
        on_progress=on_jobs,
        stop=stop,
    )
    return DeviceScorer(builder, backend, ledger, settings)


def device_batch(config: RunConfig, backend: Any) -> str:
    """Ledger batch of a search's device jobs: its spending is summed per batch."""
    return f"search|{backend.name}|seed={config.seed}"


def make_planner(config: RunConfig, backend: Any) -> Any:
    from qnas_hw.hardware.cutting import CutPlanner

    return CutPlanner(config.hardware.qubit_budget, seed=config.seed, max_qubits=backend.num_qubits)


def combined_settings_key(objectives: Sequence[Objective]) -> str:
    """One key for "same values for the same architecture": every objective's name and settings."""
    blob = json.dumps([[o.name, o.settings_key()] for o in objectives])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------ constraints
@dataclass(frozen=True)
class Constraints:
    """Names and evaluation of the pymoo inequality constraints (``<= 0`` feasible).

    ``max_runtime_s`` / ``max_usd``: caps on what one candidate's evaluation
    workload is predicted to take on the device (from the ``runtime_s``
    objective) and to cost (Braket and other priced backends); violations are
    in decades over the cap, so "ten times too expensive" is a violation of 1.
    """

    max_qubits: int | None = None
    max_sampling_overhead: float | None = None
    cut_plan: bool = True
    max_runtime_s: float | None = None
    max_usd: float | None = None
    #: fewer two-qubit gates than this (after optimisation, :func:`~qnas_hw.model.circuits.entangling_gates`) is
    #: infeasible, so a user can require entangling circuits; 0 adds no constraint
    min_two_qubit_gates: int = 0

    @property
    def names(self) -> list[str]:
        names = ["evaluation"]
        if self.cut_plan:
            names.append("cut_plan")
        if self.max_qubits is not None:
            names.append("max_qubits")
        if self.max_sampling_overhead is not None:
            names.append("max_sampling_overhead")
        if self.max_runtime_s is not None:
            names.append("max_candidate_runtime_s")
        if self.max_usd is not None:
            names.append("max_candidate_usd")
        if self.min_two_qubit_gates > 0:
            names.append("min_two_qubit_gates")
        return names

    def values(self, arch: Architecture, facts: dict[str, Any]) -> list[float]:
        """``facts``: ``failed``, the cut plan's ``sampling_overhead``/``feasible``, ``runtime_s``, ``usd``."""
        g = [1.0 if facts.get("failed") else 0.0]
        overhead = facts.get("sampling_overhead")
        if self.cut_plan:
            g.append(0.0 if facts.get("cut_feasible", True) else 1.0)
        if self.max_qubits is not None:
            g.append(float(arch.n_qubits - self.max_qubits))
        if self.max_sampling_overhead is not None:
            if overhead is None or not math.isfinite(float(overhead)):
                g.append(1.0)
            else:
                # log base 9: one gate cut (kappa = 3, overhead 9) over the limit is a violation of 1
                g.append(math.log(max(float(overhead), 1e-300) / self.max_sampling_overhead, 9.0))
        if self.max_runtime_s is not None:
            g.append(_decades_over(facts.get("runtime_s"), self.max_runtime_s, facts.get("failed", False)))
        if self.max_usd is not None:
            g.append(_decades_over(facts.get("usd"), self.max_usd, facts.get("failed", False)))
        if self.min_two_qubit_gates > 0:
            from qnas_hw.model.circuits import entangling_gates

            g.append(float(self.min_two_qubit_gates - entangling_gates(arch)))
        return g


#: Violation recorded for an infinite or unknown predicted cost (pymoo needs finite constraint values).
_UNBOUNDED_VIOLATION = 1e6


def _decades_over(value: Any, cap: float, failed: bool) -> float:
    if value is None:
        return 0.0 if failed else _UNBOUNDED_VIOLATION  # a failed candidate is already infeasible by "evaluation"
    v = float(value)
    if math.isnan(v):
        return 0.0 if failed else _UNBOUNDED_VIOLATION
    if math.isinf(v):
        return _UNBOUNDED_VIOLATION
    return math.log10(max(v, 1e-300) / cap)


def _facts(details: dict[str, Any], error: str | None, objectives: dict[str, float] | None = None) -> dict[str, Any]:
    """What the constraints read: the cut plan (from subcircuits or runtime_s details) and the predicted cost."""
    facts: dict[str, Any] = {"failed": error is not None}
    cut = details.get("subcircuits") or details.get("cut_plan") or {}
    runtime = details.get("runtime_s") or {}
    if "sampling_overhead" in cut:
        facts["sampling_overhead"] = cut["sampling_overhead"]
    elif "sampling_overhead" in runtime:
        facts["sampling_overhead"] = runtime["sampling_overhead"]
    if "feasible" in cut:
        facts["cut_feasible"] = bool(cut["feasible"])
    objectives = objectives or {}
    if "runtime_s" in objectives:
        facts["runtime_s"] = objectives["runtime_s"]
    if "cost_usd" in objectives:
        facts["usd"] = objectives["cost_usd"]
    elif runtime.get("dollars") is not None:
        facts["usd"] = runtime["dollars"]
    return facts


# ------------------------------------------------------------- evaluation
@dataclass
class CandidateEvaluator:
    """Evaluates architectures on every objective through the study (the persistent cache)."""

    study: Study
    objectives: list[Objective]
    constraints: Constraints
    settings_key: str = ""
    planner: Any | None = None
    evaluated: int = 0
    reused: int = 0
    failed: int = 0
    retried: int = 0
    #: where the evaluations run (``compute.engine``); the evaluator stays the only writer of the study either way
    engine: Engine = field(default_factory=LocalEngine)
    _names: list[str] = field(default_factory=list)
    #: arch keys evaluated by this process: a stored failure is retried once per process (a resume after a
    #: transient error or a fixed bug gets a fresh try), never twice in one run (that run stays deterministic)
    _tried: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.settings_key = self.settings_key or combined_settings_key(self.objectives)
        self._names = [o.name for o in self.objectives]

    def evaluate(self, arch: Architecture, generation: int) -> tuple[CandidateRecord, list[float]]:
        """The stored record of one architecture (evaluating and committing it first when missing)."""
        return self.evaluate_many([arch], generation)[0]

    def evaluate_many(
        self, archs: Sequence[Architecture], generation: int
    ) -> list[tuple[CandidateRecord, list[float]]]:
        """Stored records of ``archs`` (in order), evaluating every missing one as one batch per objective.

        A batch lets ``accuracy = "device"`` keep a whole generation's jobs in
        flight together.  Each finished candidate is committed on its own, so
        a crash loses at most the batch in progress (whose paid jobs stay in
        the ledger and are reused on resume).  An exception raised by an
        objective's batch (not a candidate's own failure) stops the search.
        """
        todo: list[Architecture] = []
        retries: dict[str, CandidateRecord] = {}
        for arch in archs:
            if arch.key() in {a.key() for a in todo}:
                continue
            stored = self.study.get_candidate(arch, self.settings_key)
            retry = stored is not None and "error" in stored.details and arch.key() not in self._tried
            if stored is not None and not retry:
                continue
            if retry:
                assert stored is not None
                logger.info(
                    "retrying %s, which failed in an earlier run: %s", arch.canonical(), stored.details["error"]
                )
                self.retried += 1
                retries[arch.key()] = stored
            self._tried.add(arch.key())
            todo.append(arch)
        if todo:
            self._evaluate_batch(todo, generation, retries)
        out = []
        fresh = {a.key() for a in todo}
        for arch in archs:
            record = self.study.get_candidate(arch, self.settings_key)
            assert record is not None  # stored before, or just committed
            if arch.key() not in fresh:
                self.reused += 1
            else:
                fresh.discard(arch.key())  # a duplicate later in the list counts as reused
            out.append((record, self._g(arch, record)))
        return out

    def _evaluate_batch(self, archs: list[Architecture], generation: int, retries: dict[str, CandidateRecord]) -> None:
        """Evaluate on the engine and commit each candidate as its outcome arrives (in ``archs`` order, whatever the
        order the engine's workers finish in: the study's rows are the same on every engine)."""
        try:
            with contextlib.closing(self.engine.evaluate(self.objectives, archs)) as outcomes:
                for outcome in outcomes:
                    self._commit(outcome.arch, generation, *self._collect(outcome), retries.get(outcome.arch.key()))
        except EngineError as exc:
            raise EngineError(
                f"{exc}. Every candidate finished before this is saved; continue with `qnas-hw search --resume "
                f"{self.study.path}`"
            ) from exc

    def _collect(
        self, outcome: CandidateOutcome
    ) -> tuple[dict[str, float], dict[str, Any], dict[str, Any], str | None]:
        """A candidate's objective values, details, timings and first error, from its results in objective order."""
        arch = outcome.arch
        objectives: dict[str, float] = {}
        details: dict[str, Any] = {}
        timings: dict[str, Any] = {}
        error: str | None = None
        for obj in self.objectives:
            result = outcome.results[obj.name]
            timings[obj.name] = outcome.seconds[obj.name]
            if isinstance(result, Exception) and storage_problem(result) is not None:
                # the disk's fault, not the candidate's: never stored as its result; a resume evaluates it
                raise StudyStorageError(
                    f"could not save while evaluating {arch.canonical()}: {storage_problem(result)}. Nothing of "
                    f"this generation's unfinished candidates was recorded; free space (or fix the permissions) "
                    f"and continue with `qnas-hw search --resume {self.study.path}`"
                ) from result
            if isinstance(result, Exception):
                logger.error("objective %s failed on %s: %s", obj.name, arch.canonical(), result, exc_info=result)
                error = error or f"{obj.name}: {type(result).__name__}: {result}"
                objectives[obj.name] = math.nan
                details[obj.name] = {"error": f"{type(result).__name__}: {result}"}
                continue
            objectives[obj.name] = float(result.value)
            details[obj.name] = dict(result.details)
            if result.timings:
                timings[f"{obj.name}_parts"] = dict(result.timings)
        if outcome.worker is not None:
            timings["worker"] = outcome.worker  # the Ray worker (host:pid) that ran the candidate's task
        return objectives, details, timings, error

    def _commit(
        self,
        arch: Architecture,
        generation: int,
        objectives: dict[str, float],
        details: dict[str, Any],
        timings: dict[str, Any],
        error: str | None,
        previous: CandidateRecord | None,
    ) -> None:
        if error is None and self.planner is not None and "subcircuits" not in details:
            # constraints read the cut plan even when subcircuits is not an objective
            details["cut_plan"] = self.planner.plan(arch).details()
        g = self.constraints.values(arch, _facts(details, error, objectives))
        feasible = all(v <= 0 for v in g) and all(math.isfinite(v) for v in objectives.values())
        details["constraints"] = dict(zip(self.constraints.names, g, strict=True)) | {"G": g}
        if error is not None:
            details["error"] = error
            self.failed += 1
        if previous is not None:
            details["previous_error"] = previous.details["error"]
            generation = previous.generation  # the candidate still belongs to the generation that first asked for it
        self.study.add_candidate(
            arch, self.settings_key, objectives, details, timings, generation, feasible, replace=previous is not None
        )
        self.evaluated += 1

    def _g(self, arch: Architecture, record: CandidateRecord) -> list[float]:
        details = record.details
        return self.constraints.values(arch, _facts(details, details.get("error"), record.objectives))

    def objective_vector(self, record: CandidateRecord) -> list[float]:
        vals = [float(record.objectives.get(n, math.nan)) for n in self._names]
        return [v if math.isfinite(v) else FAILED_VALUE for v in vals]


# --------------------------------------------------------------------- run
@dataclass
class SearchRun:
    """Everything one search holds in memory; built by :func:`prepare_search`."""

    config: RunConfig
    study: Study
    space: SearchSpace
    evaluator: CandidateEvaluator
    algorithm: NSGA2
    problem: ArchitectureProblem
    next_generation: int
    progress: bool = False
    ledger: Any | None = None  # the study's job ledger (accuracy = "device")
    device_batch: str = ""  # the ledger batch of this search's device jobs (what it has spent)
    box: Any | None = None  # the study's fixed hypervolume box (qnas_hw.search.pareto.HypervolumeBox)
    #: called after every committed generation with :func:`generation_summary`'s dict (the CLI prints it)
    on_generation: Callable[[dict[str, Any]], None] | None = None
    #: the caller's stop request (qnas_hw.jobs.StopRequest, the CLI's Ctrl-C): read after every generation
    stop: Any | None = None

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.evaluator.objectives]


def _build_accuracy_objective(
    config: RunConfig,
    out_dir: Path,
    progress: bool,
    scorer: Any | None = None,
    splits: Any | None = None,
    hw: Hardware | None = None,
) -> Objective:
    """Load data, train (or resume / load) the SuperCircuit once, and wrap it as ``val_error``."""
    from qnas_hw.config import resolve_device
    from qnas_hw.model.supercircuit import SuperCircuit, SuperTrainConfig, train_supercircuit
    from qnas_hw.search.evaluation import ValidationErrorObjective

    splits = splits if splits is not None else load_splits(config)
    device = resolve_device(config.compute.device)
    logger.info("training and simulating on %s (compute.device = %r)", device, config.compute.device)
    sc = SuperCircuit(
        config.search_space(),
        tuple(splits.input_shape),
        splits.n_classes,
        frontend=config.model.frontend,
        seed=config.seed,
    ).to(device)
    s = config.supercircuit
    noise = training_noise(config, hw)
    train_cfg = SuperTrainConfig(
        epochs=s.epochs,
        batch_size=s.batch_size,
        lr=s.lr,
        sampling=s.sampling,
        restricted_genes=s.restricted_genes,
        seed=config.seed,
        noise=noise if s.noise_aware else None,
        noise_key=noise.key() if s.noise_aware and noise is not None else "",
    )
    t0 = time.perf_counter()
    result = train_supercircuit(sc, splits, train_cfg, progress=progress, checkpoint=out_dir / SUPERCIRCUIT_FILE)
    logger.info(
        "SuperCircuit ready (%d epochs run now, %.1f s): fingerprint %s",
        result.epochs_run,
        time.perf_counter() - t0,
        sc.fingerprint(),
    )
    return ValidationErrorObjective(
        sc,
        splits,
        finetune_epochs=config.search.finetune_epochs,
        lr=s.lr,
        batch_size=s.batch_size,
        seed=config.seed,
        weights_dir=out_dir / WEIGHTS_DIR,
        scorer=scorer,
        val_samples=config.search.val_samples,
        training_noise=noise if config.search.noise_aware_finetune else None,
        device=device,
        progress=progress,
    )


def training_noise(config: RunConfig, hw: Hardware | None) -> Any:
    """The target's noise for noise-aware training (None unless the config asks for it)."""
    if not (config.supercircuit.noise_aware or config.search.noise_aware_finetune):
        return None
    if hw is None:
        hw = make_hardware(config)
    assert hw is not None
    from qnas_hw.hardware.noise import NoisySimulator, TrainingNoise, require_noise_model

    require_noise_model(hw.backend)
    return TrainingNoise(hw.backend, hw.transpiler, NoisySimulator(hw.backend), config.hardware.qubit_budget)


def _use_threads(config: RunConfig) -> None:
    """Run with the study's thread count (see :class:`~qnas_hw.config.ComputeConfig`)."""
    import torch

    threads = config.compute.threads
    if threads is not None and torch.get_num_threads() != threads:
        logger.info(
            "using %d torch threads, as the study records (this process had %d)", threads, torch.get_num_threads()
        )
        torch.set_num_threads(threads)


def _check_supercircuit(study: Study, accuracy: Any, config: RunConfig) -> None:
    """Record the SuperCircuit the candidates are scored with; a resume that got another one is refused.

    Without this, deleting ``supercircuit.pt`` and resuming under other
    settings retrains a different SuperCircuit whose candidates are stored
    beside the old ones (another settings key) and mixed into the front.
    """
    import torch

    current = {
        "fingerprint": accuracy.supercircuit.fingerprint(),
        "threads": config.compute.threads,
        "torch": torch.__version__,
        "device": getattr(accuracy, "device", "cpu"),
    }
    stored = study.meta_json("supercircuit")
    if stored is None:
        study.set_meta_json("supercircuit", current)
        return
    if stored.get("device", "cpu") != current["device"]:  # studies from before compute.device ran on the CPU
        logger.warning(
            "%s's candidates were fine-tuned on %s and this run uses %s (compute.device = %r): new candidates' "
            "values may differ from what the other device would give in the last digits (about 1e-6)",
            study.path,
            stored.get("device", "cpu"),
            current["device"],
            config.compute.device,
        )
    if stored.get("fingerprint") != current["fingerprint"]:
        raise SearchError(
            f"the SuperCircuit available now (fingerprint {current['fingerprint']}, torch {current['torch']}, "
            f"{current['threads']} threads) is not the one {study.path}'s candidates were scored with (fingerprint "
            f"{stored.get('fingerprint')}, torch {stored.get('torch')}, {stored.get('threads')} threads); mixing "
            f"them would put two SuperCircuits' candidates on one front. Restore {SUPERCIRCUIT_FILE} next to the "
            "study, or resume on the torch build it was made with"
        )


def _report_missing_weights(study: Study, out_dir: Path) -> None:
    """Name stored candidates whose fine-tuned weights are gone (they are re-derived when hw-eval needs them)."""
    missing = [
        c.arch.canonical()
        for c in study.candidates()
        if "error" not in c.details and not (out_dir / WEIGHTS_DIR / f"{c.arch.key()}.pt").is_file()
    ]
    if missing:
        logger.warning(
            "%d stored candidates have no weights file in %s (e.g. %s); `qnas-hw hw-eval` re-derives them by "
            "fine-tuning again with the same seed and checks the result against the study",
            len(missing),
            out_dir / WEIGHTS_DIR,
            missing[0],
        )


def load_splits(config: RunConfig) -> Any:
    from qnas_hw.data import load_dataset

    d = config.data
    return load_dataset(
        d.dataset,
        d.data_dir,
        val_fraction=d.val_fraction,
        seed=config.seed,
        limit_train=d.limit_train,
        download=d.download,
    )


# ------------------------------------------------------------ hardware set-up
@dataclass
class Hardware:
    """The target and everything derived from it that the objectives share (one transpiler, one planner)."""

    backend: Any
    transpiler: Any
    planner: Any


def needs_backend(config: RunConfig) -> bool:
    names = config.search.objectives
    noise_aware = config.supercircuit.noise_aware or config.search.noise_aware_finetune
    return (
        any(n in names for n in ("runtime_s", "subcircuits"))
        or ("val_error" in names and config.search.accuracy != "ideal")
        or noise_aware
    )


def make_hardware(config: RunConfig, backend: Any | None = None) -> Hardware | None:
    """Backend, transpiler and cut planner of the config (None when no objective needs a device)."""
    if backend is None and not needs_backend(config):
        return None
    if backend is None:
        from qnas_hw.hardware.backends import get_backend

        backend = get_backend(config.hardware.backend)
    smallest = config.search_space().qubits[0]
    if backend.num_qubits < smallest:
        raise SearchError(
            f"backend {backend.name} has {backend.num_qubits} qubit(s), fewer than the smallest candidate of the "
            f"space ({smallest} qubits; no architecture has fewer than 2), so nothing can run on it; pick a larger "
            "device (`qnas-hw devices` lists them with their sizes)"
        )
    return Hardware(backend, make_transpiler(config, backend), make_planner(config, backend))


def check_before_training(config: RunConfig, hw: Hardware | None) -> None:
    """Every refusal that needs no trained model, raised before the SuperCircuit trains (minutes saved).

    A ``cuda`` compute device must be visible; the data set's files must be
    there (checksummed); the backend's cost model must load (a bad calibration
    file is named now, not after training); then
    :func:`check_setup`; then a paid ``device`` search must have a budget for
    its first generation (the message gives the predicted cost).
    """
    from qnas_hw.config import resolve_device
    from qnas_hw.data import check_data_files

    device = resolve_device(config.compute.device)  # `cuda` on a machine without one is refused before anything runs
    c = config.compute
    if c.engine == "ray" and device == "cuda" and not c.num_gpus:
        raise SearchError(
            f"compute.device {c.device!r} computes on CUDA here, but Ray tasks reserve no GPU (compute.num_gpus = "
            f"{c.num_gpus}), so a worker would find none; set compute.num_gpus (e.g. 1, or 0.5 to share one) or "
            "compute.device = 'cpu'"
        )
    check_data_files(config.data.dataset, config.data.data_dir, config.data.download)
    check_setup(config, hw)
    if hw is None:
        return
    s = config.search
    if "runtime_s" in s.objectives or s.accuracy == "device":
        from qnas_hw.hardware.cost import CostModel

        CostModel.for_backend(hw.backend)
    if "val_error" in s.objectives and s.accuracy == "device":
        hw.backend.preflight()  # an unreachable provider fails here, not after the SuperCircuit trained
    if "val_error" in s.objectives and s.accuracy == "device" and not hw.backend.is_simulator:
        from qnas_hw.jobs import BudgetExceeded

        estimate = estimate_search_cost(config, hw)
        d = s.device
        if d.max_cost_usd is not None and d.max_cost_usd <= 0 and estimate.first_generation_usd > 0:
            raise BudgetExceeded(
                f"refusing a device search on paid backend {hw.backend.name} with no budget: its first generation "
                f"is predicted at ${estimate.first_generation_usd:.2f} ({estimate.first_generation_seconds:.1f} QPU "
                f"s) and the whole search at about ${estimate.total_usd:.2f}; set --max-cost "
                "(search.device.max_cost_usd) to what you accept to pay, and see `qnas-hw search --dry-run`"
            )


def check_setup(config: RunConfig, hw: Hardware | None) -> None:
    """Refusals that need neither data nor a price: the space must fit the device, ``noisy`` needs the target's
    noise model, and ``fixed`` cut shots must reach every QPD term of a plan the constraints admit."""
    space = config.search_space()
    if hw is None:
        return
    backend = hw.backend
    if space.qubits[1] > backend.num_qubits:
        raise SearchError(
            f"space.qubits upper bound {space.qubits[1]} exceeds {backend.name}'s {backend.num_qubits} qubits; "
            f"lower space.qubits to at most {backend.num_qubits}"
        )
    s = config.search
    if "val_error" not in s.objectives or s.accuracy == "ideal":
        return
    if s.accuracy == "noisy":
        from qnas_hw.hardware.noise import require_noise_model

        require_noise_model(backend)
    if s.cut_shots == "fixed":
        _check_fixed_cut_shots(config, hw)


def _check_fixed_cut_shots(config: RunConfig, hw: Hardware) -> None:
    """``cut_shots = "fixed"`` spreads a sample's shots over the QPD terms: every admitted plan needs enough."""
    gamma_cap = hw.planner.max_gamma
    c = config.search.constraints.max_sampling_overhead
    if c is not None:
        gamma_cap = min(gamma_cap, math.sqrt(c))
    cuts = math.floor(math.log(max(gamma_cap, 1.0), 3.0) + 1e-9)  # CNOT gate cuts: gamma 3, 6 terms each
    minimum = 6**cuts
    if cuts > 0 and config.search.shots < minimum:
        raise SearchError(
            f"search.shots={config.search.shots} is too few for cut_shots='fixed': plans with up to {cuts} CNOT "
            f"cuts (gamma <= {gamma_cap:g}) have {minimum} QPD terms and each needs a shot; use shots >= {minimum}, "
            "a smaller search.constraints.max_sampling_overhead, or cut_shots='scaled'"
        )


@dataclass(frozen=True)
class SearchCostEstimate:
    """Predicted device spend of a search's accuracy jobs (SuperCircuit training and fine-tunes excluded)."""

    backend: str
    paid: bool
    timing_source: str
    first_generation: list[Any]  # PlanLines of generation 0's candidates (exact: that population is known now)
    evaluations: int
    per_candidate_seconds: float
    per_candidate_usd: float
    max_candidate_seconds: float
    first_generation_seconds: float
    first_generation_usd: float
    total_seconds: float
    total_usd: float
    total_shots: int
    skipped: list[str] = field(default_factory=list)
    generations: int = 1
    #: the jobs' predicted wall-clock seconds (generation 0, whole search) where the cost model has a wall fit for
    #: this machine (a local simulator, or a snapshot simulated locally; None for a real QPU, whose queue no model
    #: predicts), and the file it comes from
    wall_first_generation_seconds: float | None = None
    wall_total_seconds: float | None = None
    wall_source: str = ""
    local: bool = False  # the jobs run on this machine (a simulator or a snapshot), not at a provider

    def wall_seconds_left(self, done_generations: int = 0) -> float | None:
        """Predicted wall seconds of the jobs of the generations after the first ``done_generations``."""
        first, total = self.wall_first_generation_seconds, self.wall_total_seconds
        if first is None or total is None:
            return None
        if done_generations <= 0:
            return total
        later = max(1, self.generations - 1)  # every later generation at the same predicted time
        return max(0, self.generations - done_generations) * (total - first) / later

    def wall_line(self, done_generations: int = 0) -> str:
        """How long the device jobs will take, as the calibrated cost model predicts it (one line, before a run)."""
        first = generation_number(0)
        scope = f"the whole search ({plural(self.generations, 'generation')})"
        if self.wall_first_generation_seconds is not None and self.wall_total_seconds is not None:
            text = (
                f"predicted wall time of the device jobs on {self.backend}: generation {first} "
                f"{_duration(self.wall_first_generation_seconds)}, {scope} {_duration(self.wall_total_seconds)}"
            )
            left = self.wall_seconds_left(done_generations)
            if done_generations > 0 and left is not None:
                text += f", the {plural(self.generations - done_generations, 'generation')} left {_duration(left)}"
            return text + f" (cost model: {self.wall_source}; SuperCircuit training and fine-tunes come on top)"
        if self.local:
            return (
                f"no wall-clock prediction for the device jobs on {self.backend}: its cost model has no fit for this "
                f"machine; `qnas-hw calibrate --backend {self.backend}` makes one"
            )
        return (
            f"predicted QPU time of the device jobs on {self.backend}: generation {first} "
            f"{_duration(self.first_generation_seconds)}, {scope} {_duration(self.total_seconds)} (cost model; the "
            "wait in the provider's queue comes on top and is not predicted)"
        )

    def lines(self) -> list[str]:
        unit = "QPU s" if self.timing_source == "device" else "local s"
        first = generation_number(0)
        out = [
            f"device search on {self.backend} ({'PAID' if self.paid else 'free'}); SuperCircuit training excluded",
            f"generation {first} ({plural(len(self.first_generation), 'candidate')}, exact):",
        ]
        for ln in self.first_generation:
            usd = "n/a" if ln.device_usd is None else f"${ln.device_usd:.2f}"
            out.append(f"  {ln.label:<44} jobs {ln.jobs:>3} shots {ln.shots:>10} {ln.seconds:>10.2f} {unit} {usd}")
        out += [f"  not run (cut plan infeasible or too large): {a}" for a in self.skipped]
        out.append(
            f"whole search: at most {plural(self.evaluations, 'evaluation')}; predicted {self.total_seconds:.1f} "
            f"{unit}, {plural(self.total_shots, 'shot')}, billed ${self.total_usd:.2f} (later generations at "
            f"generation {first}'s mean per candidate, {self.per_candidate_seconds:.2f} {unit}; the costliest "
            f"candidate seen: {self.max_candidate_seconds:.2f} {unit}). The guard re-checks every generation "
            "against what is left."
        )
        return out


def estimate_search_cost(config: RunConfig, hw: Hardware) -> SearchCostEstimate:
    """Price generation 0 exactly and extrapolate: what ``search --dry-run`` prints, before any training.

    Generation 0 is pymoo's seeded initial sampling, known without training;
    each runnable candidate is priced from its real program (placement, cut
    subexperiments and shots) on ``val_samples`` rows, plus one readout
    calibration per distinct qubit set when mitigation is on.
    """
    import copy

    from qnas_hw.hardware.backends.base import SamplerPub
    from qnas_hw.hardware.cost import CostModel
    from qnas_hw.hardware.execution import CAL_SHOTS, ProgramBuilder, calibration_circuits
    from qnas_hw.jobs import JobSpec, plan_spend

    s = config.search
    problem = ArchitectureProblem(config.search_space(), len(s.objectives), 1)
    algorithm = make_algorithm(s.pop_size)
    algorithm.setup(problem, termination=("n_gen", s.generations), seed=config.seed, verbose=False)
    pop = copy.deepcopy(algorithm).ask()
    space = config.search_space()
    archs = [decode(x, space) for x in pop.get("X")]
    builder = ProgramBuilder(
        hw.backend, hw.transpiler, hw.planner, s.shots, s.cut_shots, max_cut_experiments=s.cut_max_experiments
    )
    rows = _scored_rows(config)
    groups: dict[str, list[Any]] = {}
    skipped, qubit_sets = [], set()
    for arch in archs:
        if builder.unrunnable(arch):
            skipped.append(arch.canonical())
            continue
        program = builder.build(arch)
        pubs = tuple(
            SamplerPub(
                r.circuit,
                np.zeros((rows, r.circuit.num_parameters)) if r.circuit.num_parameters else None,
                shots=r.shots,
            )
            for r in program.runs
        )
        groups[arch.canonical()] = [JobSpec(pubs, s.shots, label=arch.canonical())]
        qubit_sets.add(tuple(sorted({q for r in program.runs for q in r.measured_qubits if q is not None})))
    if s.readout_mitigation and hw.backend.target is not None:
        for qubits in sorted(qubit_sets):
            cal = tuple(SamplerPub(c) for c in calibration_circuits(hw.backend, qubits))
            groups[f"readout-cal{list(qubits)}"] = [JobSpec(cal, CAL_SHOTS, label="cal")]
    model = CostModel.for_backend(hw.backend)
    plan = plan_spend(hw.backend, groups, cost_model=model)
    wall_model = _wall_model(model, hw.backend)
    wall = plan_spend(hw.backend, groups, cost_model=wall_model) if wall_model is not None else None
    cand = [ln for ln in plan.lines if not ln.label.startswith("readout-cal")]
    n = max(1, len(cand))
    per_s = sum(ln.seconds for ln in cand) / n
    per_usd = sum((ln.device_usd or 0.0) for ln in cand) / n
    evaluations = s.pop_size * s.generations
    later = max(0, evaluations - len(archs))
    billed = (lambda usd: usd) if plan.paid else (lambda usd: 0.0)
    cal_usd = sum((ln.device_usd or 0.0) for ln in plan.lines if ln.label.startswith("readout-cal"))
    return SearchCostEstimate(
        backend=hw.backend.name,
        paid=plan.paid,
        timing_source=plan.timing_source,
        first_generation=plan.lines,
        evaluations=evaluations,
        per_candidate_seconds=per_s,
        per_candidate_usd=per_usd,
        max_candidate_seconds=max((ln.seconds for ln in cand), default=0.0),
        first_generation_seconds=plan.seconds,
        first_generation_usd=billed(plan.device_usd or 0.0),
        total_seconds=_whole_search_seconds(plan, later),
        total_usd=billed((plan.device_usd or 0.0) + later * per_usd + cal_usd * later / n),
        total_shots=int(plan.shots + later * sum(ln.shots for ln in cand) / n),
        skipped=skipped,
        generations=s.generations,
        wall_first_generation_seconds=wall.seconds if wall is not None else None,
        wall_total_seconds=_whole_search_seconds(wall, later) if wall is not None else None,
        wall_source=wall.cost_model_source if wall is not None else "",
        local=bool(hw.backend.is_simulator),
    )


def _whole_search_seconds(plan: Any, later: int) -> float:
    """Generation 0's seconds (exact) plus ``later`` evaluations at its mean per candidate, each with its share of
    the readout calibrations: how :func:`estimate_search_cost` extrapolates."""
    cand = [ln.seconds for ln in plan.lines if not ln.label.startswith("readout-cal")]
    cal = sum(ln.seconds for ln in plan.lines if ln.label.startswith("readout-cal"))
    n = max(1, len(cand))
    return plan.seconds + later * sum(cand) / n + cal * later / n


def _wall_model(model: Any, backend: Any) -> Any | None:
    """The cost model in this machine's wall-clock seconds, where it has them: a simulator's own model, or the wall
    fit a snapshot's calibration file carries besides its device model (its jobs are simulated here)."""
    if model.timing_source == "wall":
        return model
    if backend.is_simulator and model.wall is not None:
        import dataclasses

        return dataclasses.replace(model, timing_source="wall")
    return None


def _duration(seconds: float) -> str:
    """``42 s``, ``3.6 min``, ``2.1 h``: a predicted time as a person reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _scored_rows(config: RunConfig) -> int:
    """How many validation samples each candidate is scored on (without loading data for Iris-sized sets)."""
    splits = load_splits(config)
    n_val = len(splits.val)
    v = config.search.val_samples
    return n_val if v is None else min(v, n_val)


def _same_recipe(stored: dict[str, Any], config: RunConfig) -> bool:
    """Whether a stored config computes what ``config`` computes (:func:`_recipe`; unreadable counts as no)."""
    try:
        return _recipe(stored_config(stored, source="the stored configuration")) == _recipe(config)
    except Exception:  # a config an older or newer version wrote: not the same command
        return False


def _failed_start(path: Path, config: RunConfig) -> Study | None:
    """A study at ``path`` that holds no result: continue it (same configuration) or clear it (another one).

    A start that failed after the study was created (a crash in training, a
    provider that went away, Ctrl-C) leaves a study without candidates or jobs;
    the same command then continues it, with the SuperCircuit checkpoint it
    may hold, instead of refusing.  Under another configuration the empty study
    and its checkpoint are removed, since nothing in them was computed for it or
    paid.  A study holding anything is left to :meth:`Study.create` to refuse.
    """
    if not path.is_file():
        return None
    try:
        old = Study.open(path, write=True, purpose="qnas-hw search")
    except StudyError:
        return None  # damaged or foreign: Study.create refuses to touch it, naming it
    try:
        if old.holds_results():
            old.close()
            return None
        if _same_recipe(old.config, config):
            logger.warning("continuing %s: a start with this configuration stopped before its first candidate", path)
            if old.config != config.resolved():
                old.update_config(config.resolved())  # only where it computes differs: record this run's placement
            return old
        logger.warning("replacing %s: an earlier start stopped before its first candidate (nothing was stored)", path)
        (path.parent / SUPERCIRCUIT_FILE).unlink(missing_ok=True)
        old.discard()
    except BaseException:
        old.close()
        raise
    return None


def prepare_search(
    config: RunConfig | None,
    out_dir: Path | None = None,
    resume: Path | None = None,
    progress: bool = False,
    *,
    backend: Any | None = None,
    budget_overrides: dict[str, Any] | None = None,
    generations: int | None = None,
    compute_overrides: dict[str, Any] | None = None,
    on_jobs: Callable[[Any], None] | None = None,
    on_estimate: Callable[[SearchCostEstimate, int], None] | None = None,
    stop: Any | None = None,
) -> SearchRun:
    """Create (or reopen for ``resume``) the study, train the SuperCircuit, build objectives and the algorithm.

    Everything that can be refused without a trained model is checked first
    (:func:`check_before_training`, then connecting the engine), so a bad
    setting never costs a SuperCircuit training.  ``backend`` replaces the
    configured one (same name; tests and benchmarks wrap it with fault
    injection); ``budget_overrides`` (``search.device.*`` limits) may change on
    resume, and so may ``generations``: a finished study is extended to that
    many generations (never shortened below the ones it holds).
    ``compute_overrides`` (:data:`EXECUTION_KEYS`: where the evaluations run)
    may change on resume too: the values do not depend on them.

    How the caller watches and stops the run, none of which changes what it
    computes: ``on_estimate`` gets a ``device`` search's
    :class:`SearchCostEstimate` (and the generations already done) once the
    checks have passed, before the SuperCircuit trains; ``on_jobs`` every
    :class:`~qnas_hw.jobs.JobProgress` of its generations' jobs; ``stop`` (a
    :class:`~qnas_hw.jobs.StopRequest`) winds the jobs down and ends the run
    after the generation in progress.
    """
    if resume is not None:
        study = Study.open(resume, write=True, purpose="qnas-hw search --resume")
        stored = stored_config(study.config, source=f"configuration stored in {resume}")
        if config is not None and _recipe(config) != _recipe(stored):
            raise SearchError(
                f"{resume} was created with a different configuration; a resumed search must use the stored one "
                f"(see {study.config_json_path}); drop --config/--seed/--backend/--qubit-budget when resuming"
            )
        overrides = {**(_execution(config) if config is not None else {}), **(compute_overrides or {})}
        overrides.update(budget_overrides or {})
        config = stored
        if generations is not None:
            _check_extension(study, generations)
            overrides["search.generations"] = generations
        if overrides:
            config = with_overrides(config, **overrides)
            if config.resolved() != stored.resolved():
                study.update_config(config.resolved())
        out_dir = study.path.parent
        hw = make_hardware(config, backend)
        check_before_training(config, hw)
        _announce_estimate(on_estimate, config, hw, len(study.generations()))
        engine = open_engine(config.compute)
    else:
        if config is None:
            raise SearchError("run_search needs a config (default_config()) unless it resumes a study")
        if out_dir is None:
            raise SearchError("run_search needs an output directory for a new study")
        out_dir = Path(out_dir)
        extra = {**(compute_overrides or {}), **(budget_overrides or {})}
        if extra or generations is not None:
            config = with_overrides(config, **extra, **{"search.generations": generations})
        if config.compute.threads is None:  # the study records the thread count it is computed with
            import torch

            config = with_overrides(config, **{"compute.threads": torch.get_num_threads()})
        hw = make_hardware(config, backend)
        check_before_training(config, hw)
        _announce_estimate(on_estimate, config, hw, 0)
        engine = open_engine(config.compute)  # an unreachable cluster is refused before a study exists
        try:
            study = _failed_start(out_dir / STUDY_FILE, config) or Study.create(
                out_dir / STUDY_FILE, config.resolved(), objective_names=config.search.objectives
            )
        except BaseException:
            engine.close()
            raise
    try:
        run = _build_run(config, study, hw, engine, out_dir, progress, on_jobs=on_jobs, stop=stop)
    except BaseException:
        engine.close()
        raise
    run.stop = stop
    return run


def _announce_estimate(
    on_estimate: Callable[[SearchCostEstimate, int], None] | None, config: RunConfig, hw: Hardware | None, done: int
) -> None:
    """Hand a ``device`` search's predicted job time to the caller before anything long starts (it prints it).

    Informational only: a prediction that cannot be made is logged, never a
    reason to refuse a search the checks accepted.
    """
    s = config.search
    if on_estimate is None or hw is None or s.accuracy != "device" or "val_error" not in s.objectives:
        return
    try:
        estimate = estimate_search_cost(config, hw)
    except Exception as exc:
        logger.warning("could not predict how long the device jobs will take: %s", exc)
        return
    on_estimate(estimate, done)


#: ``compute`` settings that say where a search's evaluations run, not what they compute: a study may be resumed on
#: another engine (the values are the same), so they are not compared on resume.
EXECUTION_KEYS: tuple[str, ...] = ("compute.engine", "compute.address", "compute.num_cpus", "compute.num_gpus")


def _recipe(config: RunConfig) -> dict[str, Any]:
    """The resolved config without :data:`EXECUTION_KEYS`: what must match for a resume."""
    data = config.resolved()
    data["compute"] = {k: v for k, v in data["compute"].items() if f"compute.{k}" not in EXECUTION_KEYS}
    return data


def _execution(config: RunConfig) -> dict[str, Any]:
    """The :data:`EXECUTION_KEYS` of ``config`` as dotted overrides."""
    compute = config.resolved()["compute"]
    return {key: compute[key.removeprefix("compute.")] for key in EXECUTION_KEYS}


def _build_run(
    config: RunConfig,
    study: Study,
    hw: Hardware | None,
    engine: Engine,
    out_dir: Path,
    progress: bool,
    *,
    on_jobs: Callable[[Any], None] | None = None,
    stop: Any | None = None,
) -> SearchRun:
    """The open study's SuperCircuit (trained, resumed or loaded), objectives, constraints and algorithm."""
    _use_threads(config)
    space = config.search_space()
    names = config.search.objectives
    ledger = None
    scorer = None
    if "val_error" in names and hw is not None:
        if config.search.accuracy == "device":
            from qnas_hw.jobs import JobLedger

            ledger = JobLedger(study)
        scorer = make_scorer(config, hw.backend, hw.transpiler, hw.planner, ledger, on_jobs=on_jobs, stop=stop)
    accuracy = _build_accuracy_objective(config, out_dir, progress, scorer, hw=hw) if "val_error" in names else None
    if accuracy is not None:
        _check_supercircuit(study, accuracy, config)
        _report_missing_weights(study, out_dir)
    planner = hw.planner if hw is not None else None
    objectives = build_objectives(
        config,
        accuracy,
        backend=hw.backend if hw is not None else None,
        planner=planner,
        transpiler=hw.transpiler if hw is not None else None,
    )
    constraints = make_constraints(config, hw, names)
    evaluator = CandidateEvaluator(study, objectives, constraints, planner=planner, engine=engine)
    problem = ArchitectureProblem(space, len(objectives), len(constraints.names))
    box = _hypervolume_box(study, config, objectives, space)

    state = study.last_algorithm_state()
    if state is None:
        algorithm = make_algorithm(config.search.pop_size)
        algorithm.setup(problem, termination=("n_gen", config.search.generations), seed=config.seed, verbose=False)
        next_generation = 0
    else:
        algorithm = pickle.loads(state.state)
        _check_resumable(algorithm, problem, study)
        # the stored config's generation count is the run's length (it grows when a study is extended)
        algorithm.termination = MaximumGenerationTermination(config.search.generations)
        next_generation = state.generation + 1
        logger.info("resuming %s after generation %d", study.path, generation_number(state.generation))
    run = SearchRun(config, study, space, evaluator, algorithm, problem, next_generation, progress=progress, box=box)
    run.ledger = ledger
    if ledger is not None and hw is not None:
        run.device_batch = device_batch(config, hw.backend)
    return run


def make_constraints(config: RunConfig, hw: Hardware | None, names: Sequence[str]) -> Constraints:
    """The study's constraints; the cost caps apply where the objectives predict that cost."""
    c, h = config.search.constraints, config.hardware
    priced = hw is not None and getattr(hw.backend, "pricing", None) is not None
    return Constraints(
        c.max_qubits,
        c.max_sampling_overhead,
        cut_plan=hw is not None and hw.planner is not None,
        max_runtime_s=h.max_candidate_runtime_s if "runtime_s" in names else None,
        max_usd=h.max_candidate_usd if priced and ("runtime_s" in names or "cost_usd" in names) else None,
        min_two_qubit_gates=config.search.min_two_qubit_gates,
    )


def _check_extension(study: Study, generations: int) -> None:
    """``--generations N`` on resume: at least the generations the study already holds."""
    done = len(study.generations())
    if generations < max(done, 1):
        raise SearchError(
            f"--generations {generations} is fewer than the {done} generations {study.path} already holds; a study "
            f"can be extended, not shortened (use --generations {done + 1} or more to continue it)"
        )


def _check_resumable(algorithm: Any, problem: ArchitectureProblem, study: Study) -> None:
    """A pickled algorithm whose problem has other sizes was made by another qnas-hw version: refuse, clearly."""
    old = getattr(algorithm, "problem", None)
    if old is None:
        return
    if (old.n_obj, old.n_ieq_constr) != (problem.n_obj, problem.n_ieq_constr):
        raise SearchError(
            f"{study.path} was made by a qnas-hw version with {old.n_ieq_constr} constraints and {old.n_obj} "
            f"objectives; this one has {problem.n_ieq_constr} and {problem.n_obj}, so its stored optimiser cannot "
            "continue. Start a new study (its candidates are kept and reported as they are)"
        )


def _hypervolume_box(study: Study, config: RunConfig, objectives: Sequence[Objective], space: SearchSpace) -> Any:
    """The study's fixed hypervolume box: read back on resume, derived once (and stored) otherwise."""
    from qnas_hw.search.pareto import HypervolumeBox

    stored = study.meta_json(HV_BOX_META)
    if stored is not None:
        return HypervolumeBox.from_dict(stored)
    box = derive_box(config, objectives, space)
    study.set_meta_json(HV_BOX_META, box.to_dict())
    logger.info("hypervolume box (fixed for this study): %s", box.to_dict())
    return box


def derive_box(config: RunConfig, objectives: Sequence[Objective], space: SearchSpace) -> Any:
    """Each objective's fixed ideal and nadir, from the space's bounds and the configured caps.

    * ``val_error``: 0 to 1.
    * ``runtime_s`` / ``cost_usd`` (log10): from the smallest architecture of
      the space (fewest qubits and layers, no entangler) to the per-candidate
      cap (``hardware.max_candidate_runtime_s`` / ``max_candidate_usd``), or
      four decades above the smallest when there is no cap.
    * ``subcircuits``: 1 to the widest architecture's qubit count (each piece
      holds at least one qubit).
    """
    from qnas_hw.search.pareto import Axis, HypervolumeBox

    caps = {"runtime_s": config.hardware.max_candidate_runtime_s, "cost_usd": config.hardware.max_candidate_usd}
    axes = []
    for obj in objectives:
        if obj.name == "val_error":
            axes.append(Axis("val_error", 0.0, 1.0))
        elif obj.name == "subcircuits":
            axes.append(Axis("subcircuits", 1.0, float(max(space.qubits[1], 2))))
        elif obj.name in caps:
            smallest = float(obj.evaluate(space.smallest()).value)
            if not (math.isfinite(smallest) and smallest > 0):
                raise SearchError(f"{obj.name} of the smallest architecture is {smallest}; cannot fix the box")
            cap = caps[obj.name]
            nadir = cap if cap is not None and cap > smallest else smallest * 1e4
            axes.append(Axis(obj.name, smallest, nadir, log=True))
        else:
            raise SearchError(f"no hypervolume axis is defined for objective {obj.name!r}")
    return HypervolumeBox(tuple(axes))


class SpaceExhausted(Exception):
    """No architecture is left to propose: the search ends early, with everything it evaluated kept."""


def run_generation(run: SearchRun, generation: int) -> GenerationRecord:
    """Ask, evaluate through the study, tell, and commit the generation with the algorithm state."""
    algo = run.algorithm
    pop = algo.ask()
    if pop is None or len(pop) == 0:  # duplicate elimination found no unevaluated architecture to propose
        raise SpaceExhausted(
            f"every architecture NSGA-II can propose in this search space has been evaluated "
            f"({len(run.study.candidates())} candidates); stopping before generation {generation_number(generation)}"
        )
    archs = [decode(x, run.space) for x in pop.get("X")]
    F, G = [], []
    for record, g in run.evaluator.evaluate_many(archs, generation):
        F.append(run.evaluator.objective_vector(record))
        G.append(g)
    remember_evaluated(algo, archs)
    n_obj, n_constr = run.problem.n_obj, run.problem.n_ieq_constr
    static = StaticProblem(
        run.problem,
        F=np.array(F, dtype=float).reshape(len(archs), n_obj),
        G=np.array(G, dtype=float).reshape(len(archs), n_constr),
    )
    Evaluator().eval(static, pop)
    algo.tell(infills=pop)

    population = [decode(x, run.space).canonical() for x in algo.pop.get("X")]
    record = generation_record(run, generation, population)
    rng_state = algo.random_state.bit_generator.state if algo.random_state is not None else None
    return run.study.commit_generation(record, pickle.dumps(algo), _jsonable(rng_state))


def generation_record(run: SearchRun, generation: int, population: list[str]) -> GenerationRecord:
    """What the study records after ``generation``: its survivors, the front users see, the exact front's hypervolume.

    ``front`` is :func:`~qnas_hw.search.fronts.study_front` of every record
    evaluated so far, the front the console line counts and the report
    table lists; the hypervolume measures the exact Pareto front in the
    study's fixed box, as the report's per-generation history does.
    """
    records = run.study.candidates(settings_key=run.evaluator.settings_key)
    names = run.names
    exact = archive_front(records, names)
    return GenerationRecord(
        index=generation,
        population=population,
        front=study_front(records, names).architectures(),
        hypervolume=front_hypervolume(records, exact, names, run.box),
    )


def _jsonable(state: Any) -> Any:
    return json.loads(json.dumps(state, default=str)) if state is not None else None


def run_search(
    config: RunConfig | None,
    out_dir: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
    *,
    backend: Any | None = None,
    budget_overrides: dict[str, Any] | None = None,
    generations: int | None = None,
    on_generation: Callable[[dict[str, Any]], None] | None = None,
    compute_overrides: dict[str, Any] | None = None,
    on_jobs: Callable[[Any], None] | None = None,
    on_estimate: Callable[[SearchCostEstimate, int], None] | None = None,
    stop: Any | None = None,
) -> Study:
    """Run (or resume) a whole search; returns the study with every candidate and generation committed.

    ``config`` may be None when resuming (the study's stored config is used);
    a config that differs from the stored one is refused rather than mixed in.
    ``backend``, ``budget_overrides``, ``generations``, ``compute_overrides``, ``on_jobs``, ``on_estimate`` and
    ``stop``: see :func:`prepare_search`.  A stop request ends the run with a ``KeyboardInterrupt``
    (:class:`~qnas_hw.jobs.JobsInterrupted` when it cut a batch of jobs short) once everything finished is
    committed; the study is closed then, and ``resume`` continues it.
    """
    started = now_iso()
    run = prepare_search(
        config,
        out_dir,
        resume,
        progress,
        backend=backend,
        budget_overrides=budget_overrides,
        generations=generations,
        compute_overrides=compute_overrides,
        on_jobs=on_jobs,
        on_estimate=on_estimate,
        stop=stop,
    )
    run.on_generation = on_generation
    try:
        return _run_generations(run, started, resume)
    except KeyboardInterrupt:
        run.study.close()  # everything finished is committed; the resume reopens it
        raise
    finally:
        run.evaluator.engine.close()
        if run.ledger is not None:
            run.ledger.close()


def generation_summary(run: SearchRun, rec: GenerationRecord, total: int) -> dict[str, Any]:
    """What one line per generation tells a user: progress, front, hypervolume, best error, paid jobs so far.

    ``outcomes`` counts the study's candidates as the report does
    (:class:`~qnas_hw.search.study.OutcomeCounts`), so the console and
    summary.md give the same figures; ``failed`` is this run's failures only.
    ``generation`` is the 1-based number users see (:func:`~qnas_hw.search.study.generation_number`;
    ``index`` the stored 0-based one).  ``front`` is the size of the front within resolution, the
    generation record's and the report table's (:func:`~qnas_hw.search.fronts.study_front`);
    ``exact_front`` the exact Pareto front's, which the hypervolume measures.
    """
    stored = run.study.candidates(settings_key=run.evaluator.settings_key)
    records = [r for r in stored if r.usable]
    errors = [float(r.objectives["val_error"]) for r in records if "val_error" in r.objectives]
    out: dict[str, Any] = {
        "generation": generation_number(rec.index),
        "index": rec.index,
        "generations": total,
        "candidates": run.study.n_candidates(),
        "outcomes": OutcomeCounts.of(stored),
        "new": run.evaluator.evaluated,
        "from_study": run.evaluator.reused,
        "failed": run.evaluator.failed,
        "front": len(rec.front),
        "exact_front": len(study_front(stored, run.names).exact),
        "hypervolume": rec.hypervolume,
        "best_val_error": min(errors) if errors else None,
    }
    if run.ledger is not None:  # accuracy = "device": what the search's jobs have cost so far
        out["spent"] = run.ledger.spent(run.device_batch)
    return out


def _run_generations(run: SearchRun, started: str, resume: Path | None) -> Study:
    total = run.config.search.generations
    if run.next_generation >= total:
        logger.info("%s already holds all %d generations; nothing to do", run.study.path, total)
        run.study.append_run({"started_at": started, "evaluated": 0, "reused": 0, "failed": 0, "note": "complete"})
        return run.study
    # a bar on a terminal only: off it, the caller's line per generation (on_generation) says the same
    bar = Progress(
        "NSGA-II generations", total, unit="gen", initial=run.next_generation, enabled=run.progress, lines=False
    )
    try:
        for generation in range(run.next_generation, total):
            try:
                rec = run_generation(run, generation)
            except SpaceExhausted as exc:
                logger.warning("%s", exc)
                break
            ev = run.evaluator
            logger.info(
                "generation %d/%d: front %d (within resolution), hypervolume %s (exact front, the study's fixed "
                "box), evaluated %d new / reused %d (failed %d)",
                generation_number(generation),
                total,
                len(rec.front),
                "n/a" if rec.hypervolume is None else f"{rec.hypervolume:.4f}",
                ev.evaluated,
                ev.reused,
                ev.failed,
            )
            bar.update(1, status=f"front={len(rec.front)}, new={ev.evaluated}, reused={ev.reused}")
            if run.on_generation is not None:
                run.on_generation(generation_summary(run, rec, total))
            if run.stop is not None and run.stop.stopping and generation + 1 < total:
                # asked to stop while this generation's jobs were in flight: they finished and it is committed
                raise KeyboardInterrupt(f"stopped after generation {generation_number(generation)} of {total}")
    finally:
        bar.close()
    run.study.append_run(
        {
            "started_at": started,
            "resumed_from_generation": run.next_generation - 1 if resume is not None else None,
            "evaluated": run.evaluator.evaluated,
            "reused": run.evaluator.reused,
            "failed": run.evaluator.failed,
            "retried": run.evaluator.retried,
            "engine": run.evaluator.engine.name,  # where this run's evaluations ran (compute.engine)
        }
    )
    return run.study


__all__ = [
    "ArchitectureProblem",
    "CandidateEvaluator",
    "Constraints",
    "SearchError",
    "SearchRun",
    "StudyError",
    "build_objectives",
    "combined_settings_key",
    "decode",
    "make_algorithm",
    "prepare_search",
    "remember_evaluated",
    "run_generation",
    "run_search",
]
