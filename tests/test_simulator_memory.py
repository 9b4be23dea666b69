"""Memory checks of the simulators (estimated peak vs what they allocate; refusals before allocating), and 20 qubits."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from qiskit.quantum_info import Statevector

from qnas_hw.model import memory
from qnas_hw.model.circuits import AMPLITUDE_CIRCUIT_MAX_QUBITS, bind, build_circuit
from qnas_hw.model.gatewise import GateNoise, GatewisePlan
from qnas_hw.model.memory import SimulationMemoryError, available_bytes, check_fits
from qnas_hw.model.simulator import QuantumLayer, SimulatorPlan
from qnas_hw.model.space import MAX_QUBITS, Architecture, SearchSpace, SpaceError

#: Circuits whose state-sized buffers all come from the plan's workspace (no amplitude or IQP autograd copies).
WORKSPACE_ONLY = [
    Architecture("angle-y", 8, 2, "ry-rz", "ring"),
    Architecture("angle-x", 8, 3, "rx-ry-rz", "full"),
    Architecture("4x4-ryzxy", 8, 2, "ry", "sparse"),
    Architecture("angle-y", 8, 1, "ry", "none"),
]


@pytest.mark.parametrize("arch", WORKSPACE_ONLY, ids=str)
def test_estimate_covers_the_buffers_a_training_step_really_holds(arch):
    """After a forward and backward, the CPU workspace holds every state-sized buffer the call had in use at
    once (it takes them back instead of freeing them): the estimate must cover that, and not by a wide margin."""
    plan = SimulatorPlan(arch)
    batch = 64
    x = torch.rand(batch, arch.n_inputs, requires_grad=True)
    w = torch.rand(arch.n_weights, requires_grad=True)
    plan.expectations(x, w).sum().backward()
    held = sum(t.numel() * t.element_size() for stack in plan._workspace._free.values() for t in stack)
    estimate = plan.estimate_bytes(batch)
    assert held > 0
    assert held <= estimate <= 2 * held, (held, estimate)
    assert plan.estimate_bytes(2 * batch) == 2 * estimate  # linear in the batch
    assert plan.estimate_bytes(batch, grad=False) < estimate


def test_a_batch_that_does_not_fit_is_refused_with_a_batch_that_does():
    arch = Architecture("angle-x", 12, 2, "rx-ry-rz", "ring")
    plan = SimulatorPlan(arch)
    per_sample = plan.estimate_bytes(1)
    assert 300 * per_sample > memory.CHECK_ABOVE_BYTES  # large enough to be checked at all
    available = 300 * per_sample + per_sample // 2
    with pytest.raises(SimulationMemoryError) as info:
        plan.check_memory(1000, available=available)
    message = str(info.value)
    for fragment in (
        "batch size 1000",
        "(12 qubits)",
        f"({1000 * per_sample} bytes)",
        f"({available} bytes) is available",
        "a batch of at most 300 fits",
        arch.canonical(),
    ):
        assert fragment in message, (fragment, message)
    plan.check_memory(300, available=available)  # the suggested batch passes
    with pytest.raises(SimulationMemoryError):
        plan.check_memory(301, available=available)
    with pytest.raises(SimulationMemoryError, match="not even one sample fits"):
        plan.check_memory(1000, available=per_sample // 2)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, ValueError)


def test_small_problems_are_not_checked():
    """Below the threshold no system call is made, so the hot path of small circuits is unchanged."""
    check_fits("tiny", 4, 64, 1024, "cpu", available=0)
    with pytest.raises(SimulationMemoryError):
        check_fits("big", 20, 64, memory.CHECK_ABOVE_BYTES, "cpu", available=0)


def test_twenty_qubits_at_a_large_batch_is_refused_before_allocating():
    arch = Architecture("angle-y", MAX_QUBITS, 2, "ry-rz", "ring")
    layer = QuantumLayer(arch)
    need = layer.plan.estimate_bytes(16384)
    free = available_bytes("cpu")
    if free is None or free >= need:
        pytest.skip(f"this machine reports {free} bytes free, enough for {need}: nothing to refuse")
    with pytest.raises(SimulationMemoryError, match=r"20 qubits\) at batch size 16384 needs about") as info:
        layer(torch.zeros(16384, arch.n_inputs))
    fit = int(re.search(r"a batch of at most (\d+) fits", str(info.value)).group(1))
    assert 1 <= fit < 16384 and fit * layer.plan.estimate_bytes(1) <= free


def test_noisy_density_matrices_are_refused_before_allocating():
    arch = Architecture("angle-y", 12, 2, "ry", "ring")
    plan = GatewisePlan(arch, noise=GateNoise((0.01,) * 12))
    if (free := available_bytes("cpu")) is not None and free >= plan.estimate_bytes(64):
        pytest.skip("this machine could hold the density matrices")
    with pytest.raises(SimulationMemoryError, match=r"as a density matrix \(noise\) \(12 qubits\) at batch size 64"):
        plan.expectations(torch.zeros(64, 12), torch.zeros(arch.n_weights))


def test_available_memory_readers(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:         1000 kB\nMemAvailable:    2048 kB\n")
    assert memory._proc_meminfo_available(meminfo) == 2048 * 1024
    assert memory._proc_meminfo_available(tmp_path / "missing") is None
    (tmp_path / "memory.max").write_text("max\n")
    assert memory._cgroup_available(tmp_path) is None
    (tmp_path / "memory.max").write_text("1000000\n")
    (tmp_path / "memory.current").write_text("400000\n")
    assert memory._cgroup_available(tmp_path) == 600000
    free = available_bytes("cpu")
    assert free is None or free > 0
    assert available_bytes("meta") is None


# ------------------------------------------------------------------ 20 qubits
def test_twenty_qubits_is_the_widest_architecture_and_not_the_default_space():
    Architecture("iqp", 20, 1, "ry", "ring")
    assert SearchSpace().qubits == (2, 12)  # wider spaces are asked for explicitly
    assert SearchSpace(qubits=(2, 20)).qubits == (2, 20)


def test_twenty_qubit_circuit_matches_qiskit():
    arch = Architecture("angle-x", 20, 1, "rx-ry", "ring")
    rng = np.random.default_rng(20)
    x = rng.uniform(-math.pi, math.pi, (1, arch.n_inputs))
    w = rng.uniform(0, 2 * math.pi, arch.n_weights)
    probs = Statevector(bind(build_circuit(arch), arch, x[0], w)).probabilities()
    z_ref = probs @ (1.0 - 2.0 * ((np.arange(2**20)[:, None] >> np.arange(20)) & 1))
    z = SimulatorPlan(arch, dtype=torch.float64).expectations(torch.tensor(x), torch.tensor(w))
    np.testing.assert_allclose(z[0].numpy(), z_ref, atol=1e-10, rtol=0)


def test_wide_amplitude_circuits_are_refused_by_name_but_simulated():
    """The RY tree of amplitude embedding has 4**n / 3 symbolic terms: past 12 qubits building the circuit (for
    transpiling, cutting or a device) would not finish, so it is refused; the simulator sets the state directly."""
    wide = Architecture("amplitude", AMPLITUDE_CIRCUIT_MAX_QUBITS + 1, 1, "ry", "ring")
    with pytest.raises(SpaceError, match=r"amplitude-embedding circuit on 13 qubits has 8191 RY-tree rotations"):
        build_circuit(wide)
    x = torch.zeros(2, 5)
    x[:, 3] = 1.0  # |3>: qubits 0 and 1 flipped
    n = 16  # (at 20 qubits the gate program alone lists 3 million RY-tree gates: 20 s to build the plan)
    state = SimulatorPlan(Architecture("amplitude", n, 1, "ry", "none")).state(x, torch.zeros(n))
    assert state.shape == (2, 2**n) and torch.allclose(state[:, 3].abs(), torch.ones(2))
