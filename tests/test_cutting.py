"""Cut planning against qiskit-addon-cutting called directly, and cut-and-reconstruct against Statevector."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import PauliList, Statevector
from qiskit_addon_cutting import (
    cut_wires,
    expand_observables,
    generate_cutting_experiments,
    partition_problem,
    reconstruct_expectation_values,
)
from qiskit_addon_cutting.automated_cut_finding import DeviceConstraints, OptimizationParameters, find_cuts
from qiskit_aer import AerSimulator
from qiskit_aer.primitives import SamplerV2

import qnas_hw.hardware.cutting as cutting
from qnas_hw.hardware.cutting import CutPlanner, CuttingError
from qnas_hw.model.circuits import bind, build_circuit, observables
from qnas_hw.model.space import Architecture
from qnas_hw.search.objectives import SubcircuitObjective


def _direct(arch: Architecture, budget: int, seed: int = 0, labels: list[int] | None = None) -> dict:
    """The addon's own pipeline, written out here independently of qnas_hw.hardware.cutting.

    Inputs bound to sqrt(pi/2) (every IQP product is pi/2); weights a constant,
    since single-qubit angles cannot move a cut.
    """
    qc = build_circuit(arch)
    bound = qc.assign_parameters({p: (math.sqrt(math.pi / 2) if p.vector.name == "x" else 0.7) for p in qc.parameters})
    n = arch.n_qubits
    obs = PauliList(["I" * (n - 1 - q) + "Z" + "I" * q for q in range(n)])
    cut, meta = find_cuts(bound, OptimizationParameters(seed=seed), DeviceConstraints(qubits_per_subcircuit=budget))
    wired = cut_wires(cut)
    problem = partition_problem(
        circuit=wired, partition_labels=labels, observables=expand_observables(obs, bound, wired)
    )
    experiments, coefficients = generate_cutting_experiments(
        circuits=problem.subcircuits, observables=problem.subobservables, num_samples=np.inf
    )
    return {
        "n_cuts": len(meta["cuts"]),
        "gate_cuts": sum(kind == "Gate Cut" for kind, _ in meta["cuts"]),
        "wire_cuts": sum(kind == "Wire Cut" for kind, _ in meta["cuts"]),
        "sampling_overhead": meta["sampling_overhead"],
        "n_subcircuits": len(problem.subcircuits),
        "widths": sorted(c.num_qubits for c in problem.subcircuits.values()),
        "n_subexperiments": sum(len(v) for v in experiments.values()),
        "n_terms": len(coefficients),
    }


# (architecture, budget): every connected piece already fills its subcircuit, so the
# addon's default partition (connected components) is also the planner's packed one.
CASES = [
    ("angle-y|q6|l1|ry|linear", 4),  # one gate cut, pieces 4 + 2
    ("iqp|q4|l1|ry|sparse", 3),  # gate cuts on RZZ plus a wire cut (widths 3 + 2)
    ("angle-y|q6|l1|ry-rz|ring", 3),  # ring: two gate cuts
    ("angle-y|q4|l1|ry|full", 3),  # full entangler: three gate cuts, pieces 3 + 1
]


@pytest.mark.parametrize(("text", "budget"), CASES)
@pytest.mark.parametrize("materialize", [False, True])
def test_plan_matches_addon_called_directly(text: str, budget: int, materialize: bool) -> None:
    arch = Architecture.parse(text)
    expected = _direct(arch, budget)
    plan = CutPlanner(budget, seed=0, materialize=materialize).plan(arch)
    assert plan.feasible
    assert plan.n_cuts == expected["n_cuts"] > 0
    assert (plan.gate_cuts, plan.wire_cuts) == (expected["gate_cuts"], expected["wire_cuts"])
    assert plan.sampling_overhead == pytest.approx(expected["sampling_overhead"], rel=1e-9)
    assert plan.n_subcircuits == expected["n_subcircuits"]
    assert sorted(plan.subcircuit_widths) == expected["widths"]
    assert max(plan.subcircuit_widths) <= budget
    assert plan.n_subexperiments == expected["n_subexperiments"]


def test_wire_cut_case_really_has_a_wire_cut() -> None:
    """Guards CASES: without a wire cut the Move/expand_observables path would go untested."""
    plan = CutPlanner(3).plan(Architecture.parse("iqp|q4|l1|ry|sparse"))
    assert plan.wire_cuts >= 1 and sum(plan.subcircuit_widths) > 4


def test_unentangled_pieces_are_packed_into_budget_sized_subcircuits() -> None:
    arch = Architecture.parse("angle-y|q8|l2|ry|none")
    plan = CutPlanner(4).plan(arch)
    # the addon on its own splits into 8 single-qubit pieces; with explicit 4+4 labels it gives 2
    assert _direct(arch, 4)["n_subcircuits"] == 8
    packed = _direct(arch, 4, labels=[0, 0, 0, 0, 1, 1, 1, 1])
    assert (plan.n_subcircuits, plan.n_cuts, plan.sampling_overhead) == (2, 0, 1.0)
    assert plan.subcircuit_widths == (4, 4)
    assert plan.n_subexperiments == packed["n_subexperiments"] == 2


def test_circuit_that_fits_is_one_subcircuit_without_calling_the_optimiser(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("find_cuts must not run for a circuit that fits")

    monkeypatch.setattr(cutting, "find_cuts", refuse)
    arch = Architecture.parse("iqp|q5|l3|rx-ry-rz|full")
    plan = CutPlanner(5).plan(arch)
    assert (plan.n_subcircuits, plan.n_cuts, plan.sampling_overhead, plan.n_subexperiments) == (1, 0, 1.0, 1)
    assert plan.subcircuit_widths == (5,) and plan.feasible
    result = SubcircuitObjective(CutPlanner(8)).evaluate(arch)
    assert result.value == 1.0 and result.details["feasible"] is True


def test_deterministic_for_a_seed_and_cached() -> None:
    arch = Architecture.parse("angle-y|q6|l2|ry-rz|ring")
    a, b = CutPlanner(3, seed=7), CutPlanner(3, seed=7)
    pa, pb = a.plan(arch), b.plan(arch)
    assert replace(pa, plan_seconds=0.0) == replace(pb, plan_seconds=0.0)
    assert (a.hits, a.misses) == (0, 1)
    again = a.plan(Architecture.parse("angle-y|q6|l2|ry-rz|ring"))
    assert again is pa and (a.hits, a.misses) == (1, 1)
    a.plan(Architecture.parse("angle-y|q6|l1|ry|linear"))
    assert (a.hits, a.misses) == (1, 2)


def test_settings_change_the_cache_and_objective_keys() -> None:
    a, b = CutPlanner(3, seed=0), CutPlanner(4, seed=0)
    arch = Architecture.parse("angle-y|q6|l1|ry|linear")
    assert a.cache_key(arch) != b.cache_key(arch)
    assert SubcircuitObjective(a).settings_key() != SubcircuitObjective(CutPlanner(3, seed=1)).settings_key()
    assert SubcircuitObjective(a).settings_key() != SubcircuitObjective(CutPlanner(3, max_gamma=64)).settings_key()


@pytest.mark.parametrize("budget", [0, -2, 2.5, True, "4", None])
def test_bad_budget_is_refused_with_the_fix(budget: object) -> None:
    with pytest.raises(CuttingError, match="qubit_budget"):
        CutPlanner(budget)  # type: ignore[arg-type]


def test_budget_above_device_size_is_refused() -> None:
    with pytest.raises(CuttingError, match=r"qubit_budget=30 exceeds the device's 27 qubits.*at most 27"):
        CutPlanner(30, max_qubits=27)
    assert CutPlanner(27, max_qubits=27).qubit_budget == 27


def test_bad_optimiser_settings_are_refused() -> None:
    with pytest.raises(CuttingError, match="max_gamma"):
        CutPlanner(4, max_gamma=0.5)
    with pytest.raises(CuttingError, match="max_backjumps"):
        CutPlanner(4, max_backjumps=-1)


def test_plan_beyond_max_gamma_is_infeasible_not_an_exception() -> None:
    arch = Architecture.parse("angle-y|q6|l2|ry-rz|ring")
    feasible = CutPlanner(3).plan(arch)
    assert feasible.feasible and feasible.gamma > 3  # needs more than one gate cut
    result = SubcircuitObjective(CutPlanner(3, max_gamma=3)).evaluate(arch)
    assert result.details["feasible"] is False
    assert result.details["sampling_overhead"] > 9
    assert "max_gamma=3" in result.details["reason"]
    assert result.value >= 2


def test_reconstruction_from_cut_subexperiments_matches_statevector() -> None:
    """Cut a real sample's circuit with the planner's pipeline, sample it on Aer, reconstruct <Z_q>.

    Each QPD term's estimate is a product of two independent sample means of
    +-1 outcomes (one per subcircuit), so its variance is at most
    2 / shots + 1 / shots**2; terms run as separate circuits, so the
    reconstruction's variance is at most sum(c_i**2) times that.  The
    tolerance is 4 standard errors (about 0.05 here; a dropped or sign-flipped
    term moves the result by far more).
    """
    arch = Architecture.parse("angle-y|q4|l1|ry-rz|linear")
    rng = np.random.default_rng(3)
    qc = build_circuit(arch)
    bound = bind(qc, arch, rng.uniform(0, np.pi, arch.n_inputs), rng.uniform(0, 2 * np.pi, arch.n_weights))
    planner = CutPlanner(2, seed=0)
    obs = cutting.observable_list(arch)
    problem, cuts, _ = planner.cut_problem(bound, obs)
    assert len(cuts) == 1 and len(problem.subcircuits) == 2
    assert planner.plan(arch).n_subcircuits == 2

    experiments, coefficients = generate_cutting_experiments(
        circuits=problem.subcircuits, observables=problem.subobservables, num_samples=np.inf
    )
    shots = 20_000
    sampler = SamplerV2.from_backend(AerSimulator(seed_simulator=11))
    results = {label: sampler.run(circs, shots=shots).result() for label, circs in experiments.items()}
    reconstructed = np.array(reconstruct_expectation_values(results, coefficients, problem.subobservables))

    exact = np.array([Statevector(bound).expectation_value(op).real for op in observables(arch)])
    assert sum(abs(c) for c, _ in coefficients) == pytest.approx(math.sqrt(planner.plan(arch).sampling_overhead))
    tol = 4 * math.sqrt(sum(c**2 for c, _ in coefficients) * (2 / shots + 1 / shots**2))
    assert np.max(np.abs(reconstructed - exact)) < tol, (reconstructed, exact, tol)
    assert np.max(np.abs(exact)) > 3 * tol  # the check is not trivially met by all-zero expectations


def test_runtime_cost_counts_every_subexperiment_and_prices_infeasible_plans() -> None:
    """RuntimeCostObjective counts a plan's circuits and allotted shots; an infeasible plan is priced as itself."""
    from qnas_hw.hardware.backends import get_backend
    from qnas_hw.hardware.cost import CostModel
    from qnas_hw.hardware.transpilation import Transpiler
    from qnas_hw.search.objectives import RuntimeCostObjective

    backend = get_backend("fake_kolkata")
    transpiler = Transpiler(backend, seed=0)
    model = CostModel.for_backend(backend)
    arch = Architecture.parse("angle-y|q6|l2|ry-rz|ring")

    def runtime(planner: CutPlanner | None):
        return RuntimeCostObjective(backend, transpiler, model, cut_planner=planner, shots=100, n_circuits=4).evaluate(
            arch
        )

    uncut, cut, infeasible = runtime(None), runtime(CutPlanner(3)), runtime(CutPlanner(3, max_gamma=3))
    plan = CutPlanner(3).plan(arch)
    ((p, count),) = plan.term_probabilities  # CNOT cuts: every QPD term has the same weight
    assert count * plan.experiments_per_term == plan.n_subexperiments
    assert cut.details["shots"] == 4 * plan.n_subexperiments * math.ceil(100 * plan.sampling_overhead * p - 1e-9)
    assert cut.details["circuits"] == 4 * plan.n_subexperiments
    assert cut.value > uncut.value
    bad = CutPlanner(3, max_gamma=3).plan(arch)
    assert infeasible.details["cut_feasible"] is False
    # priced as the plan it would take (never as the uncut circuit): shots x overhead per circuit group
    assert infeasible.details["shots"] == pytest.approx(4 * 100 * bad.sampling_overhead * bad.experiments_per_term)
    assert infeasible.value > uncut.value


def test_runtime_never_decreases_as_the_cutting_overhead_grows() -> None:
    """More layers of a ring on a 3-qubit budget: more cuts, more overhead, never a cheaper runtime."""
    from qnas_hw.hardware.backends import get_backend
    from qnas_hw.hardware.cost import CostModel
    from qnas_hw.hardware.transpilation import Transpiler
    from qnas_hw.search.objectives import RuntimeCostObjective

    backend = get_backend("fake_kolkata")
    planner = CutPlanner(3, seed=0)
    objective = RuntimeCostObjective(
        backend,
        Transpiler(backend, seed=0),
        CostModel.for_backend(backend),
        cut_planner=planner,
        shots=64,
        n_circuits=2,
    )
    rows = []
    for arch in (Architecture.parse(f"angle-y|q4|l{layers}|ry|linear") for layers in (1, 2, 3)):
        plan = planner.plan(arch)
        rows.append((plan.sampling_overhead, objective.evaluate(arch).value))
    rows.sort()
    overheads = [o for o, _ in rows]
    assert len(set(overheads)) == 3, rows  # the check can fail: three different overheads are compared
    assert [v for _, v in rows] == sorted(v for _, v in rows), rows


# ---------------------------------------------------------------- lower bound and precheck (issue #4 item 6)
def _random_circuit(rng: np.random.Generator) -> tuple[QuantumCircuit, int]:
    n = int(rng.integers(3, 7))
    qc = QuantumCircuit(n)
    for _ in range(int(rng.integers(2, 11))):
        a, b = (int(q) for q in rng.choice(n, 2, replace=False))
        kind = rng.random()
        if kind < 0.5:
            qc.cx(a, b)
        elif kind < 0.8:
            qc.rzz(float(rng.uniform(0, np.pi)), a, b)
        else:
            qc.cz(a, b)
        qc.ry(float(rng.uniform(0, 2 * np.pi)), a)
    return qc, int(rng.integers(2, n))


def test_relaxed_bound_never_exceeds_the_addons_proven_optimum() -> None:
    """The bound against find_cuts run to a proven optimum (no backjump limit) on seeded random circuits.

    The circuits mix CNOT, CZ and RZZ (gate gammas 3 and 1 + 2|sin|) on 3-6
    qubits with small budgets, so many optima use wire cuts (which let a
    qubit change subcircuit over time), the case the bound's argument has to
    get right (an early version that let a qubit open only one new set
    overstated the bound on 13 of 300 such circuits).
    """
    rng = np.random.default_rng(1)
    checked = tight = with_wire_cuts = 0
    for _ in range(60):
        qc, budget = _random_circuit(rng)
        _, meta = find_cuts(
            qc, OptimizationParameters(seed=0, max_gamma=1e9, max_backjumps=None), DeviceConstraints(budget)
        )
        if not meta["minimum_reached"]:
            continue
        optimum = math.sqrt(meta["sampling_overhead"])
        bound = cutting.relaxed_gamma_bound(qc, budget)
        assert bound is not None and bound <= optimum * (1 + 1e-9), (qc, budget, bound, optimum, meta["cuts"])
        checked += 1
        tight += math.isclose(bound, optimum, rel_tol=1e-9)
        with_wire_cuts += any(kind == "Wire Cut" for kind, _ in meta["cuts"])
    assert checked >= 50 and with_wire_cuts >= 5
    assert tight >= checked // 2  # the bound is not vacuous


def test_bound_prices_cuts_as_the_plans_bases_do() -> None:
    """The bound's wire-cut price is the kappa of the basis cut_wires uses; a gate's is its own basis kappa."""
    from qiskit.circuit.library import CXGate
    from qiskit_addon_cutting.instructions import Move
    from qiskit_addon_cutting.qpd import QPDBasis

    assert QPDBasis.from_instruction(Move()).kappa == cutting.WIRE_CUT_GAMMA
    qc = QuantumCircuit(2)
    qc.cx(0, 1)
    qc.rzz(0.3, 0, 1)
    expected = math.log(QPDBasis.from_instruction(CXGate()).kappa) + math.log(1 + 2 * abs(math.sin(0.3)))
    assert cutting.pair_log_gammas(qc)[0, 1] == pytest.approx(expected)


def test_relaxed_bound_known_values_cap_and_node_limit() -> None:
    full = cutting.representative_circuit(Architecture.parse("angle-y|q4|l1|ry|full"))
    # K4 of CNOTs into sets of 3: cutting the 3 gates of one qubit (27) beats any wire-cut cover (>= 4 * 4 * 3)
    assert cutting.relaxed_gamma_bound(full, 3) == pytest.approx(27.0)
    assert math.sqrt(_direct(Architecture.parse("angle-y|q4|l1|ry|full"), 3)["sampling_overhead"]) == pytest.approx(27)
    assert cutting.relaxed_gamma_bound(full, 3, cap=26.9) == math.inf
    assert cutting.relaxed_gamma_bound(full, 3, cap=27.1, first_below_cap=True) <= 27.1
    assert cutting.relaxed_gamma_bound(full, 4) == 1.0  # fits: no cut
    assert cutting.relaxed_gamma_bound(full, 3, node_limit=0) is None
    unentangled = cutting.representative_circuit(Architecture.parse("angle-y|q8|l2|ry|none"))
    assert cutting.relaxed_gamma_bound(unentangled, 2) == 1.0


# (architecture, budget, max_gamma): infeasible by the bound, quick for the full search
PRECHECK_CASES = [
    ("angle-y|q6|l2|ry-rz|ring", 3, 3),
    ("angle-y|q4|l1|ry|full", 3, 26),
    ("iqp|q4|l1|ry|sparse", 3, 20),
    ("iqp|q5|l1|ry|full", 3, 100),
]


@pytest.mark.parametrize(("text", "budget", "max_gamma"), PRECHECK_CASES)
def test_precheck_gives_the_full_searchs_plan(text: str, budget: int, max_gamma: float) -> None:
    arch = Architecture.parse(text)
    checked = CutPlanner(budget, max_gamma=max_gamma).plan(arch)
    full = CutPlanner(budget, max_gamma=max_gamma, precheck=False).plan(arch)
    assert not full.feasible and not checked.feasible
    assert checked.infeasible_proven and not full.infeasible_proven
    assert checked.figures() == full.figures()
    assert (
        "lower bound" in checked.reason
        and SubcircuitObjective(CutPlanner(budget, max_gamma=max_gamma)).evaluate(arch).details["infeasible_proven"]
    )


def test_precheck_runs_only_the_greedy_pass_and_never_on_feasible_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int | None] = []

    def recording(circuit: QuantumCircuit, optimization: OptimizationParameters, constraints: DeviceConstraints):
        seen.append(optimization.max_backjumps)
        return find_cuts(circuit, optimization, constraints)

    monkeypatch.setattr(cutting, "find_cuts", recording)
    arch = Architecture.parse("angle-y|q6|l2|ry-rz|ring")
    assert CutPlanner(3, max_gamma=3).plan(arch).infeasible_proven
    assert CutPlanner(3).plan(arch).feasible  # the same candidate under the default gamma limit
    assert CutPlanner(3, max_gamma=3, precheck_node_limit=0).plan(arch).infeasible_proven is False
    assert seen == [0, 10000, 10000]


@pytest.mark.parametrize("case", CASES)
def test_precheck_leaves_feasible_plans_alone(case: tuple[str, int]) -> None:
    arch = Architecture.parse(case[0])
    a, b = CutPlanner(case[1]).plan(arch), CutPlanner(case[1], precheck=False).plan(arch)
    assert a.feasible and not a.infeasible_proven and a.figures() == b.figures()


@pytest.mark.parametrize("embedding", ["angle-x", "angle-y", "angle-z", "iqp", "amplitude"])
def test_bind_each_gate_gives_the_circuit_assign_parameters_gives(embedding: str) -> None:
    arch = Architecture.parse(f"{embedding}|q3|l2|rx-ry-rz|ring")
    qc = build_circuit(arch)
    values = {p: 0.1 + 0.37 * i for i, p in enumerate(qc.parameters)}
    assert cutting.bind_each_gate(qc, values) == qc.assign_parameters(values)


def test_bad_precheck_node_limit_is_refused() -> None:
    with pytest.raises(CuttingError, match="precheck_node_limit"):
        CutPlanner(4, precheck_node_limit=-1)


@pytest.mark.slow
@pytest.mark.parametrize("text", ["iqp|q8|l2|ry|none", "amplitude|q8|l2|ry-rz|ring"])
def test_precheck_matches_the_full_search_on_8_qubit_candidates(text: str) -> None:
    """The slow case the precheck exists for (10-50 s per candidate without it)."""
    arch = Architecture.parse(text)
    checked, full = CutPlanner(4).plan(arch), CutPlanner(4, precheck=False).plan(arch)
    assert checked.infeasible_proven and not checked.feasible
    assert checked.figures() == full.figures()


# ---------------------------------------------------------------- on-disk plan cache
def test_disk_cache_serves_a_second_planner_without_the_optimiser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arch = Architecture.parse("angle-y|q6|l2|ry-rz|ring")
    first = CutPlanner(3, cache_dir=tmp_path)
    plan = first.plan(arch)
    assert first.disk_hits == 0 and len(list(tmp_path.glob("plan-*.json"))) == 1

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stored plan must not be recomputed")

    monkeypatch.setattr(cutting, "find_cuts", refuse)
    second = CutPlanner(3, cache_dir=tmp_path)
    assert second.plan(arch) == plan  # every field, plan_seconds included
    assert second.cache_info() == {"hits": 0, "misses": 1, "disk_hits": 1, "size": 1}
    with pytest.raises(AssertionError, match="must not be recomputed"):
        CutPlanner(3, seed=1, cache_dir=tmp_path).plan(arch)  # another seed is another key


def test_disk_cache_round_trips_infeasible_plans_exactly(tmp_path: Path) -> None:
    arch = Architecture.parse("iqp|q5|l1|ry|full")
    plan = CutPlanner(3, max_gamma=100, cache_dir=tmp_path).plan(arch)
    assert not plan.feasible and plan.infeasible_proven
    again = CutPlanner(3, max_gamma=100, cache_dir=tmp_path)
    assert again.plan(arch) == plan and again.disk_hits == 1


def test_disk_cache_recomputes_corrupt_or_foreign_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    arch = Architecture.parse("angle-y|q6|l1|ry|linear")
    planner = CutPlanner(4, cache_dir=tmp_path)
    plan = planner.plan(arch)
    (path,) = tmp_path.glob("plan-*.json")
    path.write_text('{"key": "trunc')
    fresh = CutPlanner(4, cache_dir=tmp_path)
    assert replace(fresh.plan(arch), plan_seconds=0) == replace(plan, plan_seconds=0) and fresh.disk_hits == 0
    assert "unreadable cut-plan cache file" in caplog.text
    assert json.loads(path.read_text())["key"] == planner.disk_key(arch)  # rewritten whole
    record = json.loads(path.read_text())
    record["key"] = "someone else's plan"
    path.write_text(json.dumps(record))
    other = CutPlanner(4, cache_dir=tmp_path)
    assert replace(other.plan(arch), plan_seconds=0) == replace(plan, plan_seconds=0) and other.disk_hits == 0
    assert json.loads(path.read_text())["key"] == planner.disk_key(arch)


def test_hopeless_plan_details_survive_json_and_sqlite(tmp_path: Path) -> None:
    # a wide all-to-all circuit under a 4-qubit budget needs more subexperiments than a double can hold
    arch = Architecture.parse("amplitude|q8|l2|rx-ry|full|z")
    plan = CutPlanner(4).plan(arch)
    assert not plan.feasible and plan.n_subexperiments > 2**1100
    details = json.loads(json.dumps(plan.details()))
    assert details["n_subexperiments"] == math.inf and details["feasible"] is False
    result = SubcircuitObjective(CutPlanner(4)).evaluate(arch)
    assert result.details["n_subexperiments"] == math.inf
    assert cutting.json_count(2**53 - 1) == 2**53 - 1 and cutting.json_count(2**60) == float(2**60)
