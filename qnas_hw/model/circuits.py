"""The one source of truth for what circuit an :class:`Architecture` means.

:func:`gate_program` lists the gates in order; :func:`build_circuit` turns that
list into a parameterised ``qiskit.QuantumCircuit`` and the torch simulator
runs the same list (fused for speed).  Everything downstream (transpilation,
cut finding, hardware jobs) starts from :func:`build_circuit`, so a change of
convention here changes every consumer at once.

Conventions (qiskit's little-endian: qubit ``q`` is bit ``q`` of a basis index):

* inputs ``x`` are *angles* (the model scales features to angles first);
  amplitude embedding is the exception: the model hands raw features, the
  simulator normalises them and the circuit takes the RY-tree angles from
  :func:`amplitude_angles`.
* embeddings: ``angle-x/y``: ``RX/RY(x_q)``; ``angle-z``: ``H`` then ``RZ(x_q)``
  (RZ alone on |0> would only add a phase); ``iqp``: ``H``, ``RZ(x_q)``, then
  ``RZZ(x_i * x_j)`` on every pair ``i < j``; ``amplitude``: real amplitudes
  prepared by a tree of uniformly controlled RY rotations.
* each layer: every rotation of the block on every qubit (weight
  ``w[(layer * n + q) * R + r]``), then the entangler's CNOTs.
* readout: ``<Z_q>`` for every qubit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ParameterExpression, ParameterVector
from qiskit.quantum_info import SparsePauliOp

from qnas_hw.model.space import ENCODER_4X4, Architecture, SpaceError, base_embedding, reuploads

INPUT_NAME = "x"
WEIGHT_NAME = "w"
#: Widest amplitude-embedding *circuit* built.  Its RY tree has 2**n - 1 rotations whose angles together hold
#: about 4**n / 3 symbolic terms (building it takes 8 s at 10 qubits on a laptop and grows six-fold per qubit),
#: and a device would need as many CNOTs; the torch simulator prepares the state directly and is not limited.
AMPLITUDE_CIRCUIT_MAX_QUBITS = 12

#: A gate's argument: ("x", i) input angle i, ("w", i) weight i,
#: ("xx", i, j) the product x_i * x_j (IQP), ("amp", i) RY-tree expression i.
ParamRef = tuple[Any, ...]


@dataclass(frozen=True)
class Gate:
    """One gate of the program. ``param`` is None for fixed gates (h, cx)."""

    name: str
    qubits: tuple[int, ...]
    param: ParamRef | None = None


def entangler_pairs(kind: str, n_qubits: int, layer: int) -> list[tuple[int, int]]:
    """(control, target) CNOT pairs of one entangling block.

    ``sparse`` is the even-odd brickwork: even layers pair (0,1),(2,3)...,
    odd layers pair (1,2),(3,4)...; so two layers connect every neighbour
    with half the CNOTs of a chain.
    """
    n = n_qubits
    if kind == "none":
        return []
    if kind == "linear":
        return [(q, q + 1) for q in range(n - 1)]
    if kind == "ring":
        pairs = [(q, q + 1) for q in range(n - 1)]
        return pairs + [(n - 1, 0)] if n > 2 else pairs
    if kind == "full":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    if kind == "sparse":
        start = layer % 2
        return [(q, q + 1) for q in range(start, n - 1, 2)]
    raise SpaceError(f"unknown entangler {kind!r}")


def n_input_params(arch: Architecture) -> int:
    """Length of the circuit's input ParameterVector (2**n - 1 tree angles for amplitude)."""
    return 2**arch.n_qubits - 1 if arch.embedding == "amplitude" else arch.n_inputs


def _embedding_program(arch: Architecture) -> list[Gate]:
    n = arch.n_qubits
    emb = base_embedding(arch.embedding)
    if emb == ENCODER_4X4:
        # QuantumNAS's 4x4_ryzxy: layer k rotates every qubit q by feature k * n + q
        return [Gate(name, (q,), ("x", k * n + q)) for k, name in enumerate(("ry", "rz", "rx", "ry")) for q in range(n)]
    if emb in ("angle-x", "angle-y"):
        name = "rx" if emb == "angle-x" else "ry"
        return [Gate(name, (q,), ("x", q)) for q in range(n)]
    if emb == "angle-z":
        return [Gate("h", (q,)) for q in range(n)] + [Gate("rz", (q,), ("x", q)) for q in range(n)]
    if emb == "iqp":
        gates = [Gate("h", (q,)) for q in range(n)] + [Gate("rz", (q,), ("x", q)) for q in range(n)]
        gates += [Gate("rzz", (i, j), ("xx", i, j)) for i in range(n) for j in range(i + 1, n)]
        return gates
    if emb == "amplitude":
        return _amplitude_program(n)
    raise SpaceError(f"unknown embedding {emb!r}")


def _amplitude_program(n: int) -> list[Gate]:
    """RY tree: level k rotates qubit n-1-k, multiplexed on the k qubits above it.

    The multiplexor is decomposed recursively (A+B on control 0, A-B on control 1
    via X RY(b) X = RY(-b)), so every RY angle is a fixed +/- combination of the
    tree angles; ("amp", level, combo_index) refers to that combination.
    """
    gates: list[Gate] = []
    for level in range(n):
        target = n - 1 - level
        controls = list(range(n - 1, target, -1))  # most significant first
        gates += _multiplexed_ry(target, controls, level, ())
    return gates


def _multiplexed_ry(target: int, controls: list[int], level: int, path: tuple[int, ...]) -> list[Gate]:
    if not controls:
        return [Gate("ry", (target,), ("amp", level, path))]
    c0, rest = controls[-1], controls[:-1]  # split on the least significant control
    return (
        _multiplexed_ry(target, rest, level, path + (0,))
        + [Gate("cx", (c0, target))]
        + _multiplexed_ry(target, rest, level, path + (1,))
        + [Gate("cx", (c0, target))]
    )


def _amp_coefficients(level: int, path: tuple[int, ...]) -> np.ndarray:
    """Coefficients c such that the RY angle at ``path`` is sum_c c[i] * alpha_level[i].

    Controls are split from the least significant upwards; at each split,
    branch 0 ('A') averages and branch 1 ('B') halves the difference of the
    sub-multiplexors selected by that control bit.
    """
    size = 2**level
    coef = np.zeros(size)
    for c in range(size):
        value = 1.0
        for depth, branch in enumerate(path):
            bit = (c >> depth) & 1
            value *= 0.5 if branch == 0 or bit == 0 else -0.5
        coef[c] = value
    return coef


def gate_program(arch: Architecture) -> list[Gate]:
    """The full gate list: embedding, then ``n_layers`` x (rotations, entangler).

    A re-uploading embedding (``...-ru``) repeats its block before every
    trainable layer, with the same inputs (Perez-Salinas et al., Quantum 4, 226).
    """
    embedding = _embedding_program(arch)
    gates = list(embedding)
    n, rots = arch.n_qubits, arch.rotation.split("-")
    R = len(rots)
    for layer in range(arch.n_layers):
        if layer > 0 and reuploads(arch.embedding):
            gates += embedding
        for q in range(n):
            for r, rot in enumerate(rots):
                gates.append(Gate(rot, (q,), ("w", (layer * n + q) * R + r)))
        gates += [Gate("cx", pair) for pair in entangler_pairs(arch.entangler, n, layer)]
    return gates


def _resolve(ref: ParamRef, x: ParameterVector, w: ParameterVector) -> ParameterExpression:
    kind = ref[0]
    if kind == "x":
        return x[ref[1]]
    if kind == "w":
        return w[ref[1]]
    if kind == "xx":
        return x[ref[1]] * x[ref[2]]
    if kind == "amp":
        level, path = ref[1], ref[2]
        coef = _amp_coefficients(level, path)
        offset = 2**level - 1
        expr: Any = 0
        for i, c in enumerate(coef):
            expr = expr + float(c) * x[offset + i]
        return expr
    raise ValueError(f"unknown parameter reference {ref!r}")


def build_circuit(arch: Architecture, measure: bool = False) -> QuantumCircuit:
    """Parameterised circuit with ParameterVectors ``x`` (inputs) and ``w`` (weights).

    ``measure=True`` appends measurements of every qubit (for Sampler jobs);
    Estimator jobs use :func:`observables` instead.
    """
    if arch.embedding == "amplitude" and arch.n_qubits > AMPLITUDE_CIRCUIT_MAX_QUBITS:
        raise SpaceError(
            f"{arch.canonical()}: an amplitude-embedding circuit on {arch.n_qubits} qubits has {2**arch.n_qubits - 1} "
            f"RY-tree rotations and about {4**arch.n_qubits // 3} symbolic terms, too many to build, transpile or run; "
            f"amplitude circuits go up to {AMPLITUDE_CIRCUIT_MAX_QUBITS} qubits (use another embedding for wider "
            "ones, or keep space.qubits within that for amplitude)"
        )
    x = ParameterVector(INPUT_NAME, n_input_params(arch))
    w = ParameterVector(WEIGHT_NAME, arch.n_weights)
    qc = QuantumCircuit(arch.n_qubits, name=f"hqnn[{arch.canonical()}]")
    for gate in gate_program(arch):
        args = [] if gate.param is None else [_resolve(gate.param, x, w)]
        getattr(qc, gate.name)(*args, *gate.qubits)
    if measure:
        qc.measure_all()
    qc.metadata = {"architecture": arch.canonical()}
    return qc


def observables(arch: Architecture) -> list[SparsePauliOp]:
    """``Z_q`` for every qubit, in qiskit's little-endian label order."""
    n = arch.n_qubits
    return [SparsePauliOp("I" * (n - 1 - q) + "Z" + "I" * q) for q in range(n)]


def amplitude_angles(features: np.ndarray, n_qubits: int) -> np.ndarray:
    """Features (..., k <= 2**n) -> RY-tree angles (..., 2**n - 1) preparing x/|x|.

    Zero-padded to 2**n; an all-zero row prepares |0...0> (atan2(0, 0) = 0).
    Level k's angle for prefix c splits the weight of the half-blocks with
    bit (n-1-k) = 0 / 1; the last level uses signed atan2 so negative
    amplitudes are reproduced exactly.
    """
    feats = np.asarray(features, dtype=np.float64)
    dim = 2**n_qubits
    if feats.shape[-1] > dim:
        raise SpaceError(
            f"amplitude embedding on {n_qubits} qubits takes at most {dim} features, got {feats.shape[-1]}"
        )
    pad = [(0, 0)] * (feats.ndim - 1) + [(0, dim - feats.shape[-1])]
    amps = np.pad(feats, pad)
    lead = amps.shape[:-1]
    angles = []
    for level in range(n_qubits):
        target = n_qubits - 1 - level
        # index = prefix * 2**(target+1) + bit * 2**target + low
        blocks = amps.reshape(*lead, 2**level, 2, 2**target)
        if target == 0:
            a0, a1 = blocks[..., 0, 0], blocks[..., 1, 0]
        else:
            a0 = np.linalg.norm(blocks[..., 0, :], axis=-1)
            a1 = np.linalg.norm(blocks[..., 1, :], axis=-1)
        angles.append(2.0 * np.arctan2(a1, a0))
    return np.concatenate(angles, axis=-1)


def circuit_inputs(arch: Architecture, features: np.ndarray) -> np.ndarray:
    """Values for the ``x`` vector: the angles themselves, or the amplitude tree angles."""
    feats = np.asarray(features, dtype=np.float64)
    arch.check_features(feats.shape[-1])
    if arch.embedding == "amplitude":
        return amplitude_angles(feats, arch.n_qubits)
    return feats


def parameter_values(
    circuit: QuantumCircuit, arch: Architecture, features: np.ndarray, weights: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Parameter array (..., circuit.num_parameters) in ``circuit.parameters`` order.

    This is the array a Sampler/Estimator PUB takes, so a batch of samples is
    one PUB with a parameter array rather than one job per sample.
    """
    xs = circuit_inputs(arch, features)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != arch.n_weights:
        raise SpaceError(f"{arch.canonical()} has {arch.n_weights} weights, got {w.size}")
    lead = xs.shape[:-1]
    by_name: dict[str, np.ndarray] = {
        INPUT_NAME: xs,
        WEIGHT_NAME: np.broadcast_to(w, (*lead, w.size)),
    }
    cols = [by_name[p.vector.name][..., p.index] for p in circuit.parameters]
    return np.stack(cols, axis=-1)


def bind(circuit: QuantumCircuit, arch: Architecture, features: np.ndarray, weights: np.ndarray) -> QuantumCircuit:
    """One sample's circuit with every parameter bound (for cutting and reference checks)."""
    values = parameter_values(circuit, arch, np.asarray(features)[None, :], weights)[0]
    return circuit.assign_parameters(dict(zip(circuit.parameters, values, strict=True)))


@dataclass(frozen=True)
class CircuitMetrics:
    """Device-independent size figures, the search's proxy before a backend is chosen."""

    depth: int
    n_1q: int
    n_2q: int


#: What a circuit without any two-qubit gate is: every qubit stays unentangled from |0...0>, so each <Z_q> is a
#: function of that qubit's own inputs and a classical model computes it exactly.
PRODUCT_STATE = "product state (classically simulable)"


def entangling_gates(arch: Architecture) -> int:
    """Two-qubit gates the architecture's circuit keeps after optimisation (before any device routing).

    Zero means a product state (:data:`PRODUCT_STATE`): routing on a device
    only adds SWAPs between qubits that already interact, so such a circuit
    has no two-qubit gate on any device either.  ``[search]
    min_two_qubit_gates`` and the reports read it.
    """
    return circuit_metrics(arch).n_2q


def circuit_metrics(arch: Architecture, seed: int = 0) -> CircuitMetrics:
    """Depth and gate counts after transpiling to {rz, sx, x, cx} on all-to-all connectivity."""
    qc = build_circuit(arch)
    tqc = transpile(qc, basis_gates=["rz", "sx", "x", "cx"], optimization_level=1, seed_transpiler=seed)
    ops = tqc.count_ops()
    n_2q = int(ops.get("cx", 0))
    n_1q = int(sum(v for k, v in ops.items() if k != "cx"))
    return CircuitMetrics(depth=int(tqc.depth()), n_1q=n_1q, n_2q=n_2q)
