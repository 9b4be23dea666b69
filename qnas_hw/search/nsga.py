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

The search's parts live beside this loop: the pymoo problem, its operators
and constraints in :mod:`~qnas_hw.search.problem`; the hardware, objectives
and scorer built from the config in :mod:`~qnas_hw.search.building`; the
evaluation of candidates through the study in
:mod:`~qnas_hw.search.evaluator`; the checks and the cost estimate made
before anything is spent in :mod:`~qnas_hw.search.preflight`.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator
from pymoo.problems.static import StaticProblem
from pymoo.termination.max_gen import MaximumGenerationTermination

from qnas_hw.config import RunConfig, stored_config, with_overrides
from qnas_hw.model.space import SearchSpace
from qnas_hw.progress import Progress
from qnas_hw.search.building import (
    SUPERCIRCUIT_FILE,
    WEIGHTS_DIR,
    Hardware,
    _build_accuracy_objective,
    _use_threads,
    build_objectives,
    device_batch,
    make_constraints,
    make_hardware,
    make_scorer,
)
from qnas_hw.search.engine import Engine, open_engine
from qnas_hw.search.evaluator import CandidateEvaluator
from qnas_hw.search.fronts import study_front
from qnas_hw.search.objectives import Objective
from qnas_hw.search.pareto import HV_BOX_META, archive_front, front_hypervolume
from qnas_hw.search.preflight import SearchCostEstimate, check_before_training, estimate_search_cost

# ArchiveDuplicateElimination is not used here: studies saved before the search's parts left this module pickled
# their algorithm with it (and ArchitectureProblem) as qnas_hw.search.nsga.<name>, and pickle finds it here
from qnas_hw.search.problem import (
    ArchitectureProblem,
    ArchiveDuplicateElimination,  # noqa: F401
    SearchError,
    decode,
    make_algorithm,
    remember_evaluated,
)
from qnas_hw.search.study import (
    GenerationRecord,
    OutcomeCounts,
    Study,
    StudyError,
    generation_number,
    now_iso,
)

logger = logging.getLogger(__name__)


STUDY_FILE = "study.sqlite"


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
    #: ``search.screen``: picks which of ``screen_factor`` times the proposals are evaluated (None: all are)
    screen: Any | None = None

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.evaluator.objectives]


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
        study.set_meta_json("supercircuit", {**current, "training": getattr(accuracy, "training_summary", {})})
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
    (:func:`~qnas_hw.search.preflight.check_before_training`, then connecting the engine), so a bad
    setting never costs a SuperCircuit training.  ``backend`` replaces the
    configured one (same name; tests and benchmarks wrap it with fault
    injection); ``budget_overrides`` (``search.device.*`` limits) may change on
    resume, and so may ``generations``: a finished study is extended to that
    many generations (never shortened below the ones it holds).
    ``compute_overrides`` (:data:`EXECUTION_KEYS`: where the evaluations run)
    may change on resume too: the values do not depend on them.

    How the caller watches and stops the run, none of which changes what it
    computes: ``on_estimate`` gets a ``device`` search's
    :class:`~qnas_hw.search.preflight.SearchCostEstimate` (and the generations already done) once the
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
    run.screen = _make_screen(config, hw, scorer, accuracy)
    run.ledger = ledger
    if ledger is not None and hw is not None:
        run.device_batch = device_batch(config, hw.backend)
    return run


def _make_screen(config: RunConfig, hw: Hardware | None, scorer: Any | None, accuracy: Any | None) -> Any | None:
    """``search.screen``'s screen: CNR under the target's noise (the search's noisy scorer, or one built for the
    screen when ``val_error`` is measured ideal or on the device), RepCap on the accuracy objective's data."""
    if config.search.screen == "none" or hw is None or accuracy is None:  # config validation refused the rest
        return None
    from qnas_hw.search.screens import CnrRepcapScreen

    if scorer is None or scorer.mode != "noisy":
        noisy = with_overrides(config, **{"search.accuracy": "noisy"})
        scorer = make_scorer(noisy, hw.backend, hw.transpiler, hw.planner)
    return CnrRepcapScreen(scorer, accuracy.splits, config.model.frontend, config.seed)


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


def _ask(run: SearchRun) -> Any:
    """NSGA-II's proposals; with a screen, ``screen_factor`` times as many, of which the screen keeps a batch's worth.

    The proposal count is raised only for this ``ask`` (the pickled algorithm keeps its own sizes), so a resumed
    search proposes and screens exactly as the first run did.
    """
    algo = run.algorithm
    if run.screen is None:
        return algo.ask()
    factor = run.config.search.screen_factor
    initial = algo.n_gen is None or algo.pop is None
    attr = "pop_size" if initial else "n_offsprings"
    n = getattr(algo, attr)
    setattr(algo, attr, n * factor)
    try:
        pop = algo.ask()
    finally:
        setattr(algo, attr, n)
    if pop is None or len(pop) <= n:
        return pop
    keep = run.screen.select([decode(x, run.space) for x in pop.get("X")], n)
    logger.info("screen kept %d of %d proposals (%.1f s so far)", len(keep), len(pop), run.screen.seconds)
    return pop[keep]


def run_generation(run: SearchRun, generation: int) -> GenerationRecord:
    """Ask, evaluate through the study, tell, and commit the generation with the algorithm state."""
    algo = run.algorithm
    pop = _ask(run)
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
    "EXECUTION_KEYS",
    "STUDY_FILE",
    "SearchRun",
    "SpaceExhausted",
    "StudyError",
    "derive_box",
    "generation_record",
    "generation_summary",
    "prepare_search",
    "run_generation",
    "run_search",
]
