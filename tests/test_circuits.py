"""The circuit module against qiskit's own Statevector, the independent reference."""

import numpy as np
import pytest
from qiskit.quantum_info import Statevector

from qnas_hw.model.circuits import (
    amplitude_angles,
    bind,
    build_circuit,
    entangler_pairs,
    gate_program,
    observables,
    parameter_values,
)
from qnas_hw.model.space import EMBEDDINGS, Architecture, SearchSpace, SpaceError


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_amplitude_embedding_prepares_the_normalised_signed_features(n):
    rng = np.random.default_rng(n)
    arch = Architecture("amplitude", n, 1, "ry", "none")
    feats = rng.normal(size=2**n - 1)  # one short: must be zero-padded
    state = Statevector(bind(build_circuit(arch), arch, feats, np.zeros(arch.n_weights))).data
    expected = np.append(feats, 0.0) / np.linalg.norm(feats)
    np.testing.assert_allclose(state.real, expected, atol=1e-10)
    np.testing.assert_allclose(state.imag, 0.0, atol=1e-10)


def test_amplitude_angles_reject_too_many_features():
    with pytest.raises(SpaceError, match="at most 4 features"):
        amplitude_angles(np.ones(5), 2)


def _reference_state(arch: Architecture, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Dense-matrix simulation written from the documented conventions, not from gate_program."""
    n = arch.n_qubits
    I2 = np.eye(2)
    H = np.array([[1, 1], [1, -1]]) / np.sqrt(2)

    def rot(name, t):
        c, s = np.cos(t / 2), np.sin(t / 2)
        return {
            "rx": np.array([[c, -1j * s], [-1j * s, c]]),
            "ry": np.array([[c, -s], [s, c]]),
            "rz": np.diag([np.exp(-1j * t / 2), np.exp(1j * t / 2)]),
        }[name]

    def one(g, q):
        m = np.array([[1.0]])
        for k in reversed(range(n)):
            m = np.kron(m, g if k == q else I2)
        return m

    def cx(c, t):
        dim = 2**n
        m = np.zeros((dim, dim))
        for b in range(dim):
            m[b ^ (1 << t) if (b >> c) & 1 else b, b] = 1
        return m

    psi = np.zeros(2**n, complex)
    psi[0] = 1
    emb = arch.embedding.removesuffix("-ru")  # re-uploading: the same block again before every later layer

    def embed(psi):
        if emb in ("angle-x", "angle-y"):
            for q in range(n):
                psi = one(rot("rx" if emb == "angle-x" else "ry", x[q]), q) @ psi
        elif emb in ("angle-z", "iqp"):
            for q in range(n):
                psi = one(H, q) @ psi
            for q in range(n):
                psi = one(rot("rz", x[q]), q) @ psi
            if emb == "iqp":
                z = np.array([[1 - 2 * ((b >> q) & 1) for q in range(n)] for b in range(2**n)])
                for i in range(n):
                    for j in range(i + 1, n):
                        psi = np.exp(-1j * x[i] * x[j] / 2 * z[:, i] * z[:, j]) * psi
        elif emb == "4x4-ryzxy":  # QuantumNAS: RY, RZ, RX, RY layers, feature k*n + q on qubit q
            for k, name in enumerate(("ry", "rz", "rx", "ry")):
                for q in range(n):
                    psi = one(rot(name, x[k * n + q]), q) @ psi
        return psi

    psi = embed(psi)
    rots = arch.rotation.split("-")
    for layer in range(arch.n_layers):
        if layer > 0 and arch.embedding.endswith("-ru"):
            psi = embed(psi)
        for q in range(n):
            for r, name in enumerate(rots):
                psi = one(rot(name, w[(layer * n + q) * len(rots) + r]), q) @ psi
        for c, t in entangler_pairs(arch.entangler, n, layer):
            psi = cx(c, t) @ psi
    return psi


@pytest.mark.parametrize("emb", [e for e in EMBEDDINGS if e != "amplitude"])
def test_circuit_matches_an_independent_dense_simulation(emb):
    rng = np.random.default_rng(7)
    space = SearchSpace(embeddings=(emb,), qubits=(2, 5), layers=(1, 3))
    for _ in range(6):
        arch = space.sample(rng)
        x = rng.uniform(-np.pi, np.pi, arch.n_inputs)
        w = rng.uniform(0, 2 * np.pi, arch.n_weights)
        got = Statevector(bind(build_circuit(arch), arch, x, w)).data
        np.testing.assert_allclose(got, _reference_state(arch, x, w), atol=1e-9, err_msg=arch.canonical())


def test_parameter_arrays_line_up_with_circuit_parameters():
    rng = np.random.default_rng(1)
    arch = Architecture("iqp", 4, 2, "rx-ry-rz", "full")
    qc = build_circuit(arch)
    assert qc.num_parameters == arch.n_inputs + arch.n_weights
    feats = rng.normal(size=(5, arch.n_inputs))
    w = rng.normal(size=arch.n_weights)
    values = parameter_values(qc, arch, feats, w)
    assert values.shape == (5, qc.num_parameters)
    for row, f in zip(values, feats, strict=True):
        a = Statevector(qc.assign_parameters(row)).data
        b = Statevector(bind(qc, arch, f, w)).data
        np.testing.assert_allclose(a, b, atol=1e-12)
    with pytest.raises(SpaceError, match="exactly 4 features, got 3"):
        parameter_values(qc, arch, feats[:, :3], w)
    with pytest.raises(SpaceError, match="has 24 weights, got 5"):
        parameter_values(qc, arch, feats, w[:5])


def test_entanglers_and_program_shape():
    assert entangler_pairs("ring", 4, 0) == [(0, 1), (1, 2), (2, 3), (3, 0)]
    assert entangler_pairs("sparse", 5, 0) == [(0, 1), (2, 3)]
    assert entangler_pairs("sparse", 5, 1) == [(1, 2), (3, 4)]
    assert len(entangler_pairs("full", 5, 0)) == 10
    arch = Architecture("angle-y", 3, 2, "ry-rz", "linear")
    names = [g.name for g in gate_program(arch)]
    assert names.count("cx") == 4 and names.count("rz") == 6 and names.count("ry") == 9


def test_observables_are_z_on_each_qubit_in_qiskit_order():
    arch = Architecture("angle-x", 3, 1, "ry", "none")
    obs = observables(arch)
    state = Statevector.from_label("001")  # qubit 0 is |1>
    assert [round(float(np.real(state.expectation_value(o))), 9) for o in obs] == [-1.0, 1.0, 1.0]
