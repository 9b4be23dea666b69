"""Search: integer encoding stays valid, constraints, the study cache, the front, and the SIGKILL-and-resume test.

The kill test runs the real CLI in subprocesses: an uninterrupted reference
run and a victim that is SIGKILLed in the middle of a generation (after at
least one completed generation) and then resumed.  The resumed study must hold
every candidate exactly once, with the same objective values, generations and
final front as the reference, and the resumed process must evaluate exactly
the candidates the victim had not stored (nothing lost, nothing repeated).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from references import naive_front

from qnas_hw.config import RunConfig, config_from_dict, default_config
from qnas_hw.hardware.backends import get_backend
from qnas_hw.hardware.cost import CostModel
from qnas_hw.hardware.cutting import CutPlanner
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.model.space import Architecture
from qnas_hw.search.building import build_objectives
from qnas_hw.search.evaluator import CandidateEvaluator
from qnas_hw.search.fronts import study_front
from qnas_hw.search.nsga import run_search
from qnas_hw.search.objectives import RuntimeCostObjective, SubcircuitObjective
from qnas_hw.search.pareto import archive_front
from qnas_hw.search.problem import (
    ArchitectureProblem,
    Constraints,
    SearchError,
    decode,
    make_algorithm,
    remember_evaluated,
)
from qnas_hw.search.study import Study, StudyError

TINY = {
    "seed": 3,
    "space": {"qubits": [2, 4], "layers": [1, 2]},
    "supercircuit": {"epochs": 1, "batch_size": 32},
    "search": {"pop_size": 6, "generations": 3, "finetune_epochs": 1},
    "hardware": {"qubit_budget": 3},
}
TINY_TOML = """
seed = 3
[data]
dataset = "iris"
val_fraction = 0.2
[space]
qubits = [2, 4]
layers = [1, 2]
[supercircuit]
epochs = 1
batch_size = 32
[search]
pop_size = 6
generations = 4
finetune_epochs = 1
[hardware]
qubit_budget = 3
"""


def _cfg(**extra: dict) -> RunConfig:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for k, v in extra.items():
        data[k] = {**data.get(k, {}), **v}
    return config_from_dict(data)


# ------------------------------------------------------------ encoding/operators
def test_operators_only_produce_valid_architectures_never_seen_before() -> None:
    """Mixed-variable offspring are valid, and none repeats an architecture of any earlier generation."""
    from pymoo.core.evaluator import Evaluator
    from pymoo.problems.static import StaticProblem

    cfg = default_config()
    space = cfg.search_space()
    algo = make_algorithm(pop_size=20)
    problem = ArchitectureProblem(space, n_obj=2, n_constr=1)
    algo.setup(problem, termination=("n_gen", 6), seed=11)
    rng = np.random.default_rng(0)
    seen: set[str] = set()
    embeddings: set[str] = set()
    for _ in range(6):
        pop = algo.ask()
        archs = [decode(x, space) for x in pop.get("X")]  # raises if a gene is invalid or outside the space
        keys = [a.canonical() for a in archs]
        assert len(set(keys)) == len(keys), "duplicate within a generation"
        assert not seen & set(keys), f"re-asked for evaluated architectures: {sorted(seen & set(keys))}"
        seen |= set(keys)
        embeddings |= {a.embedding for a in archs}
        remember_evaluated(algo, archs)
        F = rng.random((len(archs), 2))
        Evaluator().eval(StaticProblem(problem, F=F, G=np.zeros((len(archs), 1))), pop)
        algo.tell(infills=pop)
    assert embeddings == set(space.embeddings)  # categorical genes are explored, not stuck on neighbours
    assert len(seen) >= 100  # 20 + 5 x ~20 offspring, every one new


def test_a_resumed_algorithm_remembers_the_archive() -> None:
    """The archive travels with the pickled algorithm, so a resume never re-asks for an evaluated architecture."""
    import pickle

    space = default_config().search_space()
    algo = make_algorithm(pop_size=8)
    algo.setup(ArchitectureProblem(space, n_obj=2, n_constr=1), termination=("n_gen", 3), seed=3)
    archs = [decode(x, space) for x in algo.ask().get("X")]
    remember_evaluated(algo, archs)
    again = pickle.loads(pickle.dumps(algo))
    assert again.eliminate_duplicates is again.mating.eliminate_duplicates  # one archive, shared
    assert again.eliminate_duplicates.archive == algo.eliminate_duplicates.archive
    assert len(again.eliminate_duplicates.archive) == len({a.canonical() for a in archs})


def test_constraint_values() -> None:
    a = Architecture("angle-y", 5, 1, "ry", "ring")
    c = Constraints(max_qubits=4, max_sampling_overhead=81.0)
    assert c.names == ["evaluation", "cut_plan", "max_qubits", "max_sampling_overhead"]
    g = c.values(a, {"failed": False, "sampling_overhead": 729.0, "cut_feasible": True})
    # one qubit too many; 729 = 9^3 is one gate cut (factor 9) over 81 = 9^2
    assert g == pytest.approx([0.0, 0.0, 1.0, 1.0])
    ok = c.values(Architecture("angle-y", 3, 1, "ry", "ring"), {"sampling_overhead": 9.0, "cut_feasible": True})
    assert all(v <= 0 for v in ok)
    bad = c.values(a, {"failed": True, "cut_feasible": False})
    assert bad[0] > 0 and bad[1] > 0 and bad[3] > 0  # unknown overhead of a failed candidate is a violation
    assert Constraints(cut_plan=False).names == ["evaluation"]


def test_failed_evaluation_is_stored_infeasible(tmp_path: Path) -> None:
    """A real failure (6 qubits on the 5-qubit fake_manila) is kept as an infeasible candidate, not lost."""
    cfg = _cfg(
        hardware={"backend": "fake_manila", "qubit_budget": 3}, search={"objectives": ["runtime_s", "subcircuits"]}
    )
    backend = get_backend("fake_manila")
    study = Study.create(tmp_path / "s.sqlite", cfg.resolved(), objective_names=["runtime_s", "subcircuits"])
    planner = CutPlanner(3, seed=0, max_qubits=backend.num_qubits)
    objectives = [
        RuntimeCostObjective(backend, Transpiler(backend), CostModel.for_backend(backend), cut_planner=planner),
        SubcircuitObjective(planner),
    ]
    ev = CandidateEvaluator(study, objectives, Constraints(), planner=planner)
    rec, g = ev.evaluate(Architecture("angle-y", 6, 1, "ry", "linear"), generation=0)
    assert not rec.feasible and g[0] > 0
    assert math.isnan(rec.objectives["runtime_s"]) and "fake_manila" in rec.details["error"]
    assert ev.objective_vector(rec)[0] > 1e9  # pymoo never sees NaN
    rec2, _ = ev.evaluate(Architecture("angle-y", 3, 1, "ry", "linear"), generation=0)
    assert rec2.feasible and rec2.objectives["subcircuits"] == 1.0
    # the cache: asking again evaluates nothing
    ev.evaluate(Architecture("angle-y", 3, 1, "ry", "linear"), generation=5)
    assert (ev.evaluated, ev.reused, ev.failed) == (2, 1, 1)
    assert study.get_candidate(Architecture("angle-y", 3, 1, "ry", "linear"), ev.settings_key).generation == 0


# ------------------------------------------------------------------- search
@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    out = tmp_path_factory.mktemp("tiny")
    return run_search(_cfg(), out, progress=False)


def test_search_study_is_complete_and_consistent(tiny_study: Study) -> None:
    study = tiny_study
    cfg = config_from_dict(study.config)
    assert study.objective_names == ["val_error", "runtime_s", "subcircuits"]
    gens = study.generations()
    assert [g.index for g in gens] == list(range(cfg.search.generations))
    cands = study.candidates()
    names = [c.arch.canonical() for c in cands]
    assert len(names) == len(set(names)), "an architecture was stored twice"
    stored = set(names)
    for g in gens:
        assert len(g.population) == cfg.search.pop_size
        assert set(g.population) <= stored
    # the recorded generation of a candidate is when it was first evaluated
    first_seen: dict[str, int] = {}
    assert all(c.generation < cfg.search.generations for c in cands)
    for c in cands:
        first_seen.setdefault(c.arch.canonical(), c.generation)
        ve = c.details["val_error"]
        if math.isnan(c.objectives["val_error"]):  # a cut plan too large to score under noise: no accuracy at all
            assert "skipped" in ve["accuracy"] and math.isnan(ve["val_acc"]) and not c.feasible
        else:
            assert c.objectives["val_error"] == pytest.approx(1 - ve["val_acc"])
        assert c.objectives["subcircuits"] == c.details["subcircuits"]["n_subcircuits"]
        cons = c.details["constraints"]
        assert c.feasible == (all(v <= 0 for v in cons["G"]) and all(math.isfinite(v) for v in c.objectives.values()))
    # the final front is the non-dominated set (by definition) of all usable candidates
    usable = [c for c in cands if c.feasible and all(math.isfinite(v) for v in c.objectives.values())]
    F = np.array([[c.objectives[n] for n in study.objective_names] for c in usable])
    expected = {usable[i].arch.canonical() for i in naive_front(F)}
    assert {cands[i].arch.canonical() for i in archive_front(cands, study.objective_names)} == expected
    # the generation record holds the front users see (ties within resolution collapsed), a subset of that
    shown = study_front(cands, study.objective_names)
    assert gens[-1].front == shown.architectures() and set(shown.exact_architectures()) == expected
    assert set(gens[-1].front) <= expected and gens[-1].front
    assert gens[-1].hypervolume is not None and gens[-1].hypervolume > 0
    run = study.runs()[-1]
    assert run["evaluated"] == len(cands) and run["failed"] == 0
    # the supercircuit checkpoint and per-candidate weights live next to the study
    assert (study.path.parent / "supercircuit.pt").is_file()
    assert len(list((study.path.parent / "weights").glob("*.pt"))) == len(cands)


def test_stored_values_match_a_fresh_evaluation(tiny_study: Study) -> None:
    """The cache returns what the objectives compute now (hardware objectives rebuilt from the config)."""
    cfg = config_from_dict(tiny_study.config)
    cfg_hw = config_from_dict(
        {**cfg.resolved(), "search": {**cfg.resolved()["search"], "objectives": ["runtime_s", "subcircuits"]}}
    )
    objectives = build_objectives(cfg_hw, None)
    for c in tiny_study.candidates()[:4]:
        for obj in objectives:
            assert obj.evaluate(c.arch).value == pytest.approx(c.objectives[obj.name], rel=1e-12)


def test_resume_of_finished_study_does_nothing(tiny_study: Study) -> None:
    before = tiny_study.n_candidates()
    again = run_search(None, resume=tiny_study.path, progress=False)
    assert again.n_candidates() == before
    assert again.runs()[-1]["evaluated"] == 0


def test_resume_refuses_a_different_config(tiny_study: Study) -> None:
    other = _cfg(search={"pop_size": 8})
    with pytest.raises(SearchError, match="different configuration"):
        run_search(other, resume=tiny_study.path, progress=False)


def test_new_search_refuses_existing_study(tiny_study: Study) -> None:
    with pytest.raises(StudyError, match="already exists"):
        run_search(_cfg(), tiny_study.path.parent, progress=False)


def test_space_wider_than_device_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(hardware={"backend": "fake_manila", "qubit_budget": 3}, space={"qubits": [2, 6]})
    with pytest.raises(SearchError, match="fake_manila's 5 qubits"):
        run_search(cfg, tmp_path, progress=False)


# --------------------------------------------------------------- kill test
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "qnas_hw.cli", "search", "--no-progress", *args]


def _progress(path: Path) -> tuple[int, int]:
    """(completed generations, stored candidates), read through a separate read-only connection."""
    if not path.is_file():
        return 0, 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            gens = conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
            cands = conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # tables not created yet
        return 0, 0
    return int(gens), int(cands)


def _snapshot(study: Study) -> dict:
    return {
        "candidates": {c.arch.canonical(): (c.objectives, c.generation, c.feasible) for c in study.candidates()},
        "generations": [(g.index, g.population, g.front) for g in study.generations()],
    }


def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    n_gen = 4
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    ref_dir, victim_dir = tmp_path / "reference", tmp_path / "victim"
    # output to files, not pipes: a full pipe would block a child and the test would wait forever
    ref_log, victim_log = (tmp_path / "reference.log").open("wb"), (tmp_path / "victim.log").open("wb")
    reference = subprocess.Popen(
        _cli("--config", str(config), "--out", str(ref_dir)), env=env, stdout=ref_log, stderr=subprocess.STDOUT
    )
    victim = subprocess.Popen(
        _cli("--config", str(config), "--out", str(victim_dir)), env=env, stdout=victim_log, stderr=subprocess.STDOUT
    )
    study_path = victim_dir / "study.sqlite"
    killed_at: tuple[int, int] | None = None
    deadline = time.monotonic() + 300
    gen0_size = None
    while time.monotonic() < deadline and victim.poll() is None:
        gens, cands = _progress(study_path)
        if gens >= 1 and gen0_size is None:
            gen0_size = cands
        # kill inside a later generation: at least one generation committed, some of the next one stored
        if gen0_size is not None and 1 <= gens < n_gen and cands > gen0_size:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed_at = _progress(study_path)
            break
        time.sleep(0.02)
    if killed_at is None:
        reference.kill()
        victim.wait()
        log = (tmp_path / "victim.log").read_text()[-3000:]
        pytest.fail(f"victim was not caught mid-run (rc={victim.returncode}); output:\n{log}")
    assert victim.returncode == -signal.SIGKILL
    gens_at_kill, cands_at_kill = killed_at
    assert 1 <= gens_at_kill < n_gen

    resumed = subprocess.run(_cli("--resume", str(study_path)), env=env, capture_output=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    reference.wait(timeout=300)
    assert reference.returncode == 0, (tmp_path / "reference.log").read_text()[-3000:]

    ref, res = Study.open(ref_dir / "study.sqlite"), Study.open(study_path)
    # every candidate exactly once (also by primary key, not only by the dict below)
    names = [c.arch.canonical() for c in res.candidates()]
    assert len(names) == len(set(names))
    a, b = _snapshot(ref), _snapshot(res)
    assert b["candidates"] == a["candidates"]  # same archs, same objective values, same generations
    assert b["generations"] == a["generations"]  # same populations and fronts in every generation
    assert res.generations()[-1].front == ref.generations()[-1].front
    # nothing repeated, nothing lost: the resumed process evaluated exactly what the victim had not stored
    run = res.runs()[-1]
    assert run["resumed_from_generation"] == gens_at_kill - 1
    assert run["evaluated"] == res.n_candidates() - cands_at_kill
    assert b"candidates evaluated" in resumed.stdout


def _runtime_evaluator(study: Study, backend_name: str) -> CandidateEvaluator:
    backend = get_backend(backend_name)
    objective = RuntimeCostObjective(backend, Transpiler(backend), CostModel.for_backend(backend))
    return CandidateEvaluator(study, [objective], Constraints(cut_plan=False), settings_key="k")


def test_stored_failure_is_retried_once_by_a_later_process(tmp_path: Path) -> None:
    """A failure stored by one run (here: 6 qubits on the 5-qubit fake_manila) gets one fresh try in the next.

    The second evaluator stands for a resumed process in which the cause is gone (the 7-qubit fake_nairobi
    under the same settings key): the stored failure is replaced by the real result, the old error kept
    beside it; within one process the same failure is never evaluated twice.
    """
    cfg = _cfg(hardware={"backend": "fake_manila", "qubit_budget": 3})
    study = Study.create(tmp_path / "s.sqlite", cfg.resolved(), objective_names=["runtime_s"])
    arch = Architecture("angle-y", 6, 1, "ry", "linear")
    first = _runtime_evaluator(study, "fake_manila")
    rec, _ = first.evaluate(arch, generation=0)
    assert "fake_manila" in rec.details["error"] and not rec.feasible
    first.evaluate(arch, generation=1)
    assert (first.evaluated, first.reused, first.retried) == (1, 1, 0)  # same process: the failure is reused
    second = _runtime_evaluator(study, "fake_nairobi")
    rec2, _ = second.evaluate(arch, generation=3)
    assert second.retried == 1 and "error" not in rec2.details and rec2.feasible
    assert rec2.details["previous_error"] == rec.details["error"] and rec2.generation == 0
    assert rec2.objectives["runtime_s"] == second.objectives[0].evaluate(arch).value > 0
    assert len(study.candidates(settings_key="k")) == 1
    ids = [r[0] for r in sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT id FROM candidates")]
    assert ids == [1]  # replaced in place: the study's order is kept
    second.evaluate(arch, generation=4)
    assert (second.evaluated, second.reused, second.retried) == (1, 1, 1)


# --------------------------------------------------------- issue 14: caps, extension, one hypervolume box
def test_candidate_cost_caps_are_constraints_in_decades_over_the_cap() -> None:
    c = Constraints(max_runtime_s=3600.0, max_usd=100.0)
    assert c.names == ["evaluation", "cut_plan", "max_candidate_runtime_s", "max_candidate_usd"]
    a = Architecture("angle-y", 3, 1, "ry", "ring")
    assert c.values(a, {"runtime_s": 36000.0, "usd": 10.0}) == pytest.approx([0.0, 0.0, 1.0, -1.0])
    assert c.values(a, {"runtime_s": math.inf, "usd": 1.0})[2] > 1e5  # an infinite prediction is infeasible
    assert c.values(a, {"failed": True})[2:] == [0.0, 0.0]  # already infeasible through "evaluation"


def test_a_plan_needing_days_of_qpu_time_is_infeasible(tmp_path: Path) -> None:
    """The issue's example: angle-y|q5|l3|rx-ry|ring|z under a 4-qubit budget is within gamma <= 1024 yet weeks long."""
    cfg = _cfg(hardware={"qubit_budget": 4}, search={"objectives": ["runtime_s", "subcircuits"]})
    backend = get_backend(cfg.hardware.backend)
    study = Study.create(tmp_path / "s.sqlite", cfg.resolved(), objective_names=["runtime_s", "subcircuits"])
    planner = CutPlanner(4, seed=0, max_qubits=backend.num_qubits)
    objectives = [
        RuntimeCostObjective(backend, Transpiler(backend), CostModel.for_backend(backend), cut_planner=planner),
        SubcircuitObjective(planner),
    ]
    caps = Constraints(max_runtime_s=cfg.hardware.max_candidate_runtime_s)
    ev = CandidateEvaluator(study, objectives, caps, planner=planner)
    long, _ = ev.evaluate(Architecture.parse("angle-y|q5|l3|rx-ry|ring|z"), generation=0)
    constraints = long.details["constraints"]
    assert constraints["cut_plan"] <= 0  # the plan is within the planner's gamma cap: only the runtime cap stops it
    assert long.objectives["runtime_s"] > 86400 and constraints["max_candidate_runtime_s"] > 1 and not long.feasible
    short, _ = ev.evaluate(Architecture.parse("angle-y|q4|l1|ry|linear|z"), generation=0)
    assert short.feasible and short.details["constraints"]["max_candidate_runtime_s"] < 0


def test_generations_extend_a_finished_study_exactly(tmp_path: Path) -> None:
    """search 2 generations, then --resume --generations 3 == a straight 3-generation search."""
    short = run_search(_cfg(search={"generations": 2}), tmp_path / "a", progress=False)
    short.close()
    with pytest.raises(SearchError, match="extended, not shortened"):
        run_search(None, resume=tmp_path / "a" / "study.sqlite", progress=False, generations=1)
    extended = run_search(None, resume=tmp_path / "a" / "study.sqlite", progress=False, generations=3)
    straight = run_search(_cfg(search={"generations": 3}), tmp_path / "b", progress=False)
    assert len(extended.generations()) == 3
    assert _snapshot(extended) == _snapshot(straight)
    assert [g.hypervolume for g in extended.generations()] == [g.hypervolume for g in straight.generations()]


def test_one_hypervolume_box_for_log_study_and_report(tiny_study: Study, tmp_path: Path) -> None:
    from qnas_hw.reports.data import hypervolume_history
    from qnas_hw.reports.report import write_report
    from qnas_hw.search.pareto import HV_BOX_META

    box = tiny_study.meta_json(HV_BOX_META)
    assert box is not None and [a["name"] for a in box["axes"]] == tiny_study.objective_names
    runtime = next(a for a in box["axes"] if a["name"] == "runtime_s")
    assert runtime["log"] and runtime["nadir"] == 3600.0  # the configured per-candidate cap
    stored = [(g.index, g.hypervolume) for g in tiny_study.generations()]
    history = hypervolume_history(tiny_study)
    assert [i for i, _ in history] == [i for i, _ in stored]
    assert [v for _, v in history] == pytest.approx([v for _, v in stored])
    assert stored[0][1] < stored[-1][1] or stored[0][1] < 1.1**3 * 0.99  # not saturated at generation 0
    write_report(tiny_study, tmp_path / "rep")
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {k: v for k, v in report["hypervolume_box"].items() if k != "source"} == box
    # per generation, the report repeats the study's record: the same 1-based number, the same front
    gens = tiny_study.generations()
    assert [(g["generation"], g["front"]) for g in report["generations"]] == [(g.number, len(g.front)) for g in gens]
    assert [h["generation"] for h in report["hypervolume"]] == [g.number for g in gens] == [1, 2, 3]


def test_a_search_that_runs_out_of_architectures_stops_cleanly(tmp_path: Path) -> None:
    """6 architectures, 4 per generation: generation 2 has none left to propose; the study keeps all 6."""
    config = _cfg(
        space={
            "qubits": [2, 2],
            "layers": [1, 1],
            "embeddings": ["angle-y"],
            "rotations": ["ry", "rx-ry", "ry-rz"],
            "entanglers": ["none", "linear"],
        },
        search={"pop_size": 4, "generations": 5, "objectives": ["val_error", "subcircuits"], "accuracy": "ideal"},
    )
    study = run_search(config, tmp_path / "run", progress=False)
    names = {c.arch.canonical() for c in study.candidates()}
    assert len(names) == 6  # the whole space, each once
    assert 1 <= len(study.generations()) < 5
    study.close()
