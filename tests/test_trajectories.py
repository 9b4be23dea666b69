"""The batched simulator (exact density matrix and quantum trajectories) against Aer's density matrix.

Reference: :class:`~qnas_hw.hardware.noise.NoisySimulator`, Aer's density
matrix under the noise model ``NoiseModel.from_backend`` builds, on the same
prepared circuits.  Tolerances are derived in each test from what the
estimate can err by: nothing but float32 rounding for the exact path; for
trajectories, the standard deviation of a trajectory mean of ``<Z_q>`` is at
most ``(1 - P0) / sqrt(T)`` (a trajectory's ``<Z_q>`` lies in [-1, 1], and
only the ``1 - P0`` of the mass conditioned on a jump is sampled); shots add
``sqrt((1 - z^2) / S)`` per simulator.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

from qnas_hw.hardware.backends import get_backend
from qnas_hw.hardware.cutting import CutPlanner
from qnas_hw.hardware.execution import ProgramBuilder, probabilities, z_from_distributions
from qnas_hw.hardware.noise import NoisySimulator
from qnas_hw.hardware.trajectories import TrajectorySimulator
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.model.hqnn import HQNN
from qnas_hw.model.space import Architecture
from qnas_hw.search.scoring import NoisyScorer, model_inputs


def _connected(backend, n: int, rng: np.random.Generator) -> tuple[list[int], list[tuple[int, int]]]:
    """n physical qubits forming a connected patch of the coupling graph, and the directed edges among them."""
    edges = list(backend.target.build_coupling_map().get_edges())
    chosen = [int(rng.integers(backend.num_qubits))]
    while len(chosen) < n:
        frontier = sorted({b for a, b in edges if a in chosen and b not in chosen})
        chosen.append(int(rng.choice(frontier)))
    return chosen, [(a, b) for a, b in edges if a in chosen and b in chosen]


def random_placed_circuit(backend, n: int, layers: int, seed: int) -> tuple[QuantumCircuit, int]:
    """A random ISA circuit (rz(x) sx rz(x) per qubit, CNOTs on device couplings) placed on n physical qubits."""
    rng = np.random.default_rng(seed)
    qubits, edges = _connected(backend, n, rng)
    angles = ParameterVector("x", 2 * n * layers)
    qc = QuantumCircuit(backend.num_qubits, n, name=f"random{n}q{seed}")
    k = 0
    for _ in range(layers):
        for q in qubits:
            qc.rz(angles[k], q)
            qc.sx(q)
            qc.rz(angles[k + 1], q)
            k += 2
        for e in rng.permutation(len(edges))[: max(1, n - 1)]:
            qc.cx(*edges[int(e)])
    qc.barrier(qubits)
    for i, q in enumerate(qubits):
        qc.measure(q, i)
    return qc, qc.num_parameters


def _z(dists: np.ndarray) -> np.ndarray:
    m = int(math.log2(dists.shape[1]))
    bits = (np.arange(dists.shape[1])[:, None] >> np.arange(m)[None, :]) & 1
    return dists @ (1.0 - 2.0 * bits)


@pytest.mark.parametrize(("backend_name", "n"), [("fake_quito", 3), ("fake_kolkata", 4), ("fake_kolkata", 5)])
def test_exact_density_matrix_equals_aer(backend_name: str, n: int) -> None:
    """Up to EXACT_MAX_QUBITS the distributions are exact: they differ from Aer's by float32 rounding only."""
    backend = get_backend(backend_name)
    qc, n_params = random_placed_circuit(backend, n, layers=2, seed=n)
    values = np.random.default_rng(0).uniform(0, 2 * np.pi, size=(6, n_params))
    ref = NoisySimulator(backend).probabilities(qc, values)
    sim = TrajectorySimulator(backend)
    new = sim.probabilities(qc, values)
    assert sim.stats[-1].method == "exact"
    tol = 2e-5  # float32 (7 digits) accumulated over ~50 ops
    assert np.abs(new - ref).max() < tol, f"max |p_new - p_aer| = {np.abs(new - ref).max():.2e} > {tol} (float32)"


@pytest.mark.parametrize(
    ("backend_name", "n", "seed"), [("fake_quito", 3, 1), ("fake_kolkata", 5, 2), ("fake_kolkata", 6, 3)]
)
def test_trajectories_agree_with_aer_within_the_derived_tolerance(backend_name: str, n: int, seed: int) -> None:
    """Trajectories forced (exact_max_qubits=0): every <Z_q> within 4 standard deviations of the trajectory mean."""
    backend = get_backend(backend_name)
    qc, n_params = random_placed_circuit(backend, n, layers=2, seed=seed)
    values = np.random.default_rng(seed).uniform(0, 2 * np.pi, size=(4, n_params))
    ref = _z(NoisySimulator(backend).probabilities(qc, values))
    T = 4096
    sim = TrajectorySimulator(backend, trajectories=T, exact_max_qubits=0)
    new = _z(sim.probabilities(qc, values, seed=seed))
    info = sim.stats[-1].clusters
    assert sim.stats[-1].method == "trajectories"
    jump = max(c["max_jump_weight"] for c in info)  # max over samples of 1 - P0
    tol = 4 * jump / math.sqrt(T)
    err = np.abs(new - ref).max()
    assert err < tol, f"max |<Z>_traj - <Z>_aer| = {err:.4f} > 4 (1 - P0) / sqrt(T) = 4 * {jump:.3f} / sqrt({T})"


def test_counts_agree_with_aer_within_shot_and_trajectory_noise() -> None:
    """``run`` (the scoring contract): <Z_q> from counts, tolerance 5 sqrt((1 - z^2) 2 / S + (1 - P0)^2 / T)."""
    backend = get_backend("fake_kolkata")
    qc, n_params = random_placed_circuit(backend, 6, layers=2, seed=7)
    values = np.random.default_rng(7).uniform(0, 2 * np.pi, size=(8, n_params))
    S, T = 20000, 1024
    ref = z_from_distributions(probabilities(NoisySimulator(backend).run([(qc, values)], S, seed=1)[0]), 6)
    sim = TrajectorySimulator(backend, trajectories=T, exact_max_qubits=0)
    counts = sim.run([(qc, values)], S, seed=2)[0]
    assert all(sum(c.values()) == S for c in counts) and all(len(k) == 6 for k in counts[0])
    new = z_from_distributions(probabilities(counts), 6)
    jump = max(c["max_jump_weight"] for c in sim.stats[-1].clusters)
    sd = np.sqrt((1 - ref**2).clip(0) * 2 / S + jump**2 / T)
    z_score = np.abs(new - ref) / sd
    assert z_score.max() < 5, f"max |dz| / sqrt((1-z^2) 2/S + (1-P0)^2/T) = {z_score.max():.2f} >= 5 (S={S}, T={T})"


def test_light_cone_clusters_are_independent_and_exact() -> None:
    """Two disjoint pieces on one device: simulated as two clusters, their joint distribution is the product."""
    backend = get_backend("fake_kolkata")
    qc = QuantumCircuit(27, 4)
    x = ParameterVector("x", 2)
    qc.rz(x[0], 1)
    qc.sx(1)
    qc.cx(1, 2)
    qc.rz(x[1], 12)
    qc.sx(12)
    qc.cx(12, 13)
    qc.measure([1, 2, 12, 13], [0, 1, 2, 3])
    values = np.array([[0.3, 1.2], [2.0, -0.7]])
    sim = TrajectorySimulator(backend)
    assert len(sim.compile(qc).clusters) == 2
    new = sim.probabilities(qc, values)
    ref = NoisySimulator(backend).probabilities(qc, values)
    assert np.abs(new - ref).max() < 1e-5
    counts = sim.run([(qc, values)], 4096, seed=0)[0]
    assert all(sum(c.values()) == 4096 for c in counts)


def test_trajectory_count_rule_is_stated_and_capped() -> None:
    """The rule picks T from the pilot: the trajectories' SE is at most f x the shots' SE, or the cap binds."""
    backend = get_backend("fake_kolkata")
    qc, n_params = random_placed_circuit(backend, 7, layers=2, seed=11)
    values = np.random.default_rng(11).uniform(0, 2 * np.pi, size=(32, n_params))
    sim = TrajectorySimulator(backend, max_trajectories=64)
    sim.run([(qc, values)], 1024, seed=0)
    info = sim.stats[-1].clusters[0]
    assert info["trajectories"] == max(16, min(64, info["rule_trajectories"]))
    if info["trajectories"] < 64:
        assert info["pilot_se_ratio"] <= sim.fraction + 1e-9, info
    assert "traj=rule(f=0.5" in sim.settings_key()


def test_unsupported_instruction_falls_back_to_aer() -> None:
    """A parameterised two-qubit gate is not compiled: the circuit runs on the Aer path, the stats say so."""
    backend = get_backend("fake_quito")
    qc = QuantumCircuit(5, 2)
    x = ParameterVector("x", 1)
    qc.rzz(x[0], 0, 1)
    qc.measure([0, 1], [0, 1])
    sim = TrajectorySimulator(backend)
    counts = sim.run([(qc, np.array([[0.4]]))], 256, seed=0)[0]
    assert sim.stats[-1].method == "aer" and sum(counts[0].values()) == 256


CANDIDATES = [
    ("fake_quito", "angle-y|q4|l2|ry-rz|ring|z", 5),
    ("fake_kolkata", "angle-y|q8|l2|ry|sparse|z", 8),
    ("fake_kolkata", "angle-y|q5|l1|rx-ry|linear|z", 4),
]


@pytest.mark.parametrize(("backend_name", "text", "budget"), CANDIDATES)
def test_noisy_validation_accuracy_agrees_with_the_aer_path(backend_name: str, text: str, budget: int) -> None:
    """Scored accuracy: predictions differ between the two paths no more than between two Aer runs (+ slack).

    Shot noise alone flips the samples near a decision boundary: two Aer runs
    with different seeds measure how many (``flips_aa``).  The trajectory
    path may add f^2 = 1/4 of the shot variance, so we allow 2 flips_aa + 3.
    The per-sample mitigated <Z> agree within shot noise too.
    """
    backend = get_backend(backend_name)
    arch = Architecture.parse(text)
    rng = np.random.default_rng(0)
    n = 64
    X = torch.as_tensor(rng.normal(size=(n, arch.n_qubits)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, 3, size=n))
    model = HQNN(arch, (arch.n_qubits,), 3, frontend="linear", seed=0).eval()
    planner = CutPlanner(budget, seed=0, max_qubits=backend.num_qubits)
    builder = ProgramBuilder(backend, Transpiler(backend, seed=0), planner, 1024)

    program = builder.build(arch)
    inputs, weights = model_inputs(model, X)
    values = program.parameter_values(inputs, weights)
    aer = NoisySimulator(backend)
    qubits = sorted({q for r in program.runs for q in r.measured_qubits if q is not None})
    mit = NoisyScorer(builder, aer, mitigation=True, seed=0).mitigator(qubits)  # one calibration, shared

    def score(sim, seed):  # NoisyScorer.score's steps, keeping <Z> and the predictions
        pubs = [(r.circuit, v) for r, v in zip(program.runs, values, strict=True)]
        counts = sim.run(pubs, [r.shots for r in program.runs], seed)
        z = program.expectations(counts, inputs, mit)
        with torch.no_grad():
            pred = model.decode(torch.as_tensor(z, dtype=torch.float32)).argmax(-1).numpy()
        return z, pred

    z_a, pred_a = score(aer, 1)
    z_b, pred_b = score(aer, 2)
    z_t, pred_t = score(TrajectorySimulator(backend), 3)
    flips_aa, flips_ta = int((pred_a != pred_b).sum()), int((pred_a != pred_t).sum())
    assert flips_ta <= 2 * flips_aa + 3, f"{flips_ta} predictions differ from Aer's; two Aer runs differ in {flips_aa}"
    acc_a, acc_t = float((pred_a == y.numpy()).mean()), float((pred_t == y.numpy()).mean())
    assert abs(acc_a - acc_t) <= (2 * flips_aa + 3) / n
    rms_aa, rms_ta = float(np.sqrt(((z_a - z_b) ** 2).mean())), float(np.sqrt(((z_a - z_t) ** 2).mean()))
    assert rms_ta <= 1.5 * rms_aa + 1e-3, f"RMS <Z> difference {rms_ta:.4f} vs {rms_aa:.4f} between two Aer runs"


def test_settings_choose_the_simulator_and_idle_noise_and_the_report_says_which() -> None:
    """``[search] noisy_simulator`` / ``idle_noise`` / ``idle_schedule``: validated, built, and named in the header."""
    from qnas_hw.config import ConfigError, config_from_dict
    from qnas_hw.reports.data import accuracy_description
    from qnas_hw.search.building import noisy_simulator

    with pytest.raises(ConfigError, match="noisy_simulator: Input should be 'trajectories' or 'aer'"):
        config_from_dict({"search": {"noisy_simulator": "qiskit"}})
    backend = get_backend("fake_quito")
    default = config_from_dict({"hardware": {"backend": "fake_quito"}, "compute": {"device": "cpu"}})
    sim = noisy_simulator(default, backend)
    assert isinstance(sim, TrajectorySimulator) and sim.idle_noise == "alap"
    aer = config_from_dict({"search": {"noisy_simulator": "aer", "idle_noise": False}, "compute": {"device": "cpu"}})
    ref = noisy_simulator(aer, backend)
    assert isinstance(ref, NoisySimulator) and ref.idle_noise is None
    header = accuracy_description({"hardware": {"backend": "fake_quito"}, "search": default.search.model_dump()})
    assert "by batched trajectories, idle noise: alap" in header
    old = accuracy_description({"hardware": {"backend": "fake_quito"}, "search": {"accuracy": "noisy"}})
    assert "by Aer, no idle noise" in old
