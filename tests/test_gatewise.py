"""Gate-by-gate simulation: new embeddings against qiskit Statevector, and the noisy density matrix against Aer.

References: ``qiskit.quantum_info.Statevector`` (exact, noiseless) and Aer's
density-matrix simulator running the *same simplified noise model* (the
depolarising strengths and readout errors of a :class:`GateNoise`) on the
logical circuit: the two must agree to 1e-6, since both are exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit.quantum_info import Statevector

from qnas_hw.hardware.backends import get_backend
from qnas_hw.model.circuits import bind, build_circuit, circuit_inputs, gate_program, observables
from qnas_hw.model.gatewise import SX_PER_ROTATION, GateNoise, GatewisePlan, noise_from_target
from qnas_hw.model.hqnn import HQNN
from qnas_hw.model.simulator import QuantumLayer, SimulatorPlan
from qnas_hw.model.space import Architecture

NEW = [
    "4x4-ryzxy|q4|l2|ry-rz|ring",
    "4x4-ryzxy-ru|q4|l2|rx-ry|linear",
    "angle-y-ru|q3|l3|ry|full",
    "angle-x-ru|q2|l2|rx-ry-rz|linear",
    "angle-z-ru|q3|l2|ry-rz|sparse",
]


def _reference(arch: Architecture, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    qc = build_circuit(arch)
    out = []
    for row in x:
        sv = Statevector(bind(qc, arch, row, w))
        out.append([sv.expectation_value(o).real for o in observables(arch)])
    return np.array(out)


@pytest.mark.parametrize("text", NEW)
def test_new_embeddings_match_statevector(text: str) -> None:
    arch = Architecture.parse(text)
    rng = np.random.default_rng(1)
    x = rng.uniform(-np.pi, np.pi, (4, arch.n_inputs))
    w = rng.uniform(0, 2 * np.pi, arch.n_weights)
    ref = _reference(arch, circuit_inputs(arch, x), w)
    layer = QuantumLayer(arch, dtype=torch.float64)
    got = layer.plan.expectations(torch.as_tensor(x), torch.as_tensor(w)).detach().numpy()
    assert np.abs(got - ref).max() < 1e-5
    gatewise = GatewisePlan(arch, dtype=torch.float64).expectations(torch.as_tensor(x), torch.as_tensor(w))
    assert np.abs(gatewise.numpy() - ref).max() < 1e-5
    if not arch.embedding.endswith("-ru"):  # the fused plan runs the 4x4 encoder itself (a product-state prefix)
        assert isinstance(layer.plan, SimulatorPlan)


def test_gatewise_gradients_are_exact() -> None:
    arch = Architecture.parse("angle-y-ru|q3|l2|rx-ry|linear")
    plan = GatewisePlan(arch, dtype=torch.float64)
    x = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(arch.n_weights, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: plan.expectations(a, b), (x, w))
    noisy = GatewisePlan(
        arch, dtype=torch.float64, noise=GateNoise((0.01, 0.02, 0.03), {(0, 1): 0.05}, (0.01,) * 3, (0.02,) * 3)
    )
    assert torch.autograd.gradcheck(lambda a, b: noisy.expectations(a, b), (x, w))


def _aer_reference(arch: Architecture, noise: GateNoise, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Aer density matrix, exact probabilities, with the same channels attached to the same logical gates."""
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    model = NoiseModel(basis_gates=["rx", "ry", "rz", "h", "cx", "rzz"])
    for q in range(arch.n_qubits):
        for gate in ("rx", "ry", "h"):
            lam = noise.one_qubit(gate, q)
            if lam > 0:
                model.add_quantum_error(depolarizing_error(lam, 1), gate, [q])
    for (a, b), lam in noise.two.items():
        for pair in ((a, b), (b, a)):
            model.add_quantum_error(depolarizing_error(lam, 2), ["cx", "rzz"], list(pair))
    sim = AerSimulator(method="density_matrix", noise_model=model)
    qc = build_circuit(arch)
    z = np.array([1.0 - 2.0 * ((k >> np.arange(arch.n_qubits)) & 1) for k in range(2**arch.n_qubits)])
    out = []
    for row in x:
        bound = bind(qc, arch, row, w)
        bound.save_probabilities(label="p")
        probs = sim.run(bound, shots=1).result().data(0)["p"]  # the logical gates themselves, not transpiled
        out.append(np.asarray(probs) @ z)
    out = np.array(out)
    p01, p10 = np.array(noise.p01), np.array(noise.p10)
    return out * (1 - p01 - p10) + (p10 - p01)


@pytest.mark.parametrize("text", ["angle-y-ru|q3|l2|rx-ry|linear", "iqp|q3|l1|ry|ring", "4x4-ryzxy|q2|l2|ry-rz|full"])
def test_noisy_density_matrix_matches_aer_with_the_same_noise_model(text: str) -> None:
    arch = Architecture.parse(text)
    n = arch.n_qubits
    noise = GateNoise(
        one=tuple(0.004 * (q + 1) for q in range(n)),
        two={(a, b): 0.02 + 0.01 * (a + b) for a in range(n) for b in range(a + 1, n)},
        p01=tuple(0.01 + 0.005 * q for q in range(n)),
        p10=tuple(0.03 - 0.005 * q for q in range(n)),
    )
    rng = np.random.default_rng(3)
    x = rng.uniform(-np.pi, np.pi, (3, arch.n_inputs))
    w = rng.uniform(0, 2 * np.pi, arch.n_weights)
    plan = GatewisePlan(arch, dtype=torch.float64, noise=noise)
    got = plan.expectations(torch.as_tensor(x), torch.as_tensor(w)).numpy()
    ref = _aer_reference(arch, noise, circuit_inputs(arch, x), w)
    assert np.abs(got - ref).max() < 1e-6, np.abs(got - ref).max()
    exact = _reference(arch, circuit_inputs(arch, x), w)
    assert np.abs(got - exact).max() > 1e-3  # the noise is real: the comparison above is between noisy runs


def test_noise_from_a_device_target_is_the_placed_qubits_errors() -> None:
    backend = get_backend("fake_quito")
    noise = noise_from_target(backend.target, [3, 1, 0, 2])
    sx = backend.target["sx"][(3,)].error
    assert noise.one[0] == pytest.approx(2 * sx) and noise.one_qubit("rz", 0) == 0.0
    assert noise.one_qubit("ry", 0) == pytest.approx(1 - (1 - 2 * sx) ** SX_PER_ROTATION["ry"])
    cx = backend.target["cx"][(1, 3)].error
    assert noise.two_qubit(0, 1) == pytest.approx(4 / 3 * cx)  # logical 0-1 sit on coupled physical 3-1
    uncoupled = noise.two_qubit(0, 2)  # physical 3 and 0 are not coupled on quito: a SWAP's cost is added
    assert uncoupled > noise.two_qubit(0, 1)


def test_noise_aware_model_trains_and_scores_exactly_again_after() -> None:
    arch = Architecture.parse("4x4-ryzxy|q4|l1|ry|linear")
    model = HQNN(arch, (16,), 4, frontend="none", seed=0)
    assert model.head.bias is None and model.head.weight.numel() == 4 * 4  # <= n_qubits x classes weights
    x = torch.rand(5, 16)
    exact = model(x).detach()
    model.quantum.set_noise(noise_from_target(get_backend("fake_quito").target, [0, 1, 2, 3]))
    noisy = model(x).detach()
    assert not torch.allclose(noisy, exact)
    model.quantum.set_noise(None)
    assert torch.allclose(model(x).detach(), exact)
    assert [g.name for g in gate_program(arch)[:8]] == ["ry"] * 4 + ["rz"] * 4  # QuantumNAS's 4x4_ryzxy order
