"""The simulator on every available device: CPU always, CUDA when torch sees one (skipped otherwise, saying so).

References are independent of the simulator: qiskit's Statevector of the circuit module's bound circuit for
<Z>, the parameter-shift rule on that Statevector for the weight gradients (every weight drives exactly one
rotation, so the rule is exact) and central differences of it for the input gradients.  A device other than the
CPU must also agree with the CPU to 1e-5 in float32.

Without a GPU the device-following logic is still exercised: on torch's ``meta`` device every kernel checks that
its operands share a device (a CPU constant next to a meta tensor raises exactly as it would next to a CUDA one),
so a forward and backward on ``meta`` fails on any constant that did not move.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from qiskit.quantum_info import Statevector

from qnas_hw.model.circuits import bind, build_circuit
from qnas_hw.model.gatewise import GateNoise, GatewisePlan
from qnas_hw.model.simulator import QuantumLayer, SimulatorPlan
from qnas_hw.model.space import Architecture, SearchSpace, SpaceError
from qnas_hw.model.supercircuit import SuperCircuit

_NO_CUDA = "no CUDA device visible to torch (torch.cuda.is_available() is false): the CUDA half of this test is skipped"
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason=_NO_CUDA)),
]

#: Every entangler, the real and the complex paths, IQP's input phases, amplitude and the 4x4 encoder, and a
#: re-uploading circuit (gate-by-gate plan).
ARCHS = [
    Architecture("angle-y", 4, 2, "ry", "ring"),
    Architecture("angle-x", 4, 2, "rx-ry-rz", "full"),
    Architecture("angle-z", 3, 2, "ry-rz", "linear"),
    Architecture("iqp", 4, 1, "rx-ry", "sparse"),
    Architecture("amplitude", 3, 2, "ry-rz", "ring"),
    Architecture("4x4-ryzxy", 4, 2, "ry", "none"),
    Architecture("4x4-ryzxy", 3, 2, "rx-ry-rz", "sparse"),
    Architecture("angle-y-ru", 3, 2, "ry-rz", "linear"),
]


def _inputs(arch: Architecture, batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if arch.embedding == "amplitude":
        return rng.normal(size=(batch, arch.n_inputs))
    return rng.uniform(-math.pi, math.pi, size=(batch, arch.n_inputs))


def _z_of(qc, arch: Architecture, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """<Z_q> per qubit for one sample, from qiskit's Statevector."""
    probs = Statevector(bind(qc, arch, x, w)).probabilities()
    z = 1.0 - 2.0 * ((np.arange(2**arch.n_qubits)[:, None] >> np.arange(arch.n_qubits)) & 1)
    return probs @ z


def _reference(arch: Architecture, x: np.ndarray, w: np.ndarray, coef: np.ndarray):
    """<Z> (B, n), dL/dw (parameter shift) and dL/dx (central differences) of L = sum_b sum_q coef_q <Z_q>."""
    qc = build_circuit(arch)
    z = np.stack([_z_of(qc, arch, row, w) for row in x])
    grad_w = np.zeros_like(w)
    for i in range(len(w)):
        shift = np.zeros_like(w)
        shift[i] = math.pi / 2
        plus = sum(_z_of(qc, arch, row, w + shift) @ coef for row in x)
        minus = sum(_z_of(qc, arch, row, w - shift) @ coef for row in x)
        grad_w[i] = (plus - minus) / 2
    grad_x = np.zeros_like(x)
    h = 1e-5
    for b in range(len(x)):
        for j in range(x.shape[1]):
            step = np.zeros(x.shape[1])
            step[j] = h
            grad_x[b, j] = (_z_of(qc, arch, x[b] + step, w) - _z_of(qc, arch, x[b] - step, w)) @ coef / (2 * h)
    return z, grad_w, grad_x


def _run(arch: Architecture, device: str, dtype: torch.dtype, x: np.ndarray, w: np.ndarray, coef: np.ndarray):
    """Forward and backward of a QuantumLayer moved to ``device``; results back on the CPU as float64."""
    layer = QuantumLayer(arch, dtype=dtype).to(device)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(w, dtype=dtype))
    xt = torch.tensor(x, dtype=dtype, device=device, requires_grad=True)
    z = layer(xt)
    assert z.device.type == device
    (z * torch.as_tensor(coef, dtype=z.dtype, device=device)).sum().backward()
    return [t.detach().cpu().double().numpy() for t in (z, layer.weight.grad, xt.grad)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_forward_and_backward_match_qiskit_on_every_device(arch, device):
    x = _inputs(arch, 2, seed=arch.n_weights)
    w = np.random.default_rng(7).uniform(0, 2 * math.pi, arch.n_weights)
    coef = np.linspace(1.0, -0.5, arch.n_qubits)
    ref_z, ref_gw, ref_gx = _reference(arch, x, w, coef)

    z, gw, gx = _run(arch, device, torch.float64, x, w, coef)
    np.testing.assert_allclose(z, ref_z, atol=1e-9, rtol=0, err_msg=f"{arch} <Z> on {device}")
    np.testing.assert_allclose(gw, ref_gw, atol=1e-9, rtol=0, err_msg=f"{arch} weight gradient on {device}")
    np.testing.assert_allclose(gx, ref_gx, atol=1e-6, rtol=0, err_msg=f"{arch} input gradient on {device}")

    # float32 on this device against float32 on the CPU: the 1e-5
    on_device = _run(arch, device, torch.float32, x, w, coef)
    on_cpu = _run(arch, "cpu", torch.float32, x, w, coef)
    for got, want, what in zip(on_device, on_cpu, ("<Z>", "weight gradient", "input gradient"), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=f"{arch} float32 {what}: {device} vs cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_noisy_gatewise_plan_follows_the_layer(device):
    arch = Architecture("angle-y", 3, 2, "ry-rz", "ring")
    noise = GateNoise((0.01, 0.02, 0.015), {(0, 1): 0.03, (1, 2): 0.02, (0, 2): 0.05}, (0.02,) * 3, (0.03,) * 3)
    x = torch.as_tensor(_inputs(arch, 3, seed=1))
    results = []
    for where in ("cpu", device):
        layer = QuantumLayer(arch, dtype=torch.float64).to(where)
        layer.set_noise(noise)
        assert isinstance(layer.plan, GatewisePlan)
        assert {t.device.type for t in layer.plan.tensors()} == {where}
        results.append(layer(x.to(where)).cpu())
    # an independent check of the noisy values lives in test_gatewise.py (Aer); here: same numbers everywhere
    torch.testing.assert_close(results[1], results[0], atol=1e-10, rtol=0)


# ------------------------------------------------------------------ device following, checked on the CPU
def _every_tensor(obj: object, seen: set[int] | None = None) -> list[torch.Tensor]:
    """Every tensor reachable from ``obj`` through attributes, dataclass fields, lists, tuples and dicts.

    Written independently of the plans' own ``tensors()`` so that a constant they forget is still found.
    """
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, str | int | float | bool | type(None) | torch.dtype | torch.device):
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, list | tuple | set):
        children = list(obj)
    elif isinstance(obj, dict):
        children = list(obj.keys()) + list(obj.values())
    elif dataclasses.is_dataclass(obj):
        children = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif hasattr(obj, "__dict__") and not isinstance(obj, np.ndarray):
        children = list(vars(obj).values())
    else:
        return []
    return [t for child in children for t in _every_tensor(child, seen)]


def _plan_constants(plan: object) -> list[torch.Tensor]:
    """The plan's tensors except its scratch buffers (a workspace holds buffers of the device it was made for)."""
    return [t for name, value in vars(plan).items() if name != "_workspace" for t in _every_tensor(value)]


@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_every_plan_constant_moves_with_the_module_and_runs_there(arch):
    layer = QuantumLayer(arch)
    constants = _plan_constants(layer.plan)
    assert constants, "the plan should hold constants"
    assert {id(t) for t in layer.plan.tensors()} >= {id(t) for t in constants}  # its own list misses nothing
    layer.to("meta")
    moved = _plan_constants(layer.plan)
    assert len(moved) >= len(constants) and {t.device.type for t in moved} == {"meta"}
    # every kernel on meta checks its operands' devices: a constant left on the CPU raises here
    x = torch.empty(5, arch.n_inputs, device="meta", requires_grad=True)
    z = layer(x)
    z.sum().backward()
    assert z.shape == (5, arch.n_qubits) and z.device.type == "meta"
    assert x.grad is not None and x.grad.device.type == "meta" and layer.weight.grad.device.type == "meta"


def test_a_plan_follows_its_inputs_when_no_one_moved_it():
    """A SuperCircuit calls cached template models through functional_call with its own (moved) tensors: their
    plans never see a .to(), so they move on the first call from another device."""
    plan = SimulatorPlan(Architecture("iqp", 3, 2, "rx-ry-rz", "linear"))
    z = plan.expectations(torch.empty(4, 3, device="meta"), torch.empty(18, device="meta"))
    assert z.device.type == "meta" and {t.device.type for t in _plan_constants(plan)} == {"meta"}

    space = SearchSpace(embeddings=("angle-y", "4x4-ryzxy"), qubits=(2, 3), layers=(1, 2))
    sc = SuperCircuit(space, (6,), 3).to("meta")
    for arch in (space.largest(), space.smallest(), Architecture("4x4-ryzxy", 3, 2, "ry-rz", "ring")):
        logits = sc(torch.empty(8, 6, device="meta"), arch)
        assert logits.shape == (8, 3) and logits.device.type == "meta"


def test_moving_to_the_same_device_or_another_dtype_changes_nothing():
    arch = Architecture("angle-x", 4, 2, "rx-ry-rz", "full")
    x = torch.as_tensor(_inputs(arch, 6, seed=3), dtype=torch.float32)
    layer = QuantumLayer(arch)
    before = layer(x)
    dtypes = {id(t): t.dtype for t in _plan_constants(layer.plan)}
    layer.to("cpu")
    assert torch.equal(layer(x), before)
    layer.to(torch.float64)  # the weight's dtype; the plan's precision is fixed when it is built
    assert layer.weight.dtype == torch.float64
    assert {id(t): t.dtype for t in _plan_constants(layer.plan)} == dtypes
    assert torch.equal(layer(x), before)
    layer.to(torch.float32)
    assert torch.equal(layer(x), before)


def test_plan_constants_are_not_module_buffers():
    """A SuperCircuit shares its template models' buffers across architectures by slicing them: plan constants
    (whose shapes depend on the architecture) must never be among them."""
    layer = QuantumLayer(Architecture("iqp", 3, 1, "ry", "ring"))
    assert list(layer.buffers()) == []
    assert [name for name, _ in layer.named_parameters()] == ["weight"]


def test_inputs_and_weights_on_different_devices_are_refused():
    arch = Architecture("angle-y", 3, 1, "ry", "ring")
    plan = SimulatorPlan(arch)
    with pytest.raises(SpaceError, match=r"inputs are on meta and weights on cpu"):
        plan.expectations(torch.empty(2, 3, device="meta"), torch.zeros(3))
    gatewise = GatewisePlan(arch)
    with pytest.raises(SpaceError, match=r"inputs are on cpu and weights on meta"):
        gatewise.expectations(torch.zeros(2, 3), torch.empty(3, device="meta"))
