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
  :mod:`qnas_hw.evaluation`), so the resumed study equals an uninterrupted one.

Encoding: the five genes of :data:`qnas_hw.space.GENES` as integers within
:attr:`SearchSpace.bounds`, with pymoo's integer recipe: random integer
sampling, SBX crossover and polynomial mutation on floats with
``RoundingRepair`` (pymoo's own mixed-variable defaults for ``Integer``), and
duplicate elimination so a generation never spends an evaluation on an
architecture already in the population.

Constraints are pymoo inequality constraints (``G <= 0`` feasible):
``evaluation`` (a failed evaluation is infeasible, never silently dropped),
``cut_plan`` (no cutting plan within the planner's gamma limit),
``max_qubits`` and ``max_sampling_overhead`` (from the config, compared on a
log scale so the violation is in "number of extra cuts" units).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator
from pymoo.core.problem import Problem
from pymoo.indicators.hv import HV
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.problems.static import StaticProblem
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from qnas_hw.config import RunConfig, config_from_dict
from qnas_hw.objectives import Objective
from qnas_hw.space import GENES, Architecture, SearchSpace
from qnas_hw.study import CandidateRecord, GenerationRecord, Study, StudyError, now_iso

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
    """Bounds and sizes only: evaluation happens in :func:`run_generation` (ask/tell), never in pymoo.

    Module-level and free of references to models or data so the pickled
    algorithm that embeds it stays small and loads in any later process.
    """

    def __init__(self, space: SearchSpace, n_obj: int, n_constr: int) -> None:
        lo, hi = space.bounds
        super().__init__(n_var=len(GENES), n_obj=n_obj, n_ieq_constr=n_constr, xl=lo, xu=hi, vtype=int)

    def _evaluate(self, x: Any, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        raise SearchError("ArchitectureProblem is evaluated by the search loop (ask/tell), not by pymoo")


def make_algorithm(pop_size: int) -> NSGA2:
    """NSGA-II with pymoo's integer recipe (see the module docstring)."""
    return NSGA2(
        pop_size=pop_size,
        sampling=IntegerRandomSampling(),
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(prob=1.0, eta=20, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )


# ------------------------------------------------------------- objectives
def build_objectives(
    config: RunConfig,
    evaluator: Objective | None,
    *,
    backend: Any | None = None,
    planner: Any | None = None,
) -> list[Objective]:
    """The configured objectives, in ``config.search.objectives`` order.

    ``evaluator`` is the accuracy objective (a ``ValidationErrorObjective``
    built on the trained SuperCircuit; required when ``val_error`` is
    configured).  The hardware objectives are built here from
    ``config.hardware``: the transpiler, the calibrated cost model of the
    backend and one shared cut planner, so ``runtime_s`` and ``subcircuits``
    read the same plan.  Lives in this module, not in :mod:`qnas_hw.objectives`,
    because cost and cutting import that module (a cycle otherwise).
    """
    from qnas_hw.backends import get_backend
    from qnas_hw.cost import CostModel, RuntimeCostObjective
    from qnas_hw.cutting import SubcircuitObjective
    from qnas_hw.transpilation import Transpiler

    hw = config.hardware
    names = list(config.search.objectives)
    hardware_needed = any(n in names for n in ("runtime_s", "subcircuits"))
    if hardware_needed and backend is None:
        backend = get_backend(hw.backend)
    if hardware_needed and planner is None:
        planner = make_planner(config, backend)
    out: list[Objective] = []
    for name in names:
        if name == "val_error":
            if evaluator is None:
                raise SearchError("objective 'val_error' needs the accuracy evaluator (ValidationErrorObjective)")
            out.append(evaluator)
        elif name == "runtime_s":
            transpiler = Transpiler(backend, optimization_level=hw.optimization_level, seed=config.seed)
            out.append(
                RuntimeCostObjective(
                    backend,
                    transpiler,
                    CostModel.for_backend(backend),
                    cut_planner=planner,
                    shots=hw.shots,
                    n_circuits=hw.n_circuits,
                )
            )
        elif name == "subcircuits":
            out.append(SubcircuitObjective(planner))
        else:  # pragma: no cover - the config validator rejects unknown names
            raise SearchError(f"unknown objective {name!r}")
    return out


def make_planner(config: RunConfig, backend: Any) -> Any:
    from qnas_hw.cutting import CutPlanner

    return CutPlanner(config.hardware.qubit_budget, seed=config.seed, max_qubits=backend.num_qubits)


def combined_settings_key(objectives: Sequence[Objective]) -> str:
    """One key for "same values for the same architecture": every objective's name and settings."""
    blob = json.dumps([[o.name, o.settings_key()] for o in objectives])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------ constraints
@dataclass(frozen=True)
class Constraints:
    """Names and evaluation of the pymoo inequality constraints (``<= 0`` feasible)."""

    max_qubits: int | None = None
    max_sampling_overhead: float | None = None
    cut_plan: bool = True

    @property
    def names(self) -> list[str]:
        names = ["evaluation"]
        if self.cut_plan:
            names.append("cut_plan")
        if self.max_qubits is not None:
            names.append("max_qubits")
        if self.max_sampling_overhead is not None:
            names.append("max_sampling_overhead")
        return names

    def values(self, arch: Architecture, facts: dict[str, Any]) -> list[float]:
        """``facts``: ``failed`` plus the cut plan's ``sampling_overhead``/``feasible`` (see :func:`_facts`)."""
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
        return g


def _facts(details: dict[str, Any], error: str | None) -> dict[str, Any]:
    """What the constraints read, from the per-objective details (cut plan from subcircuits or runtime_s)."""
    facts: dict[str, Any] = {"failed": error is not None}
    cut = details.get("subcircuits") or details.get("cut_plan") or {}
    runtime = details.get("runtime_s") or {}
    if "sampling_overhead" in cut:
        facts["sampling_overhead"] = cut["sampling_overhead"]
    elif "sampling_overhead" in runtime:
        facts["sampling_overhead"] = runtime["sampling_overhead"]
    if "feasible" in cut:
        facts["cut_feasible"] = bool(cut["feasible"])
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
    _names: list[str] = field(default_factory=list)
    #: arch keys evaluated by this process: a stored failure is retried once per process (a resume after a
    #: transient error or a fixed bug gets a fresh try), never twice in one run (that run stays deterministic)
    _tried: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.settings_key = self.settings_key or combined_settings_key(self.objectives)
        self._names = [o.name for o in self.objectives]

    def evaluate(self, arch: Architecture, generation: int) -> tuple[CandidateRecord, list[float]]:
        """The stored record (evaluating and committing it first when missing) and its constraint values."""
        stored = self.study.get_candidate(arch, self.settings_key)
        retry = stored is not None and "error" in stored.details and arch.key() not in self._tried
        self._tried.add(arch.key())
        if stored is not None and not retry:
            self.reused += 1
            return stored, self._g(arch, stored.details)
        if retry:
            logger.info("retrying %s, which failed in an earlier run: %s", arch.canonical(), stored.details["error"])
            self.retried += 1
        objectives: dict[str, float] = {}
        details: dict[str, Any] = {}
        timings: dict[str, float] = {}
        error: str | None = None
        for obj in self.objectives:
            t0 = time.perf_counter()
            try:
                result = obj.evaluate(arch)
            except Exception as exc:  # recorded as a failed, infeasible candidate; the search goes on
                logger.exception("objective %s failed on %s", obj.name, arch.canonical())
                error = f"{obj.name}: {type(exc).__name__}: {exc}"
                objectives[obj.name] = math.nan
                details[obj.name] = {"error": error}
            else:
                objectives[obj.name] = float(result.value)
                details[obj.name] = dict(result.details)
            timings[obj.name] = time.perf_counter() - t0
        if error is None and self.planner is not None and "subcircuits" not in details:
            # constraints read the cut plan even when subcircuits is not an objective
            details["cut_plan"] = self.planner.plan(arch).details()
        g = self.constraints.values(arch, _facts(details, error))
        feasible = all(v <= 0 for v in g) and all(math.isfinite(v) for v in objectives.values())
        details["constraints"] = dict(zip(self.constraints.names, g, strict=True)) | {"G": g}
        if error is not None:
            details["error"] = error
            self.failed += 1
        if retry:
            details["previous_error"] = stored.details["error"]
            generation = stored.generation  # the candidate still belongs to the generation that first asked for it
        self.study.add_candidate(
            arch, self.settings_key, objectives, details, timings, generation, feasible, replace=retry
        )
        self.evaluated += 1
        record = self.study.get_candidate(arch, self.settings_key)
        assert record is not None  # just committed
        return record, g

    def _g(self, arch: Architecture, details: dict[str, Any]) -> list[float]:
        return self.constraints.values(arch, _facts(details, details.get("error")))

    def objective_vector(self, record: CandidateRecord) -> list[float]:
        vals = [float(record.objectives.get(n, math.nan)) for n in self._names]
        return [v if math.isfinite(v) else FAILED_VALUE for v in vals]


# ------------------------------------------------------------------ fronts
def archive_front(records: Sequence[CandidateRecord], names: Sequence[str]) -> list[int]:
    """Indices of the feasible, finite, non-dominated records (pymoo's non-dominated sorting)."""
    usable = [
        i
        for i, r in enumerate(records)
        if r.feasible and all(math.isfinite(r.objectives.get(n, math.nan)) for n in names)
    ]
    if not usable:
        return []
    F = np.array([[records[i].objectives[n] for n in names] for i in usable], dtype=float)
    nd = NonDominatedSorting().do(F, only_non_dominated_front=True)
    return sorted(usable[int(k)] for k in nd)


def front_hypervolume(records: Sequence[CandidateRecord], front: Sequence[int], names: Sequence[str]) -> float | None:
    """Hypervolume of ``front`` normalised by the ideal/nadir of all usable records known now (ref 1.1)."""
    usable = [r for r in records if r.feasible and all(math.isfinite(r.objectives.get(n, math.nan)) for n in names)]
    if not front or not usable:
        return None
    A = np.array([[r.objectives[n] for n in names] for r in usable], dtype=float)
    lo, hi = A.min(axis=0), A.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    F = (np.array([[records[i].objectives[n] for n in names] for i in front], dtype=float) - lo) / span
    return float(HV(ref_point=np.full(len(names), 1.1))(F))


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

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.evaluator.objectives]


def _build_accuracy_objective(config: RunConfig, out_dir: Path, progress: bool) -> Objective:
    """Load data, train (or resume / load) the SuperCircuit once, and wrap it as ``val_error``."""
    from qnas_hw.data import load_dataset
    from qnas_hw.evaluation import ValidationErrorObjective
    from qnas_hw.supercircuit import SuperCircuit, SuperTrainConfig, train_supercircuit

    d = config.data
    splits = load_dataset(
        d.dataset, d.data_dir, val_fraction=d.val_fraction, seed=config.seed, limit_train=d.limit_train
    )
    sc = SuperCircuit(
        config.search_space(),
        tuple(splits.input_shape),
        splits.n_classes,
        frontend=config.model.frontend,
        seed=config.seed,
    )
    s = config.supercircuit
    train_cfg = SuperTrainConfig(
        epochs=s.epochs,
        batch_size=s.batch_size,
        lr=s.lr,
        sampling=s.sampling,
        restricted_genes=s.restricted_genes,
        seed=config.seed,
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
    )


def prepare_search(
    config: RunConfig | None, out_dir: Path | None = None, resume: Path | None = None, progress: bool = False
) -> SearchRun:
    """Create (or reopen for ``resume``) the study, train the SuperCircuit, build objectives and the algorithm."""
    if resume is not None:
        study = Study.open(resume)
        stored = config_from_dict(study.config, source=f"configuration stored in {resume}")
        if config is not None and config.resolved() != stored.resolved():
            raise SearchError(
                f"{resume} was created with a different configuration; a resumed search must use the stored one "
                f"(see {study.config_json_path}); drop --config/--seed/--backend/--qubit-budget when resuming"
            )
        config = stored
        out_dir = study.path.parent
    else:
        if config is None:
            raise SearchError("run_search needs a config (default_config()) unless it resumes a study")
        if out_dir is None:
            raise SearchError("run_search needs an output directory for a new study")
        out_dir = Path(out_dir)
        study = Study.create(out_dir / STUDY_FILE, config.resolved(), objective_names=config.search.objectives)
    space = config.search_space()
    backend = None
    names = config.search.objectives
    if any(n in names for n in ("runtime_s", "subcircuits")):
        from qnas_hw.backends import get_backend

        backend = get_backend(config.hardware.backend)
        if space.qubits[1] > backend.num_qubits:
            raise SearchError(
                f"space.qubits upper bound {space.qubits[1]} exceeds {backend.name}'s {backend.num_qubits} qubits; "
                f"lower space.qubits to at most {backend.num_qubits}"
            )
    planner = make_planner(config, backend) if backend is not None else None
    accuracy = _build_accuracy_objective(config, out_dir, progress) if "val_error" in names else None
    objectives = build_objectives(config, accuracy, backend=backend, planner=planner)
    c = config.search.constraints
    constraints = Constraints(c.max_qubits, c.max_sampling_overhead, cut_plan=planner is not None)
    evaluator = CandidateEvaluator(study, objectives, constraints, planner=planner)
    problem = ArchitectureProblem(space, len(objectives), len(constraints.names))

    state = study.last_algorithm_state()
    if state is None:
        algorithm = make_algorithm(config.search.pop_size)
        algorithm.setup(problem, termination=("n_gen", config.search.generations), seed=config.seed, verbose=False)
        next_generation = 0
    else:
        algorithm = pickle.loads(state.state)
        next_generation = state.generation + 1
        logger.info("resuming %s after generation %d", study.path, state.generation)
    return SearchRun(config, study, space, evaluator, algorithm, problem, next_generation, progress=progress)


def run_generation(run: SearchRun, generation: int) -> GenerationRecord:
    """Ask, evaluate through the study, tell, and commit the generation with the algorithm state."""
    algo = run.algorithm
    pop = algo.ask()
    X = np.asarray(pop.get("X"))
    archs = [run.space.decode([int(v) for v in row]) for row in X]
    F, G = [], []
    iterator: Any = archs
    if run.progress:
        from tqdm import tqdm

        iterator = tqdm(archs, desc=f"generation {generation}", leave=False, unit="cand")
    for arch in iterator:
        record, g = run.evaluator.evaluate(arch, generation)
        F.append(run.evaluator.objective_vector(record))
        G.append(g)
    static = StaticProblem(run.problem, F=np.array(F, dtype=float), G=np.array(G, dtype=float))
    Evaluator().eval(static, pop)
    algo.tell(infills=pop)

    population = [run.space.decode([int(v) for v in x]).canonical() for x in algo.pop.get("X")]
    records = run.study.candidates(settings_key=run.evaluator.settings_key)
    names = run.names
    front_idx = archive_front(records, names)
    record = GenerationRecord(
        index=generation,
        population=population,
        front=[records[i].arch.canonical() for i in front_idx],
        hypervolume=front_hypervolume(records, front_idx, names),
    )
    rng_state = algo.random_state.bit_generator.state if algo.random_state is not None else None
    return run.study.commit_generation(record, pickle.dumps(algo), _jsonable(rng_state))


def _jsonable(state: Any) -> Any:
    return json.loads(json.dumps(state, default=str)) if state is not None else None


def run_search(
    config: RunConfig | None,
    out_dir: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
) -> Study:
    """Run (or resume) a whole search; returns the study with every candidate and generation committed.

    ``config`` may be None when resuming (the study's stored config is used);
    a config that differs from the stored one is refused rather than mixed in.
    """
    started = now_iso()
    run = prepare_search(config, out_dir, resume, progress)
    total = run.config.search.generations
    if run.next_generation >= total:
        logger.info("%s already holds all %d generations; nothing to do", run.study.path, total)
        run.study.append_run({"started_at": started, "evaluated": 0, "reused": 0, "failed": 0, "note": "complete"})
        return run.study
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=run.next_generation, desc="NSGA-II generations", unit="gen")
    try:
        for generation in range(run.next_generation, total):
            rec = run_generation(run, generation)
            ev = run.evaluator
            logger.info(
                "generation %d: front %d, hypervolume %s (box of the records so far), evaluated %d new / reused %d "
                "(failed %d)",
                generation,
                len(rec.front),
                "n/a" if rec.hypervolume is None else f"{rec.hypervolume:.4f}",
                ev.evaluated,
                ev.reused,
                ev.failed,
            )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(front=len(rec.front), new=ev.evaluated, reused=ev.reused)
    finally:
        if bar is not None:
            bar.close()
    run.study.append_run(
        {
            "started_at": started,
            "resumed_from_generation": run.next_generation - 1 if resume is not None else None,
            "evaluated": run.evaluator.evaluated,
            "reused": run.evaluator.reused,
            "failed": run.evaluator.failed,
            "retried": run.evaluator.retried,
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
    "archive_front",
    "build_objectives",
    "combined_settings_key",
    "front_hypervolume",
    "make_algorithm",
    "prepare_search",
    "run_generation",
    "run_search",
]
