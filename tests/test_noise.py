"""Noisy scoring: the target's noise on only the used qubits, against hand computations and the full-device model.

References: a hand computation of readout error on a product state
(<Z> = (1 - 2p) cos(theta)); Qiskit Runtime's local testing mode on the
same fake backend (the full 27-qubit ``NoiseModel.from_backend`` run that
``accuracy = "device"`` uses offline); Aer simulating a mid-circuit
measurement itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from qiskit import ClassicalRegister, QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.circuit.library import CXGate, Measure, RZGate, SXGate, XGate
from qiskit.transpiler import InstructionProperties, Target

from qnas_hw.config import ConfigError, config_from_dict
from qnas_hw.hardware.backends import get_backend
from qnas_hw.hardware.backends.base import Backend, SamplerPub
from qnas_hw.hardware.cutting import CutPlanner
from qnas_hw.hardware.execution import ProgramBuilder
from qnas_hw.hardware.layout import deflate
from qnas_hw.hardware.noise import (
    NoiseModelError,
    NoisySimulator,
    defer_measurements,
    has_noise_model,
    require_noise_model,
)
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.model.hqnn import HQNN
from qnas_hw.model.space import Architecture
from qnas_hw.search.scoring import NoisyScorer, model_inputs

READOUT_P = 0.08


class ReadoutOnlyBackend(Backend):
    """A 3-qubit line whose only imperfection is a symmetric readout flip probability (a hand-checkable target)."""

    name = "readout_only"
    provider = "ibm"

    def __init__(self, p: float = READOUT_P) -> None:
        t = Target(num_qubits=3)
        ideal = {(q,): InstructionProperties(duration=0.0, error=0.0) for q in range(3)}
        for gate in (RZGate(Parameter("theta")), SXGate(), XGate()):
            t.add_instruction(gate, dict(ideal))
        edges = [(0, 1), (1, 0), (1, 2), (2, 1)]
        t.add_instruction(CXGate(), {e: InstructionProperties(duration=0.0, error=0.0) for e in edges})
        t.add_instruction(Measure(), {(q,): InstructionProperties(duration=0.0, error=p) for q in range(3)})
        self._target = t

    @property
    def num_qubits(self) -> int:
        return 3

    @property
    def coupling_edges(self) -> list[tuple[int, int]]:
        return [(0, 1), (1, 0), (1, 2), (2, 1)]

    @property
    def topology_kind(self) -> str:
        return "line"

    @property
    def basis_gates(self) -> list[str]:
        return sorted(self._target.operation_names)

    @property
    def target(self) -> Target:
        return self._target

    def credentials_present(self) -> bool:
        return True

    def transpile(self, circuit: QuantumCircuit, optimization_level: int = 1, seed: int = 0) -> QuantumCircuit:
        raise NotImplementedError  # the Transpiler runs the preset pipeline on the target itself

    def scheduled_duration(self, transpiled: QuantumCircuit) -> float:
        return 0.0

    def submit(self, pubs, shots, seed=None):  # pragma: no cover - noisy scoring never submits
        raise NotImplementedError


def _model(arch: Architecture, n: int, seed: int = 0) -> tuple[HQNN, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    X = torch.as_tensor(rng.normal(size=(n, arch.n_qubits)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, 3, size=n))
    return HQNN(arch, (arch.n_qubits,), 3, frontend="linear", seed=seed).eval(), X, y


def test_readout_only_noise_matches_the_hand_computation() -> None:
    """Product state RY(x)RY(w)|0>: <Z_q> = cos(x_q + w_q); a symmetric flip p scales it by (1 - 2p).

    64 rows x 20000 shots: the per-row standard error is <= 1/sqrt(20000) = 0.007; we allow 5 sigma. With
    mthree mitigation (assignment matrices measured on the same simulator) the product is cos again.
    """
    backend = ReadoutOnlyBackend()
    arch = Architecture("angle-y", 3, 1, "ry", "none")
    model, X, y = _model(arch, 64)
    builder = ProgramBuilder(backend, Transpiler(backend), None, shots=20000)
    inputs, weights = model_inputs(model, X)
    exact = np.cos(inputs + weights[None, :])  # the hand computation
    with torch.no_grad():
        assert np.abs(model.quantum(model.encode(X)).numpy() - exact).max() < 1e-5  # (the model agrees)
    tol = 5 / math.sqrt(20000)
    for mitigation, expected in ((False, (1 - 2 * READOUT_P) * exact), (True, exact)):
        scorer = NoisyScorer(builder, NoisySimulator(backend), mitigation=mitigation, seed=1)
        program = builder.build(arch)
        counts = scorer.simulator.run(
            [(r.circuit, v) for r, v in zip(program.runs, program.parameter_values(inputs, weights), strict=True)],
            [r.shots for r in program.runs],
            seed=3,
        )
        mit = scorer.mitigator(program.runs[0].measured_qubits) if mitigation else None
        z = program.expectations(counts, inputs, mit)
        assert np.abs(z - expected).max() < tol, (mitigation, np.abs(z - expected).max())
        # the scored accuracy is the head applied to such <Z>: the hand-computed <Z> give the same correct
        # predictions, except possibly on rows whose top two logits are within what shot noise can move
        acc, details = scorer.score(arch, model, X, y)
        with torch.no_grad():
            logits = model.decode(torch.as_tensor(expected, dtype=torch.float32))
        top2 = logits.topk(2).values
        fragile = int(((top2[:, 0] - top2[:, 1]) < 0.1).sum())
        hand_correct = int((logits.argmax(-1) == y).sum())
        assert abs(round(acc * len(y)) - hand_correct) <= fragile
        assert details["mitigation"] == ("mthree" if mitigation else "none") and details["shots"] == 20000


def test_reduced_noise_model_agrees_with_runtime_local_mode_on_the_full_device() -> None:
    """Simulating only the 4 used qubits of fake_kolkata gives the distribution the full-device run gives.

    The reference is the backend's own submit (Qiskit Runtime local testing mode, Aer with the full 27-qubit
    ``NoiseModel.from_backend``).  40000 shots per row: each <Z> has standard error <= 0.005; 5 sigma of the
    difference of two estimates is 0.036.
    """
    backend = get_backend("fake_kolkata")
    arch = Architecture("angle-y", 4, 2, "ry-rz", "linear")
    model, X, _ = _model(arch, 6)
    builder = ProgramBuilder(backend, Transpiler(backend), None, shots=40000)
    program = builder.build(arch)
    inputs, weights = model_inputs(model, X)
    (values,) = program.parameter_values(inputs, weights)
    circuit = program.runs[0].circuit
    reduced = NoisySimulator(backend).run([(circuit, values)], 40000, seed=5)
    full = backend.submit([SamplerPub(circuit, values)], 40000, seed=6).counts()
    z_reduced = program.expectations(reduced, inputs)
    z_full = program.expectations(full, inputs)
    with torch.no_grad():
        ideal = model.quantum(model.encode(X)).numpy()
    assert np.abs(z_reduced - z_full).max() < 5 * math.sqrt(2) / math.sqrt(40000)
    assert np.abs(z_full - ideal).max() > 0.02  # the noise is real: the check above compares noisy runs


def test_deferred_mid_circuit_measurement_equals_aer_simulating_it() -> None:
    backend = get_backend("fake_quito")
    qc = QuantumCircuit(5)
    qpd, obs = ClassicalRegister(1, "qpd"), ClassicalRegister(3, "obs")
    qc.add_register(qpd)
    qc.add_register(obs)
    qc.sx(0)
    qc.rz(0.7, 0)
    qc.sx(0)
    qc.cx(0, 1)
    qc.measure(0, qpd[0])  # mid-circuit: qubit 0 is used again
    qc.cx(0, 1)
    qc.sx(1)
    qc.cx(1, 2)
    qc.measure([0, 1, 2], obs)
    deferred, stand_ins = defer_measurements(deflate(qc)[0])
    assert stand_ins == [0] and deferred.num_qubits == 4
    sim = NoisySimulator(backend)
    shots = 100_000
    fast = sim.run([(qc, None)], shots, seed=1)[0][0]
    from qiskit_aer import AerSimulator

    small, physical = deflate(qc)
    direct = AerSimulator(method="density_matrix", noise_model=sim.noise_model(physical), seed_simulator=2)
    ref = {k.replace(" ", ""): v for k, v in direct.run(small, shots=shots).result().get_counts().items()}
    for key in set(fast) | set(ref):
        p = max(fast.get(key, 0), ref.get(key, 0)) / shots
        assert abs(fast.get(key, 0) - ref.get(key, 0)) / shots < 5 * math.sqrt(2 * p * (1 - p) / shots) + 1e-4, key


def test_noisy_needs_a_noise_model_and_says_which_backends_have_one() -> None:
    assert has_noise_model(get_backend("fake_kolkata")) and has_noise_model(get_backend("braket_iqm_garnet"))
    assert not has_noise_model(get_backend("aer_ideal"))
    with pytest.raises(NoiseModelError, match=r"aer_ideal.*fake_kolkata.*braket_iqm_garnet"):
        require_noise_model(get_backend("aer_ideal"))
    with pytest.raises(ConfigError, match=r"accuracy='noisy' needs .*'braket_local_sv' has none.*braket_iqm_garnet"):
        config_from_dict({"hardware": {"backend": "braket_local_sv"}, "search": {"accuracy": "noisy"}})
    # left out, the mode follows the backend: noisy where there is a noise model, ideal otherwise
    assert config_from_dict({"hardware": {"backend": "aer_ideal"}}).search.accuracy == "ideal"
    assert config_from_dict({"hardware": {"backend": "braket_iqm_garnet"}}).search.accuracy == "noisy"


def test_braket_snapshot_noise_comes_from_its_reported_fidelities() -> None:
    """A Braket snapshot has no T1/T2: its noise is depolarising + readout from its errors, on Aer's DM simulator."""
    backend = get_backend("braket_iqm_garnet")
    sim = NoisySimulator(backend)
    cz = [err for name, qubits, err in sim.errors.gate if name == "cz"]
    assert cz and all(e.num_qubits == 2 for e in cz)
    qc = QuantumCircuit(backend.num_qubits, 2)
    qc.measure(3, 0)
    qc.measure(4, 1)
    counts = sim.run([(qc, None)], 50_000, seed=0)[0][0]
    flips = 1 - counts.get("00", 0) / 50_000
    readout = backend.target["measure"][(3,)].error
    expected = 1 - (1 - readout) ** 2
    assert abs(flips - expected) < 5 * math.sqrt(expected / 50_000) + 1e-3


def test_cut_candidate_under_noise_is_close_to_its_uncut_ideal_values() -> None:
    """A 5-qubit candidate cut for a 4-qubit budget, scored on the noisy simulator: noise and shot noise only."""
    backend = get_backend("fake_kolkata")
    arch = Architecture("angle-y", 5, 1, "rx-ry", "linear")
    planner = CutPlanner(4, seed=0, max_qubits=backend.num_qubits)
    builder = ProgramBuilder(backend, Transpiler(backend), planner, shots=2000)
    assert builder.unrunnable(arch) is None
    model, X, _ = _model(arch, 12)
    program = builder.build(arch)
    assert program.cut is not None and program.circuits_per_row == planner.plan(arch).n_subexperiments
    inputs, weights = model_inputs(model, X)
    scorer = NoisyScorer(builder, NoisySimulator(backend), mitigation=True, seed=0)
    counts = scorer.simulator.run(
        [(r.circuit, v) for r, v in zip(program.runs, program.parameter_values(inputs, weights), strict=True)],
        [r.shots for r in program.runs],
        seed=2,
    )
    qubits = sorted({q for r in program.runs for q in r.measured_qubits if q is not None})
    z = program.expectations(counts, inputs, scorer.mitigator(qubits))
    with torch.no_grad():
        exact = model.quantum(model.encode(X)).numpy()
    assert np.abs(z - exact).mean() < 0.06  # device noise on a 2-qubit-gate-light circuit plus 1/sqrt(2000) shots


def test_pure_quantum_noise_aware_search_runs_end_to_end(tmp_path) -> None:
    """MNIST-4 without a front-end on fake_quito: noise-aware SuperCircuit and fine-tunes, noisy scoring."""
    from qnas_hw.data import shared_datasets_dir
    from qnas_hw.search.nsga import run_search

    shared = shared_datasets_dir()
    if shared is None or not (shared / "mnist").is_dir():
        pytest.skip("needs ../shared/datasets (MNIST IDX files)")
    cfg = config_from_dict(
        {
            "seed": 1,
            "data": {"dataset": "mnist4", "data_dir": str(shared), "limit_train": 200},
            "model": {"frontend": "none"},
            "space": {"embeddings": ["4x4-ryzxy", "4x4-ryzxy-ru"], "qubits": [4, 4], "layers": [1, 2]},
            "supercircuit": {"epochs": 1, "noise_aware": True},
            "search": {
                "pop_size": 4,
                "generations": 1,
                "objectives": ["val_error", "runtime_s"],
                "shots": 256,
                "val_samples": 32,
                "noise_aware_finetune": True,
            },
            "hardware": {"backend": "fake_quito", "qubit_budget": 4},
        }
    )
    study = run_search(cfg, tmp_path / "run", progress=False)
    try:
        cands = study.candidates()
        assert cands and all(c.details["val_error"]["accuracy"]["accuracy_mode"] == "noisy" for c in cands)
        assert all(c.details["val_error"]["n_params"] == c.arch.n_weights + 4 * 4 for c in cands)  # head: 4x4
    finally:
        study.close()
