"""HQNN models: shapes, seeded init, and the encode -> <Z> -> decode split checked against qiskit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit.quantum_info import Statevector

from qnas_hw.model.circuits import bind, build_circuit, observables
from qnas_hw.model.hqnn import HQNN, ModelError, build_frontend, to_angles
from qnas_hw.model.simulator import QuantumLayer
from qnas_hw.model.space import Architecture

ARCH4 = Architecture.parse("angle-y|q4|l2|ry-rz|ring|z")


@pytest.mark.parametrize(
    ("kind", "shape"), [("identity", (6,)), ("linear", (5,)), ("mlp", (2, 3)), ("cnn", (1, 28, 28)), ("cnn", (3, 9, 9))]
)
def test_frontend_output_shapes(kind, shape):
    out = 6
    net = build_frontend(kind, shape, out, torch.Generator().manual_seed(0))
    assert net(torch.rand(5, *shape)).shape == (5, out)


def test_frontend_errors_name_the_fix():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ModelError, match="unknown front-end 'rnn'"):
        build_frontend("rnn", (4,), 4, g)
    with pytest.raises(ModelError, match="identity front-end passes 4 features"):
        build_frontend("identity", (4,), 8, g)
    with pytest.raises(ModelError, match=r"cnn front-end needs image input \(C, H, W\)"):
        build_frontend("cnn", (4,), 8, g)


@pytest.mark.parametrize(
    ("arch", "frontend", "shape"),
    [
        ("angle-y|q4|l1|ry|linear|z", "identity", (4,)),
        ("angle-x|q3|l2|rx-ry|full|z", "mlp", (4,)),
        ("iqp|q3|l1|ry|ring|z", "linear", (4,)),
        ("amplitude|q2|l2|ry|linear|z", "identity", (4,)),
        ("amplitude|q3|l1|ry-rz|sparse|z", "identity", (5,)),  # 5 <= 2**3 raw features, zero-padded
        ("angle-y|q8|l2|ry|sparse|z", "cnn", (1, 28, 28)),
    ],
)
def test_hqnn_shapes(arch, frontend, shape):
    a = Architecture.parse(arch)
    model = HQNN(a, shape, 3, frontend=frontend, seed=1)
    x = torch.rand(7, *shape)
    k = int(np.prod(shape)) if frontend == "identity" else a.n_inputs
    assert model.encode(x).shape == (7, k)
    assert model.quantum_weights().shape == (a.n_weights,)
    assert model(x).shape == (7, 3)


def test_hqnn_rejects_feature_widths_the_embedding_cannot_take():
    with pytest.raises(ModelError, match="takes exactly 3 features, got 4"):
        HQNN(Architecture.parse("angle-y|q3|l1|ry|linear|z"), (4,), 3, frontend="identity")
    with pytest.raises(ModelError, match="unknown quantum layer 'qpu'"):
        HQNN(ARCH4, (4,), 3, quantum="qpu")


def test_same_seed_same_logits_and_global_rng_untouched():
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    arch = Architecture.parse("angle-y|q8|l2|ry|sparse|z")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = HQNN(arch, (1, 28, 28), 10, frontend="cnn", seed=4)
    b = HQNN(arch, (1, 28, 28), 10, frontend="cnn", seed=4)
    c = HQNN(arch, (1, 28, 28), 10, frontend="cnn", seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), c(x))


def test_ablation_shares_the_classical_init_of_the_quantum_model():
    quantum = HQNN(ARCH4, (4,), 3, frontend="mlp", quantum="simulator", seed=2)
    classical = HQNN(ARCH4, (4,), 3, frontend="mlp", quantum="identity", seed=2)
    for name, tensor in classical.state_dict().items():
        assert torch.equal(tensor, quantum.state_dict()[name]), name
    assert classical.quantum_weights().numel() == 0 and classical.n_quantum_params() == 0
    assert quantum.n_classical_params() == classical.n_classical_params()
    x = torch.rand(3, 4)
    # The ablation really is front-end -> angles -> head with nothing in between.
    torch.testing.assert_close(classical(x), classical.head(to_angles(classical.frontend(x), "angle-y")))


def test_classical_parameter_count():
    model = HQNN(ARCH4, (5,), 3, frontend="linear")
    assert model.n_classical_params() == (5 * 4 + 4) + (4 * 3 + 3)
    assert model.n_quantum_params() == ARCH4.n_weights == 2 * 4 * 2


def test_encode_decode_is_the_forward_pass():
    model = HQNN(ARCH4, (6,), 3, frontend="mlp", seed=3)
    x = torch.rand(4, 6)
    z = model.quantum(model.encode(x))
    torch.testing.assert_close(model.decode(z), model(x))
    # A fresh layer holding quantum_weights() reproduces the model: the weights are the whole quantum state.
    layer = QuantumLayer(ARCH4)
    with torch.no_grad():
        layer.weight.copy_(model.quantum_weights())
    torch.testing.assert_close(model.decode(layer(model.encode(x))), model(x))


@pytest.mark.parametrize(
    "arch", ["angle-y|q4|l2|ry-rz|ring|z", "amplitude|q2|l2|rx-ry|linear|z", "iqp|q3|l1|ry|full|z"]
)
def test_hardware_path_matches_qiskit(arch):
    """encode -> bound qiskit circuit -> exact <Z> (Statevector) -> decode gives the model's logits."""
    a = Architecture.parse(arch)
    model = HQNN(a, (4,), 3, frontend="linear", seed=6, dtype=torch.float64)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = model.encode(x).double().numpy()
        weights = model.quantum_weights().numpy()
        circuit = build_circuit(a)
        z = np.array(
            [
                [Statevector(bind(circuit, a, f, weights)).expectation_value(obs).real for obs in observables(a)]
                for f in feats
            ]
        )
        torch.testing.assert_close(model.decode(torch.from_numpy(z)), model(x), atol=1e-5, rtol=1e-5)


def test_angles_stay_within_one_period():
    f = torch.tensor([-1e3, -1.0, 0.0, 1.0, 1e3])
    angles = to_angles(f, "angle-x")
    assert float(angles.abs().max()) <= torch.pi + 1e-6  # float32 rounding of pi
    torch.testing.assert_close(angles[3], torch.tensor(np.pi * np.tanh(1.0), dtype=torch.float32))
    assert torch.equal(to_angles(f, "amplitude"), f)
