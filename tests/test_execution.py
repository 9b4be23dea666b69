"""Candidate programs: cut candidates rebuilt from their subexperiments agree with the uncut circuit.

Reference: the HQNN's own simulator (checked against qiskit ``Statevector``
elsewhere) on the uncut circuit; the subexperiments run on Aer without
noise (a QPD term's mid-circuit measurement deferred to an ancilla, whose
equality with Aer's own per-shot simulation is tested in ``test_noise.py``;
Aer would otherwise simulate every shot separately).  Tolerance, derived
once: the reconstruction is ``sum_j c_j prod_l e_jl`` over QPD terms ``j``
and subcircuits ``l``; each ``e_jl`` averages +-1 outcomes over ``s_j >= shots * gamma * |c_j|`` shots, so
``Var <= L * sum_j c_j**2 / s_j <= L / shots`` (``sum_j |c_j| = gamma``), and
5 standard errors are ``5 * sqrt(L / shots)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from qiskit_aer import AerSimulator

from qnas_hw.hardware.backends import get_backend
from qnas_hw.hardware.cutting import CutPlanner
from qnas_hw.hardware.execution import ProgramBuilder
from qnas_hw.hardware.noise import defer_measurements
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.model.hqnn import HQNN
from qnas_hw.model.space import Architecture
from qnas_hw.search.scoring import model_inputs

SHOTS = 20_000


def _run_ideal(program, inputs, weights) -> list[list[dict[str, int]]]:
    sim = AerSimulator(method="density_matrix", seed_simulator=11)
    out = []
    for run, values in zip(program.runs, program.parameter_values(inputs, weights), strict=True):
        circuit, _ = defer_measurements(run.circuit)
        binds = None
        if values is not None:
            binds = [{p: values[:, i].tolist() for i, p in enumerate(run.circuit.parameters)}]
        res = sim.run(circuit, parameter_binds=binds, shots=run.shots).result().get_counts()
        rows = res if isinstance(res, list) else [res]
        out.append([{k.replace(" ", ""): int(v) for k, v in r.items()} for r in rows])
    return out


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("angle-y|q4|l1|ry|linear", 2),  # one CNOT gate cut
        ("angle-x|q4|l2|ry-rz|sparse", 3),  # brickwork: gate cuts across two layers
        ("iqp|q3|l1|ry|none", 2),  # input-dependent RZZ(x_i x_j) cuts: coefficients per sample
        ("angle-y|q6|l1|ry|sparse", 3),  # no cut at all, three separate subcircuits
    ],
)
def test_reconstructed_expectations_match_the_uncut_circuit(text: str, budget: int) -> None:
    arch = Architecture.parse(text)
    backend = get_backend("aer_ideal")
    planner = CutPlanner(budget, seed=0)
    plan = planner.plan(arch)
    assert plan.is_cut and plan.feasible
    program = ProgramBuilder(backend, Transpiler(backend), planner, shots=SHOTS).build(arch)
    assert program.cut is not None and program.circuits_per_row == plan.n_subexperiments
    assert program.shots_per_row == plan.shots_per_row(SHOTS) >= SHOTS * plan.sampling_overhead
    rng = np.random.default_rng(4)
    X = torch.as_tensor(rng.normal(size=(5, arch.n_qubits)), dtype=torch.float32)
    model = HQNN(arch, (arch.n_qubits,), 3, frontend="linear", seed=2).eval()
    inputs, weights = model_inputs(model, X)
    z = program.expectations(_run_ideal(program, inputs, weights), inputs)
    with torch.no_grad():
        exact = model.quantum(model.encode(X)).numpy()
    tol = 5 * math.sqrt(len(program.cut.experiments) / SHOTS)
    assert np.abs(z - exact).max() < tol, (np.abs(z - exact).max(), tol)


def test_constant_coefficients_are_the_addons_and_sample_dependent_ones_differ() -> None:
    planner = CutPlanner(2, seed=0)
    cx = planner.execution(Architecture.parse("angle-y|q4|l1|ry|linear"))
    rows = np.random.default_rng(0).uniform(-1, 1, (3, 4))
    assert np.allclose(cx.coefficients(rows), [[c for c, _ in cx.addon_coefficients]] * 3)
    iqp = planner.execution(Architecture.parse("iqp|q3|l1|ry|none"))
    coeffs = iqp.coefficients(rows[:, :3])
    assert not np.allclose(coeffs, [[c for c, _ in iqp.addon_coefficients]] * 3)  # worst case only at x_i x_j = pi/2
    # each sample's coefficients sum in absolute value to its own gamma, at most the planned worst case
    assert np.all(np.abs(coeffs).sum(axis=1) <= math.sqrt(iqp.plan.sampling_overhead) + 1e-9)


def test_cut_program_details_place_every_subcircuit() -> None:
    """Each subcircuit is placed on its own, often on the same best qubits: the union alone ([24, 25] for five
    qubits) hid that; ``subcircuit_layouts`` keeps every subcircuit's qubits, in the plan's label order."""
    arch = Architecture.parse("angle-y|q5|l1|ry|none")  # no entangler: three separate pieces under a 2-qubit budget
    backend = get_backend("fake_belem")
    planner = CutPlanner(2, seed=0, max_qubits=backend.num_qubits)
    program = ProgramBuilder(backend, Transpiler(backend), planner, shots=1024).build(arch)
    details = program.details()
    pieces = details["subcircuit_layouts"]
    assert len(pieces) == planner.plan(arch).n_subcircuits == 3
    assert sorted(len(p) for p in pieces) == sorted(planner.plan(arch).subcircuit_widths)
    assert sorted({q for p in pieces for q in p}) == details["layout"]  # the union is still there, beside them
    assert ProgramBuilder(backend, Transpiler(backend), None, shots=1024).build(arch).subcircuit_layouts() == []
