"""Training-free screens of a candidate: how much of its signal survives the target's noise, and how well its
untrained circuit separates the classes (after Élivágar, ASPLOS'24: CNR and RepCap).

Why here: both read the placed, routed program the noisy scorer runs (transpiled, placed on the calibrated
qubits, cut when wider than the budget, readout-mitigated as the scorer is), so a screen sees the same device the
search scores on, at a fraction of a training run's cost.

* :func:`clifford_noise_resilience` (``cnr``): ``1 - mean |<Z_q>_noisy - <Z_q>_ideal| / 2`` over ``replicas``
  random Clifford replicas of the candidate (every input and weight angle drawn from multiples of pi/2) and over
  its measured qubits.  Élivágar compares whole output distributions; the model reads only each qubit's ``<Z>``,
  so this compares those marginals (the per-qubit total-variation distance).  The noisy side runs through the
  scorer's own simulator and mitigation; the ideal side is qiskit's :class:`~qiskit.quantum_info.Statevector`.
* :func:`representational_capacity` (``repcap``): for ``draws`` random weight vectors, the fidelity matrix
  ``F_ij = |<psi_i|psi_j>|^2`` of ``per_class`` training samples per class (front-end at its seeded random init)
  against the ideal ``R_ij = [y_i == y_j]``: ``1 - ||F - R||_F^2 / N^2``, averaged over draws.  The validation and
  test splits are never read.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from qnas_hw.data import stratified_subset
from qnas_hw.hardware.execution import ProgramBuilder, circuit_values
from qnas_hw.model.circuits import build_circuit, n_input_params
from qnas_hw.model.hqnn import HQNN
from qnas_hw.model.space import Architecture
from qnas_hw.search.scoring import NoisyScorer, derive_run_seed

#: Élivágar's sizes: 32 Clifford replicas for CNR; 16 samples per class and 32 parameter draws for RepCap.
CNR_REPLICAS = 32
REPCAP_PER_CLASS = 16
REPCAP_DRAWS = 32


def _clifford_angles(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 4, size=shape).astype(np.float64) * (math.pi / 2)


def _ideal_z(arch: Architecture, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact ``<Z_q>`` per row, from qiskit's Statevector of the logical circuit (an independent simulator)."""
    from qiskit.quantum_info import Statevector

    circuit = build_circuit(arch)
    out = np.empty((len(x), arch.n_qubits))
    for r in range(len(x)):
        values = circuit_values(circuit, x[r : r + 1], w[r : r + 1])
        bound = circuit.assign_parameters(values[0]) if values is not None else circuit
        probs = Statevector(bound).probabilities()
        index = np.arange(len(probs))
        for q in range(arch.n_qubits):
            out[r, q] = float(np.sum(probs * (1.0 - 2.0 * ((index >> q) & 1))))
    return out


def clifford_noise_resilience(
    scorer: NoisyScorer, arch: Architecture, replicas: int = CNR_REPLICAS, seed: int = 0
) -> float:
    """CNR in [0, 1]: 1 when the target's noise leaves every qubit's ``<Z>`` of every replica unchanged."""
    if replicas < 1:
        raise ValueError(f"replicas={replicas} must be >= 1")
    rng = np.random.default_rng(derive_run_seed(seed, arch, "cnr"))
    x = _clifford_angles(rng, (replicas, n_input_params(arch)))
    w = _clifford_angles(rng, (replicas, arch.n_weights))
    builder: ProgramBuilder = scorer.builder
    program = builder.build(arch)
    pubs = [(run.circuit, circuit_values(run.circuit, x, w)) for run in program.runs]
    counts = scorer.simulator.run(pubs, [run.shots for run in program.runs], derive_run_seed(seed, arch, "cnr-run"))
    qubits = sorted({q for run in program.runs for q in run.measured_qubits if q is not None})
    mit = scorer.mitigator(qubits) if scorer.mitigation else None
    noisy = program.expectations(counts, x, mit)
    ideal = _ideal_z(arch, x, w)
    return float(1.0 - np.mean(np.abs(np.clip(noisy, -1, 1) - ideal)) / 2.0)


def representational_capacity(
    arch: Architecture,
    splits: Any,
    frontend: str,
    *,
    per_class: int = REPCAP_PER_CLASS,
    draws: int = REPCAP_DRAWS,
    seed: int = 0,
) -> float:
    """RepCap in [0, 1]: 1 when same-class states coincide and different-class states are orthogonal."""
    X, y = splits.train.tensors
    n_classes = int(splits.n_classes)
    idx = torch.as_tensor(stratified_subset(y.numpy(), per_class * n_classes, seed))
    Xs, ys = X[idx], y[idx].numpy()
    same = (ys[:, None] == ys[None, :]).astype(np.float64)
    model = HQNN(arch, splits.input_shape, n_classes, frontend=frontend, seed=seed)
    gen = torch.Generator().manual_seed(derive_run_seed(seed, arch, "repcap"))
    plan = model.quantum.plan
    with torch.no_grad():
        inputs = model.encode(Xs).to(model.quantum_dtype)
        scores = []
        for _ in range(draws):
            w = torch.rand(arch.n_weights, generator=gen, dtype=model.quantum_dtype) * (2 * math.pi)
            psi = plan.state(inputs, w).to(torch.complex128)
            fid = (psi.conj() @ psi.T).abs().pow(2).numpy()
            scores.append(1.0 - float(np.sum((fid - same) ** 2)) / fid.size)
    return float(np.mean(scores))


class CnrRepcapScreen:
    """``[search] screen = "cnr-repcap"``: pick the ``n`` most promising of NSGA-II's proposals before training any.

    Élivágar's two stages: the better half of the proposals by CNR (at least ``n``), then the best ``n`` of
    those by RepCap.  Scores are cached per architecture (a proposal seen twice costs once) and are deterministic
    in (seed, architecture), so a resumed search selects what the first run selected.
    """

    def __init__(self, scorer: NoisyScorer, splits: Any, frontend: str, seed: int) -> None:
        self.scorer, self.splits, self.frontend, self.seed = scorer, splits, frontend, int(seed)
        self._cnr: dict[str, float] = {}
        self._repcap: dict[str, float] = {}
        self.seconds = 0.0

    def cnr(self, arch: Architecture) -> float:
        if arch.key() not in self._cnr:
            try:
                self._cnr[arch.key()] = clifford_noise_resilience(self.scorer, arch, seed=self.seed)
            except Exception:  # a proposal that cannot be built or placed screens last, the search decides
                self._cnr[arch.key()] = -math.inf
        return self._cnr[arch.key()]

    def repcap(self, arch: Architecture) -> float:
        if arch.key() not in self._repcap:
            try:
                value = representational_capacity(arch, self.splits, self.frontend, seed=self.seed)
            except Exception:
                value = -math.inf
            self._repcap[arch.key()] = value
        return self._repcap[arch.key()]

    def select(self, archs: list[Architecture], n: int) -> list[int]:
        """Indices (in proposal order) of the ``n`` proposals to evaluate."""
        import time

        if len(archs) <= n:
            return list(range(len(archs)))
        t0 = time.perf_counter()
        by_cnr = sorted(range(len(archs)), key=lambda i: (-self.cnr(archs[i]), archs[i].key()))
        half = by_cnr[: max(n, len(archs) // 2)]
        chosen = sorted(half, key=lambda i: (-self.repcap(archs[i]), archs[i].key()))[:n]
        self.seconds += time.perf_counter() - t0
        return sorted(chosen)
