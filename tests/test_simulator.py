"""The torch simulator against qiskit's Statevector of the circuit module's bound circuit (independent reference)."""

import itertools
import math

import numpy as np
import pytest
import torch
from qiskit.quantum_info import Statevector

from qnas_hw.model.circuits import bind, build_circuit
from qnas_hw.model.simulator import QuantumLayer, SimulatorPlan
from qnas_hw.model.space import EMBEDDINGS, ENTANGLERS, ROTATIONS, Architecture, SpaceError

# the fused plan's embeddings; re-uploading ones run gate by gate (qnas_hw.model.gatewise, tested in test_gatewise.py)
COMBOS = list(itertools.product([e for e in EMBEDDINGS if not e.endswith("-ru")], ROTATIONS, ENTANGLERS))


def _random_arch(emb: str, rot: str, ent: str, seed: int, max_qubits: int = 10) -> Architecture:
    rng = np.random.default_rng(seed)
    # Amplitude circuits' RY-tree expressions grow as 2**n per angle; keep qiskit's binding cheap there.
    hi = min(max_qubits, 7) if emb == "amplitude" else max_qubits
    return Architecture(emb, int(rng.integers(2, hi + 1)), int(rng.integers(1, 4)), rot, ent)


def _inputs(arch: Architecture, batch: int, rng: np.random.Generator) -> np.ndarray:
    if arch.embedding == "amplitude":
        k = int(rng.integers(1, arch.n_inputs + 1))  # short rows must be zero-padded
        return rng.normal(size=(batch, k))
    return rng.uniform(-math.pi, math.pi, size=(batch, arch.n_inputs))


def _reference(arch: Architecture, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    qc = build_circuit(arch)
    states = np.stack([Statevector(bind(qc, arch, row, w)).data for row in x])
    z = 1.0 - 2.0 * ((np.arange(2**arch.n_qubits)[:, None] >> np.arange(arch.n_qubits)) & 1)
    return states, (np.abs(states) ** 2) @ z


@pytest.mark.parametrize(("emb", "rot", "ent"), COMBOS, ids=["-".join(c) for c in COMBOS])
def test_matches_qiskit_statevector(emb, rot, ent):
    seed = COMBOS.index((emb, rot, ent))
    arch = _random_arch(emb, rot, ent, seed)
    rng = np.random.default_rng(1000 + seed)
    x = _inputs(arch, 3, rng)
    w = rng.uniform(0, 2 * math.pi, arch.n_weights)
    ref_state, ref_z = _reference(arch, x, w)

    plan64 = SimulatorPlan(arch, dtype=torch.float64)
    state = plan64.state(torch.tensor(x), torch.tensor(w)).numpy()
    np.testing.assert_allclose(state, ref_state, atol=1e-5, rtol=0, err_msg=str(arch))
    z64 = plan64.expectations(torch.tensor(x), torch.tensor(w)).numpy()
    np.testing.assert_allclose(z64, ref_z, atol=1e-5, rtol=0, err_msg=str(arch))

    plan32 = SimulatorPlan(arch, dtype=torch.float32)
    z32 = plan32.expectations(torch.tensor(x, dtype=torch.float32), torch.tensor(w, dtype=torch.float32))
    assert z32.dtype == torch.float32
    np.testing.assert_allclose(z32.numpy(), ref_z, atol=1e-4, rtol=0, err_msg=str(arch))


@pytest.mark.parametrize("n", [8, 10])
def test_wide_ring_circuits_match_qiskit(n):
    rng = np.random.default_rng(n)
    for emb in ("angle-x", "iqp"):
        arch = Architecture(emb, n, 2, "rx-ry-rz", "ring")
        x = _inputs(arch, 2, rng)
        w = rng.uniform(0, 2 * math.pi, arch.n_weights)
        ref_state, ref_z = _reference(arch, x, w)
        plan = SimulatorPlan(arch, dtype=torch.float64)
        np.testing.assert_allclose(plan.state(torch.tensor(x), torch.tensor(w)).numpy(), ref_state, atol=1e-8)
        np.testing.assert_allclose(plan.expectations(torch.tensor(x), torch.tensor(w)).numpy(), ref_z, atol=1e-8)


def test_all_zero_amplitude_row_prepares_ground_state_like_the_circuit():
    arch = Architecture("amplitude", 3, 1, "ry", "ring")
    x = np.zeros((1, 5))
    w = np.linspace(0.1, 1.0, arch.n_weights)
    ref_state, ref_z = _reference(arch, x, w)
    plan = SimulatorPlan(arch, dtype=torch.float64)
    np.testing.assert_allclose(plan.state(torch.tensor(x), torch.tensor(w)).numpy(), ref_state, atol=1e-10)
    np.testing.assert_allclose(plan.expectations(torch.tensor(x), torch.tensor(w)).numpy(), ref_z, atol=1e-10)


def test_real_fast_path_is_taken_only_for_real_circuits():
    assert SimulatorPlan(Architecture("angle-y", 4, 2, "ry", "ring")).real
    assert SimulatorPlan(Architecture("amplitude", 4, 2, "ry", "full")).real
    # The trailing RZ of the last layer cannot change <Z>, but the first layer's RZ can.
    assert not SimulatorPlan(Architecture("angle-y", 4, 2, "ry-rz", "ring")).real
    assert SimulatorPlan(Architecture("angle-y", 4, 1, "ry-rz", "ring")).real
    assert not SimulatorPlan(Architecture("angle-x", 4, 1, "ry", "ring")).real


GRAD_ARCHS = [
    Architecture("angle-y", 3, 2, "ry-rz", "ring"),
    Architecture("angle-x", 3, 2, "rx-ry-rz", "full"),
    Architecture("angle-z", 2, 2, "ry", "linear"),
    Architecture("iqp", 3, 1, "rx-ry", "sparse"),
    Architecture("amplitude", 3, 2, "ry", "ring"),
    Architecture("angle-y", 3, 2, "ry", "none"),
]


@pytest.mark.parametrize("arch", GRAD_ARCHS, ids=str)
def test_gradients_match_finite_differences(arch):
    rng = np.random.default_rng(7)
    plan = SimulatorPlan(arch, dtype=torch.float64)
    x = torch.tensor(_inputs(arch, 2, rng), requires_grad=True)
    w = torch.tensor(rng.uniform(0, 2 * math.pi, arch.n_weights), requires_grad=True)
    assert torch.autograd.gradcheck(plan.expectations, (x, w), eps=1e-6, atol=1e-6)


def test_layer_weights_come_from_the_generator():
    arch = Architecture("angle-y", 4, 2, "ry-rz", "ring")
    a = QuantumLayer(arch, generator=torch.Generator().manual_seed(3))
    b = QuantumLayer(arch, generator=torch.Generator().manual_seed(3))
    c = QuantumLayer(arch, generator=torch.Generator().manual_seed(4))
    assert a.weight.shape == (arch.n_weights,)
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, c.weight)
    assert float(a.weight.detach().min()) >= 0.0 and float(a.weight.detach().max()) < 2 * math.pi
    x = torch.rand(5, arch.n_inputs, generator=torch.Generator().manual_seed(0))
    out = a(x)
    assert out.shape == (5, arch.n_qubits)
    torch.testing.assert_close(out, a.plan.expectations(x, a.weight))
    out.sum().backward()
    assert a.weight.grad is not None and a.weight.grad.abs().sum() > 0


def test_bad_inputs_raise_clear_errors():
    plan = SimulatorPlan(Architecture("angle-y", 4, 2, "ry", "ring"))
    w = torch.zeros(8)
    with pytest.raises(SpaceError, match="exactly 4 features, got 3"):
        plan.expectations(torch.zeros(2, 3), w)
    with pytest.raises(SpaceError, match=r"shape \(batch, features\)"):
        plan.expectations(torch.zeros(4), w)
    with pytest.raises(SpaceError, match=r"weights of shape \(8,\), got \(2, 4\)"):
        plan.expectations(torch.zeros(2, 4), w.reshape(2, 4))
    amp = SimulatorPlan(Architecture("amplitude", 2, 1, "ry", "ring"))
    with pytest.raises(SpaceError, match="at most 4 features, got 5"):
        amp.expectations(torch.zeros(1, 5), torch.zeros(2))
    with pytest.raises(ValueError, match=r"float32 or torch\.float64"):
        SimulatorPlan(Architecture("angle-y", 2, 1, "ry", "ring"), dtype=torch.int32)


@pytest.mark.parametrize(
    "arch", [Architecture("angle-x", 7, 2, "rx-ry", "sparse"), Architecture("iqp", 5, 2, "ry-rz", "full")], ids=str
)
def test_every_chunk_width_gives_the_same_result(arch):
    rng = np.random.default_rng(11)
    x = torch.tensor(_inputs(arch, 4, rng))
    w = torch.tensor(rng.uniform(0, 2 * math.pi, arch.n_weights))
    ref = SimulatorPlan(arch, dtype=torch.float64, chunk=1).state(x, w)
    for chunk in range(2, arch.n_qubits + 2):
        torch.testing.assert_close(SimulatorPlan(arch, dtype=torch.float64, chunk=chunk).state(x, w), ref)
    with pytest.raises(ValueError, match="chunk must be a positive"):
        SimulatorPlan(arch, chunk=0)
