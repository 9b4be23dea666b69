"""Batched noisy simulation for scoring: every validation sample of a candidate at once, in torch, on CPU or CUDA.

:class:`TrajectorySimulator` has :class:`~qnas_hw.hardware.noise.NoisySimulator`'s
contract (``run(pubs, shots, seed)`` -> counts per PUB per row, qiskit's key
convention, seeded) and the same noise: the per-instruction errors
``NoiseModel.from_backend`` builds from the target (Aer's
``basic_device_gate_errors``: depolarising + thermal relaxation per gate;
``basic_device_readout_errors``), the idle qubits' relaxation when
``idle_noise`` is set, and the same circuits (:func:`~qnas_hw.hardware.noise.prepare_circuit`:
deflated to the used physical qubits, scheduled, mid-circuit measurements
deferred).  Aer stays the reference; the tests hold the two together.

Why: Aer evolves one density matrix per sample, 10-40 ms at 8 qubits, and a
statevector per *shot* beyond.  Here every sample is a column of one torch
tensor and each instruction is one batched kernel over all of them.

**Compilation** (once per circuit): runs of noiseless one-qubit gates (the
virtual ``rz`` carrying the sample's angles) are multiplied into a per-sample
2x2 matrix applied just before the next noisy gate on that qubit; each noisy
gate's unitary, its Aer error and the idle relaxation since the qubit's
previous gate (thermal relaxation commutes with ``rz``) are fused into one
channel, written as its canonical Kraus operators ``C_0, C_1, ...``
(eigenvectors of the Choi matrix, ``C_0`` the heaviest: the "no-jump"
operator).  Parameter expressions are evaluated for all rows at once
(affine ones as a matrix product, others through ``sympy.lambdify``), never
bound row by row.  Only the backward light cone of the measured qubits is
kept, split into independent clusters whose cones share no qubit (their
outcomes are independent, so each is simulated on its own qubits and the
shots are combined).

**Exact density matrix** for clusters of at most :data:`EXACT_MAX_QUBITS`
qubits: ``rho`` of all samples as ``(4**n, samples)``, each op its
superoperator ``sum_j C_j (x) conj(C_j)``.  No sampling error besides the shots.

**Quantum trajectories** beyond: a statevector per (sample, trajectory),
``(2**n, columns)``, each op applying ``C_0`` to every column and, with
probability ``1 - |C_0 psi|^2`` (a norm per column), a jump ``C_j`` drawn
with probability ``|C_j psi|^2`` from the reduced density matrix of the op's
qubits.  Variance is cut by stratifying on the no-jump path: the
unnormalised no-jump state ``psi~`` of each sample is evolved exactly, its
``|psi~|^2`` is the no-jump part of the outcome distribution (weight
``P0 = |psi~|^2``), and ``T`` trajectories are drawn *conditioned on at
least one jump*: each is born at its first jump (its op drawn from the
no-jump norms, stratified in ``T`` equal quantiles) from ``psi~`` and only
then costs work.  The estimate per sample is
``p = |psi~|^2 + (1 - P0) * mean_t |psi_t|^2``, unbiased.

**Trajectory count** (stated in :meth:`TrajectorySimulator.run`'s stats and
logged): a pilot of :data:`PILOT_TRAJECTORIES` per sample estimates, per
measured qubit, the trajectory variance of ``<Z_q>``,
``v = mean_samples (1 - P0)^2 s^2``, against the shot variance
``w = mean_samples (1 - <Z_q>^2)``, both of the bit as read (through its
readout error); then ``T = ceil(shots * max_q v / w / f^2)``
with ``f =`` :data:`TRAJECTORY_FRACTION`, clipped to
[:data:`PILOT_TRAJECTORIES`, ``max_trajectories``], so the trajectories' standard error of each
``<Z_q>`` is at most ``f`` times the shots' own (total standard error at
most ``sqrt(1 + f^2)`` = 1.12x a device run's).  Where the cap binds, the
stats report the ratio reached (``pilot_se_ratio``).  The pilot's
trajectories are kept.  The cost this implies: ``T`` grows with
``shots * (1 - P0)^2``, so a candidate that collects much noise (a routed
circuit whose qubits idle for microseconds) needs hundreds of trajectories
per sample.  Shots are then drawn from the per-sample mixture: readout errors
applied exactly (as :class:`~qnas_hw.hardware.noise.NoisySimulator` does),
a seeded multinomial per row.

Memory: samples are simulated in chunks sized for the cache (CPU) or the card
(CUDA); :func:`~qnas_hw.model.memory.check_fits` refuses a chunk of one
sample that does not fit, naming the sizes.  A circuit with an instruction this
module does not model (a parameterised two-qubit gate, a control-flow op) runs
on the Aer path instead (logged).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from qiskit import QuantumCircuit

from qnas_hw.hardware.backends.base import Backend
from qnas_hw.hardware.noise import (
    NoisySimulator,
    _split_final_measurements,
    delay_seconds,
    idle_dt,
    idle_error,
    prepare_circuit,
    shots_per_pub,
)
from qnas_hw.locking import ThreadLockPickling
from qnas_hw.model.memory import check_fits

log = logging.getLogger(__name__)

#: Clusters up to this many qubits are simulated exactly (density matrix); wider ones with trajectories.
EXACT_MAX_QUBITS = 5
#: The trajectories' standard error of each <Z_q> is at most this fraction of the shots' (see the module docstring).
TRAJECTORY_FRACTION = 0.5
#: Trajectories per sample in the pilot that sets the count (also the minimum).
PILOT_TRAJECTORIES = 16
#: Default cap on trajectories per sample.
MAX_TRAJECTORIES = 256
#: Working set per chunk of samples: about the last-level cache on a CPU, a slice of the card's memory on CUDA.
CHUNK_BYTES = {"cpu": 32 * 2**20, "cuda": 2 * 2**30}
#: Weight below which a Kraus operator is dropped (the channel's trace changes by less than this).
_KRAUS_ATOL = 1e-12


class UnsupportedCircuit(ValueError):
    """An instruction the trajectory compiler does not model; the caller runs the circuit on Aer instead."""


# ------------------------------------------------------------------ parameters
class _Angles:
    """Every distinct parameter expression of a circuit, evaluated for all rows at once.

    Affine expressions (all the embedding and weight angles) become one
    matrix product; anything else (IQP's ``x_i * x_j``) is lambdified once.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.column = {name: i for i, name in enumerate(names)}
        self.index: dict[str, int] = {}
        self._affine: list[tuple[int, np.ndarray, float]] = []
        self._other: list[tuple[int, Any, list[int]]] = []

    def add(self, expr: Any) -> int:
        """Index of ``expr``'s row in :meth:`evaluate`'s output (registering it once)."""
        key = str(expr)
        if key in self.index:
            return self.index[key]
        k = len(self.index)
        self.index[key] = k
        params = list(expr.parameters)
        for p in params:
            if p.name not in self.column:
                raise UnsupportedCircuit(f"parameter {p.name} has no value column")
        grads = [expr.gradient(p) for p in params]
        if all(isinstance(g, int | float) for g in grads):
            coeff = np.zeros(len(self.column))
            for p, g in zip(params, grads, strict=True):
                coeff[self.column[p.name]] += float(g)
            const = float(expr.bind({p: 0.0 for p in params}).numeric()) if params else float(expr.numeric())
            self._affine.append((k, coeff, const))
        else:
            import sympy

            symbols = [sympy.Symbol(p.name) for p in params]
            fn = sympy.lambdify(symbols, expr.sympify(), "numpy")
            self._other.append((k, fn, [self.column[p.name] for p in params]))
        return k

    def evaluate(self, values: np.ndarray) -> np.ndarray:
        """``(n_expressions, rows)`` angles from ``(rows, n_params)`` values."""
        out = np.zeros((len(self.index), values.shape[0]))
        if self._affine:
            rows = [k for k, _, _ in self._affine]
            coeff = np.stack([c for _, c, _ in self._affine])
            const = np.array([c for _, _, c in self._affine])
            out[rows] = coeff @ values.T + const[:, None]
        for k, fn, cols in self._other:
            out[k] = np.real(np.asarray(fn(*[values[:, c] for c in cols]), dtype=complex))
        return out


def _rotation(name: str, theta: np.ndarray) -> np.ndarray:
    """``(rows, 2, 2)`` matrices of a parameterised one-qubit gate."""
    c, s = np.cos(theta / 2), np.sin(theta / 2)
    out = np.zeros((len(theta), 2, 2), dtype=complex)
    if name == "rz":
        out[:, 0, 0], out[:, 1, 1] = np.exp(-0.5j * theta), np.exp(0.5j * theta)
    elif name in ("p", "u1"):
        out[:, 0, 0], out[:, 1, 1] = 1.0, np.exp(1j * theta)
    elif name == "rx":
        out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1] = c, -1j * s, -1j * s, c
    elif name == "ry":
        out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1] = c, -s, s, c
    else:  # pragma: no cover - filtered by _ROTATIONS
        raise UnsupportedCircuit(name)
    return out


_ROTATIONS = frozenset({"rz", "p", "u1", "rx", "ry"})
_DIAGONAL = frozenset({"rz", "p", "u1"})


# ------------------------------------------------------------------ channels
def _canonical(kraus: Sequence[np.ndarray]) -> np.ndarray:
    """The canonical (Choi-eigenvector) Kraus operators of a channel, heaviest first: ``(R, d, d)``.

    Fusing gate, error and idle channels multiplies their Kraus counts; the
    canonical form has at most ``d**2`` and puts the no-jump operator first.
    """
    mats = np.asarray(kraus, dtype=complex)
    if len(mats) > 1:
        d = mats.shape[-1]
        vecs = mats.reshape(len(mats), d * d)
        # einsum, not BLAS: a threaded BLAS call on a busy machine costs milliseconds for a 16 x 16 product
        lam, v = np.linalg.eigh(np.einsum("ri,rj->ij", vecs, vecs.conj()))
        keep = lam > _KRAUS_ATOL
        mats = (v[:, keep] * np.sqrt(lam[keep])).T.reshape(-1, d, d)[np.argsort(-lam[keep], kind="stable")]
    mats = mats.copy()
    mats[np.abs(mats) < 1e-12] = 0.0  # exact zeros: the kernels skip them (a CNOT is four scaled copies)
    return mats


def _compose(after: Sequence[np.ndarray], before: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Kraus operators of ``after o before`` (every product, one einsum)."""
    a, b = np.asarray(after, dtype=complex), np.asarray(before, dtype=complex)
    return list(np.einsum("aij,bjk->abik", a, b).reshape(-1, a.shape[-1], a.shape[-1]))


def _kron_kraus(high: Sequence[np.ndarray], low: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Kraus operators of two independent channels on (low, high) qubits, qiskit's little-endian order."""
    return [np.kron(h, lo) for h in high for lo in low]


_RESET = [np.array([[1, 0], [0, 0]], dtype=complex), np.array([[0, 1], [0, 0]], dtype=complex)]
_I2 = np.eye(2, dtype=complex)
_SWAP = np.eye(4, dtype=complex)[[0, 2, 1, 3]]


def error_kraus(error: Any) -> np.ndarray:
    """An Aer ``QuantumError`` as its canonical Kraus matrices (qiskit's little-endian order on its qubits).

    Built from the error's own mixture (probability x circuit of Paulis,
    resets and Kraus instructions), term by term: ``QuantumError.to_quantumchannel``
    builds the same channel through qiskit's instruction-to-superoperator path,
    about 60 ms per two-qubit error.
    """
    n = int(error.num_qubits)
    out = []
    for circuit, prob in zip(error.circuits, error.probabilities, strict=True):
        if prob <= 0:
            continue
        kraus = [np.eye(1 << n, dtype=complex)]
        for inst in circuit.data:
            qs = tuple(circuit.find_bit(q).index for q in inst.qubits)
            kraus = _compose([_widen(k, qs, n) for k in _instruction_kraus(inst.operation)], kraus)
        out.extend(math.sqrt(prob) * k for k in kraus)
    return _canonical(out)


def _instruction_kraus(operation: Any) -> list[np.ndarray]:
    """Kraus operators of one instruction of an Aer error circuit."""
    if operation.name == "reset":
        return list(_RESET)
    if operation.name == "kraus":
        return [np.asarray(k, dtype=complex) for k in operation.params]
    return [_unitary(operation)]


def _widen(matrix: np.ndarray, qubits: tuple[int, ...], n: int) -> np.ndarray:
    """A matrix on ``qubits`` (of an n <= 2 qubit error) written on all n qubits."""
    if len(qubits) == n:
        return matrix if qubits == tuple(range(n)) else _SWAP @ matrix @ _SWAP
    return np.kron(_I2, matrix) if qubits == (0,) else np.kron(matrix, _I2)


# ------------------------------------------------------------------ compiled circuits
@dataclass(frozen=True)
class _Factor:
    """One noiseless one-qubit gate of a pending run: a fixed matrix, or a rotation by angle ``angle``."""

    matrix: np.ndarray | None = None
    name: str = ""
    angle: int = -1

    @property
    def diagonal(self) -> bool:
        if self.matrix is None:
            return self.name in _DIAGONAL
        return bool(abs(self.matrix[0, 1]) < 1e-15 and abs(self.matrix[1, 0]) < 1e-15)


@dataclass(frozen=True)
class _Op:
    """One fused step: per-row noiseless ``pre`` (one-qubit ops only), then the channel ``kraus`` on ``qubits``."""

    qubits: tuple[int, ...]
    kraus: np.ndarray
    pre: tuple[_Factor, ...] = ()

    @property
    def noisy(self) -> bool:
        return len(self.kraus) > 1


@dataclass
class _Cluster:
    """Measured qubits whose light cones overlap, with the ops of that cone on local qubit numbers."""

    qubits: list[int]  # circuit qubits, local index = position
    ops: list[_Op]
    bits: list[int]  # positions (into the circuit's measured list) of this cluster's measured qubits
    measured: list[int]  # local qubit of each of those bits


@dataclass
class _Compiled:
    clusters: list[_Cluster]
    measured: list[tuple[int, int]]  # (circuit qubit, clbit) in clbit order
    n_clbits: int
    angles: _Angles
    physical: list[int]
    stand_ins: list[int]


class _Compiler:
    """Turns a prepared (deflated, scheduled, deferred) circuit into fused ops (see the module docstring)."""

    def __init__(self, sim: TrajectorySimulator, small: QuantumCircuit, physical: list[int], names: list[str]):
        self.sim = sim
        self.small = small
        self.physical = physical
        self.angles = _Angles(names)
        n = small.num_qubits
        self.pre: list[list[_Factor]] = [[] for _ in range(n)]
        self.delay: list[list[np.ndarray] | None] = [None] * n
        self.touched = [False] * n
        self.ops: list[_Op] = []

    def _physical(self, qs: tuple[int, ...]) -> tuple[int, ...] | None:
        if any(q >= len(self.physical) for q in qs):
            return None  # a deferred-measurement ancilla: noiseless
        return tuple(int(self.physical[q]) for q in qs)

    def _factor(self, operation: Any) -> _Factor:
        params = list(operation.params)
        if any(hasattr(p, "parameters") and p.parameters for p in params):
            if operation.name not in _ROTATIONS:
                raise UnsupportedCircuit(f"parameterised gate {operation.name!r}")
            return _Factor(name=operation.name, angle=self.angles.add(params[0]))
        return _Factor(matrix=_unitary(operation))

    def flush_pre(self, q: int) -> None:
        if self.pre[q]:
            factors = tuple(self.pre[q])
            self.pre[q] = []
            if all(f.matrix is not None for f in factors):
                self.ops.append(_Op((q,), _canonical([_fixed_product(factors)])))
            else:
                self.ops.append(_Op((q,), np.array([_I2]), factors))
            self.touched[q] = True

    def flush_delay(self, q: int) -> None:
        if self.delay[q] is not None:
            self.ops.append(_Op((q,), _canonical(self.delay[q])))
            self.delay[q] = None

    def add_delay(self, q: int, operation: Any) -> None:
        where = self._physical((q,))
        if where is None or not (self.touched[q] or self.pre[q]):
            return  # a qubit still in |0> does not relax; an ancilla has no T1
        error = idle_error(self.sim.backend.target, where[0], delay_seconds(operation, self.sim.dt))
        if error is None:
            return
        if not all(f.diagonal for f in self.pre[q]):
            self.flush_pre(q)  # relaxation commutes with Z rotations only
        kraus = error_kraus(error)
        self.delay[q] = kraus if self.delay[q] is None else _canonical(_compose(kraus, self.delay[q]))

    def add_gate(self, operation: Any, qs: tuple[int, ...]) -> None:
        name = operation.name
        where = self._physical(qs)
        error = self.sim.gate_error(name, where) if where is not None else None
        if len(qs) == 1 and error is None and name != "reset":
            factor = self._factor(operation)
            if not factor.diagonal:
                self.flush_delay(qs[0])
            self.pre[qs[0]].append(factor)
            return
        if len(qs) > 2:
            raise UnsupportedCircuit(f"{len(qs)}-qubit instruction {name!r}")
        ideal, pre = self._ideal(operation, qs)
        delays = [self.delay[q] if self.delay[q] is not None else [_I2] for q in qs]
        idle = delays[0] if len(qs) == 1 else _kron_kraus(delays[1], delays[0])
        channel = _compose(ideal, idle)
        if error is not None:
            channel = _compose(error, channel)
        for q in qs:
            self.delay[q] = None
            self.touched[q] = True
        self.ops.append(_Op(qs, _canonical(channel), pre))

    def _ideal(self, operation: Any, qs: tuple[int, ...]) -> tuple[list[np.ndarray], tuple[_Factor, ...]]:
        """The gate's own Kraus operators with fixed pending gates folded in, and the per-row pending part."""
        if operation.name == "reset":
            ideal = list(_RESET)
        else:
            factor = self._factor(operation) if len(qs) == 1 else None
            if factor is not None and factor.matrix is None:  # a noisy parameterised rotation: run it as `pre`
                self.flush_delay(qs[0])
                self.pre[qs[0]].append(factor)
                ideal = [_I2]
            else:
                ideal = [_unitary(operation)]
        if len(qs) == 2:
            for q in qs:
                if any(f.matrix is None for f in self.pre[q]):
                    self.flush_pre(q)
            fixed = [_fixed_product(self.pre[q]) for q in qs]
            self.pre[qs[0]], self.pre[qs[1]] = [], []
            return [k @ np.kron(fixed[1], fixed[0]) for k in ideal], ()
        factors = tuple(self.pre[qs[0]])
        self.pre[qs[0]] = []
        if all(f.matrix is not None for f in factors):
            return [k @ _fixed_product(factors) for k in ideal], ()
        return ideal, factors

    def compile(self) -> tuple[list[_Op], list[tuple[int, int]]]:
        body, measured = _split_final_measurements(self.small)
        for inst in body.data:
            name = inst.operation.name
            qs = tuple(body.find_bit(q).index for q in inst.qubits)
            if name == "barrier":
                continue
            if name == "delay":
                self.add_delay(qs[0], inst.operation)
            elif name == "measure" or inst.clbits:
                raise UnsupportedCircuit(f"instruction {name!r} writes classical bits before the end")
            else:
                self.add_gate(inst.operation, qs)
        for q, _ in measured:  # what is still pending changes the outcome unless it is diagonal
            self.flush_delay(q)
            if not all(f.diagonal for f in self.pre[q]):
                self.flush_pre(q)
        return _fuse(self.ops), measured


def _unitary(operation: Any) -> np.ndarray:
    """The matrix of a gate without free parameters (qiskit's little-endian order on its qubits)."""
    from qiskit.quantum_info import Operator

    if any(hasattr(p, "parameters") and p.parameters for p in operation.params):
        raise UnsupportedCircuit(f"parameterised {operation.num_qubits}-qubit gate {operation.name!r}")
    try:
        return np.asarray(Operator(operation).data, dtype=complex)
    except Exception as exc:  # qiskit raises several types for non-unitary instructions
        raise UnsupportedCircuit(f"instruction {operation.name!r} has no matrix: {exc}") from exc


def _fixed_product(factors: Sequence[_Factor]) -> np.ndarray:
    out = _I2.copy()
    for f in factors:
        assert f.matrix is not None
        out = f.matrix @ out
    return out


def _embed(op: _Op, qubits: tuple[int, ...]) -> list[np.ndarray]:
    """``op``'s Kraus operators written on ``qubits`` (one or two qubits containing op's)."""
    if op.qubits == qubits:
        return list(op.kraus)
    if len(op.qubits) == 2:  # the same pair in the other order
        return [_SWAP @ k @ _SWAP for k in op.kraus]
    if op.qubits[0] == qubits[0]:
        return [np.kron(_I2, k) for k in op.kraus]
    return [np.kron(k, _I2) for k in op.kraus]


def _fuse(ops: Sequence[_Op]) -> list[_Op]:
    """Runs of fixed (sample-independent) ops within one qubit pair merged into one channel.

    A routed SWAP is three CNOTs on one pair, each with its error: one fused
    two-qubit channel costs one pass over the state instead of three.  A
    fixed one-qubit op whose qubit is not touched again before a two-qubit op
    on it is moved into that op.  Ops with per-sample angles are left alone.
    """
    out: list[_Op | None] = []
    last: dict[int, int] = {}
    for op in ops:
        if not op.pre:
            owners = {last.get(q) for q in op.qubits}
            if len(owners) == 1 and None not in owners:
                i = owners.pop()
                prev = out[i]
                if prev is not None and not prev.pre and set(op.qubits) <= set(prev.qubits):
                    out[i] = _Op(prev.qubits, _canonical(_compose(_embed(op, prev.qubits), prev.kraus)))
                    continue
            if len(op.qubits) == 2:
                kraus = list(op.kraus)
                for q in op.qubits:
                    i = last.get(q)
                    prev = out[i] if i is not None else None
                    if prev is not None and not prev.pre and prev.qubits == (q,):
                        kraus = _compose(kraus, _embed(prev, op.qubits))
                        out[i] = None
                op = _Op(op.qubits, _canonical(kraus))
        out.append(op)
        for q in op.qubits:
            last[q] = len(out) - 1
    return [op for op in out if op is not None]


def _light_cone(ops: Sequence[_Op], seeds: set[int]) -> tuple[set[int], list[int]]:
    """Qubits and op indices that can influence a measurement of ``seeds`` (walking the ops backwards)."""
    live = set(seeds)
    keep = []
    for i in range(len(ops) - 1, -1, -1):
        if live.intersection(ops[i].qubits):
            live.update(ops[i].qubits)
            keep.append(i)
    return live, keep[::-1]


def _clusters(ops: list[_Op], measured: list[tuple[int, int]]) -> list[_Cluster]:
    """Independent groups of measured qubits: union of those whose backward light cones share a qubit."""
    groups: list[tuple[set[int], list[int]]] = []  # (cone qubits, positions in `measured`)
    for pos, (q, _) in enumerate(measured):
        cone, _ = _light_cone(ops, {q})
        merged = [g for g in groups if g[0] & cone]
        for g in merged:
            groups.remove(g)
            cone |= g[0]
        groups.append((cone, sorted([pos, *[p for g in merged for p in g[1]]])))
    out = []
    for _, positions in sorted(groups, key=lambda g: g[1][0]):
        cone, keep = _light_cone(ops, {measured[p][0] for p in positions})
        qubits = sorted(cone)
        local = {q: i for i, q in enumerate(qubits)}
        cops = [_Op(tuple(local[q] for q in ops[i].qubits), ops[i].kraus, ops[i].pre) for i in keep]
        out.append(_Cluster(qubits, cops, positions, [local[measured[p][0]] for p in positions]))
    return out


# ------------------------------------------------------------------ kernels
def _blocks(state: torch.Tensor, qubits: Sequence[int]) -> list[torch.Tensor]:
    """Views of ``state`` (2**n, cols) per basis index of ``qubits`` (bit j of the index = qubits[j])."""
    dim, cols = state.shape
    if len(qubits) == 1:
        q = qubits[0]
        v = state.view(dim >> (q + 1), 2, 1 << q, cols)
        return [v[:, 0], v[:, 1]]
    a, b = sorted(qubits)
    v = state.view(dim >> (b + 1), 2, 1 << (b - a - 1), 2, 1 << a, cols)
    out = []
    for i in range(4):
        bit = {qubits[0]: i & 1, qubits[1]: (i >> 1) & 1}
        out.append(v[:, bit[b], :, bit[a]])
    return out


def _apply(state: torch.Tensor, matrix: Any, qubits: Sequence[int], out: torch.Tensor) -> torch.Tensor:
    """``out = matrix . state`` on ``qubits``: ``matrix`` a fixed nested list (K x K) or a tensor (K, K, cols).

    Written as K**2 scaled adds of strided blocks (zeros skipped, so a CNOT or
    a diagonal costs one scaled copy per block): a small matrix times a
    state that is mostly the sample axis is memory-bound, and this touches
    each block once per non-zero.
    """
    if len(qubits) > 2:
        return _apply_wide(state, matrix, qubits, out)
    src, dst = _blocks(state, qubits), _blocks(out, qubits)
    for i, o in enumerate(dst):
        started = False
        for j, s in enumerate(src):
            m = matrix[i][j]
            if m is None or (not isinstance(m, torch.Tensor) and m == 0):
                continue
            if not started:
                torch.mul(s, m, out=o)
            elif isinstance(m, torch.Tensor):
                o.addcmul_(s, m)
            else:
                o.add_(s, alpha=m)
            started = True
        if not started:
            o.zero_()
    return out


def _apply_wide(state: torch.Tensor, matrix: Any, qubits: Sequence[int], out: torch.Tensor) -> torch.Tensor:
    """A fixed matrix on 3+ qubits (a two-qubit superoperator): bring the axes forward, one matmul, put them back."""
    dim, cols = state.shape
    n = dim.bit_length() - 1
    k = len(qubits)
    axes = [n - 1 - q for q in reversed(qubits)]  # most significant local bit first
    v = state.view(*([2] * n), cols).movedim(axes, list(range(k)))
    shape = v.shape
    m = torch.as_tensor(matrix, dtype=state.dtype, device=state.device)
    res = (m @ v.reshape(1 << k, -1)).view(shape).movedim(list(range(k)), axes)
    out.copy_(res.reshape(dim, cols))
    return out


def _abs2(state: torch.Tensor) -> torch.Tensor:
    """``|amplitude|^2`` elementwise (``abs()`` of a complex tensor is several times slower: it takes a root)."""
    return torch.view_as_real(state).square().sum(-1)


def _norms(state: torch.Tensor) -> torch.Tensor:
    """Squared norm of every column."""
    dim, cols = state.shape
    return torch.view_as_real(state).reshape(dim, 2 * cols).square().sum(0).view(cols, 2).sum(1)


def _per_col(mats: torch.Tensor, mask: list[list[bool]] | None = None) -> list[list[torch.Tensor | None]]:
    """``(cols, K, K)`` matrices as a K x K nested list of column vectors (None where all are zero).

    ``mask`` (which entries can be non-zero) saves a pass when the caller knows it.
    """
    return _entries(mats.permute(1, 2, 0).contiguous(), mask)


def _entries(cols: torch.Tensor, mask: list[list[bool]] | None = None) -> list[list[torch.Tensor | None]]:
    """``(K, K, cols)`` as a nested list of its (contiguous) rows, None where ``mask`` says zero."""
    k = cols.shape[0]
    if mask is None:
        mask = (cols != 0).any(-1).tolist()
    return [[cols[i, j] if mask[i][j] else None for j in range(k)] for i in range(k)]


def _fixed(matrix: np.ndarray) -> list[list[complex]]:
    return [[complex(x) for x in row] for row in matrix]


# ------------------------------------------------------------------ the runs of one cluster
@dataclass
class _OpTensors:
    """One op, ready for a run: its no-jump matrix (fixed or per sample) and its jump operators."""

    op: _Op
    g0: Any  # fixed nested list, or (K, K, samples) tensor
    g0_mask: list[list[bool]] | None  # per-sample g0: which entries can be non-zero
    pre: torch.Tensor | None  # (samples, K, K) noiseless per-sample part, or None
    jumps: torch.Tensor  # (R - 1, K, K)
    jump_effects: torch.Tensor  # (R - 1, K, K): C_j^dagger C_j


def _op_tensors(ops: Sequence[_Op], angles: np.ndarray, device: torch.device) -> list[_OpTensors]:
    out = []
    for op in ops:
        kraus = torch.as_tensor(op.kraus, dtype=torch.complex64, device=device)
        pre = None
        if op.pre:
            mats = np.broadcast_to(_I2, (angles.shape[1], 2, 2)).copy()
            for f in op.pre:
                gate = f.matrix if f.matrix is not None else _rotation(f.name, angles[f.angle])
                mats = np.einsum("ij,bjk->bik" if gate.ndim == 2 else "bij,bjk->bik", gate, mats)  # no BLAS
            pre = torch.as_tensor(mats, dtype=torch.complex64, device=device)
        jumps = kraus[1:]
        effects = jumps.conj().transpose(-1, -2) @ jumps
        if pre is None:
            out.append(_OpTensors(op, _fixed(op.kraus[0]), None, None, jumps, effects))
            continue
        g0 = (kraus[0] @ pre).permute(1, 2, 0).contiguous()
        out.append(_OpTensors(op, g0, (g0 != 0).any(-1).tolist(), pre, jumps, effects))
    return out


def _marginal(probs: torch.Tensor, n: int, measured: Sequence[int]) -> torch.Tensor:
    """``(2**n, cols)`` distributions to ``(2**m, cols)`` over ``measured`` (bit j = measured[j])."""
    cols = probs.shape[1]
    v = probs.view(*([2] * n), cols)
    keep = {n - 1 - q for q in measured}
    drop = [ax for ax in range(n) if ax not in keep]
    if drop:
        v = v.sum(dim=drop)
    remaining = sorted(keep)  # axes left, in order
    order = [remaining.index(n - 1 - q) for q in reversed(measured)]
    return v.permute(*order, len(remaining)).reshape(1 << len(measured), cols)


def _exact(cluster: _Cluster, tensors: list[_OpTensors], samples: int, device: torch.device) -> torch.Tensor:
    """Exact noisy distributions ``(2**m, samples)`` of a small cluster: density matrices, one column each."""
    n = len(cluster.qubits)
    dim = 1 << n
    rho = torch.zeros(dim * dim, samples, dtype=torch.complex64, device=device)
    rho[0] = 1.0
    spare = torch.empty_like(rho)
    for t in tensors:
        qs = t.op.qubits
        if t.pre is not None:  # rho -> P rho P^dagger: P on the row bits (n + q), conj(P) on the column bits (q)
            for mats, where in ((t.pre, tuple(n + q for q in qs)), (t.pre.conj(), qs)):
                rho, spare = _apply(rho, _per_col(mats), where, spare), rho
        kraus = t.op.kraus
        if len(kraus) == 1 and np.allclose(kraus[0], np.eye(len(kraus[0]))):
            continue
        superop = sum(np.kron(k, k.conj()) for k in kraus)
        where = qs + tuple(n + q for q in qs)
        rho, spare = _apply(rho, _fixed(superop) if len(where) <= 2 else superop, where, spare), rho
    probs = rho[:: dim + 1].real.clamp_min(0)
    return _marginal(probs, n, cluster.measured)


@dataclass
class _Batch:
    """One batch of trajectories over all samples: summed outcome distributions and per-qubit <Z> moments."""

    sums: torch.Tensor  # (2**m, samples): sum over trajectories of |psi_t|^2, marginalised
    z1: torch.Tensor  # (samples, m): sum of <Z_q> over trajectories
    z2: torch.Tensor  # (samples, m): sum of <Z_q>^2
    count: int


class _Trajectories:
    """Trajectories of one cluster (see the module docstring): no-jump path exact, jumps sampled."""

    def __init__(
        self, cluster: _Cluster, tensors: list[_OpTensors], device: torch.device, generator: torch.Generator
    ) -> None:
        self.cluster = cluster
        self.tensors = tensors
        self.n = len(cluster.qubits)
        self.dim = 1 << self.n
        self.device = device
        self.gen = generator
        self.noisy = [i for i, t in enumerate(tensors) if t.op.noisy]
        m = len(cluster.measured)
        bits = (np.arange(1 << m)[:, None] >> np.arange(m)[None, :]) & 1
        self.zsign = torch.as_tensor(1.0 - 2.0 * bits, dtype=torch.float32, device=device)  # (2**m, m)

    def _g0(self, t: _OpTensors, samples: torch.Tensor | None) -> Any:
        if not isinstance(t.g0, torch.Tensor):
            return t.g0
        return _entries(t.g0 if samples is None else t.g0.index_select(2, samples), t.g0_mask)

    def no_jump(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The unnormalised no-jump state per sample, its squared norm, and every first-jump event's probability.

        Event (noisy op k, jump j) has probability ``|C_j P psi~_{k-1}|^2``
        (``psi~`` unnormalised, so its norm is the probability of no jump
        before k): ``(R_k - 1, samples)`` per noisy op.
        """
        cols = rows.stop - rows.start
        idx = torch.arange(rows.start, rows.stop, device=self.device)
        psi = self._zero(cols)
        spare = torch.empty_like(psi)
        events = []
        for t in self.tensors:
            if t.op.noisy:
                if t.pre is not None:
                    psi, spare = _apply(psi, _per_col(t.pre[idx]), t.op.qubits, spare), psi
                    g0: Any = _fixed(t.op.kraus[0])
                else:
                    g0 = self._g0(t, idx)
                events.append(_jump_weights(t, psi).T)
                psi, spare = _apply(psi, g0, t.op.qubits, spare), psi
            else:
                psi, spare = _apply(psi, self._g0(t, idx), t.op.qubits, spare), psi
        return psi, _norms(psi), events

    def _zero(self, cols: int) -> torch.Tensor:
        psi = torch.zeros(self.dim, cols, dtype=torch.complex64, device=self.device)
        psi[0] = 1.0
        return psi

    def births(self, events: list[torch.Tensor], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """First jump (noisy op position, jump index) of ``count`` trajectories per sample, each ``(samples, count)``.

        Stratified over the first-jump events in op order: trajectory t draws
        its quantile in [t/count, (t+1)/count) of their distribution, so both
        where the first jump happens and which one it is are spread evenly.
        """
        table = torch.cat(events)  # (events, samples)
        cols = table.shape[1]
        cdf = table.T.cumsum(1).contiguous()  # (samples, events)
        u = (
            torch.arange(count, device=self.device)[None, :]
            + torch.rand(cols, count, generator=self.gen, device=self.device)
        ) / count
        event = torch.searchsorted(cdf, (u * cdf[:, -1:]).contiguous()).clamp_(max=len(table) - 1)
        op_of = torch.cat([torch.full((len(e),), i, device=self.device) for i, e in enumerate(events)])
        jump_of = torch.cat([torch.arange(len(e), device=self.device) for e in events])
        return op_of[event], jump_of[event]

    def run(self, rows: slice, count: int) -> tuple[torch.Tensor, torch.Tensor, _Batch]:
        """``count`` conditioned trajectories per sample of ``rows``: (no-jump probs, P0, the batch's sums)."""
        cols = rows.stop - rows.start
        psi_nj, p0, events = self.no_jump(rows)
        m = len(self.cluster.measured)
        nj_probs = _marginal(_abs2(psi_nj), self.n, self.cluster.measured)
        empty = _Batch(
            torch.zeros_like(nj_probs),
            torch.zeros(cols, m, device=self.device),
            torch.zeros(cols, m, device=self.device),
            count,
        )
        if not self.noisy or count == 0:
            return nj_probs, p0, empty
        first, jump = self.births(events, count)  # (cols, count) each
        order = torch.argsort(first.reshape(-1), stable=True)
        born_sample = (order // count).to(torch.long)
        born_jump = jump.reshape(-1)[order]
        starts = torch.searchsorted(first.reshape(-1)[order], torch.arange(len(self.noisy) + 1, device=self.device))
        starts_list = starts.tolist()
        total = cols * count
        psi = torch.empty(self.dim, total, dtype=torch.complex64, device=self.device)
        spare = torch.empty_like(psi)
        nrm = torch.ones(total, device=self.device)
        phi = self._zero(cols)
        phi_spare = torch.empty_like(phi)
        active = 0
        every = torch.arange(rows.start, rows.stop, device=self.device)
        born_global = born_sample + rows.start
        position = {k: i for i, k in enumerate(self.noisy)}
        for k, t in enumerate(self.tensors):
            if active:
                psi, spare, nrm = self._step(t, psi, spare, nrm, active, born_global[:active])
            if t.op.noisy:
                i = position[k]
                lo, hi = starts_list[i], starts_list[i + 1]
                if hi > lo:
                    samples = born_sample[lo:hi]
                    mats = t.jumps[born_jump[lo:hi]]
                    if t.pre is not None:
                        mats = mats @ t.pre[samples + rows.start]
                    _apply(phi[:, samples], _per_col(mats), t.op.qubits, psi[:, lo:hi])
                    nrm[lo:hi] = _norms(psi[:, lo:hi])
                    active = hi
            phi, phi_spare = _apply(phi, self._g0(t, every), t.op.qubits, phi_spare), phi
        probs = _abs2(psi[:, :active]) / nrm[:active].clamp_min(1e-30)
        marg = _marginal(probs, self.n, self.cluster.measured)  # (2**m, active)
        z = marg.T @ self.zsign  # (active, m)
        sums = torch.zeros_like(nj_probs).index_add_(1, born_sample[:active], marg)
        z1 = torch.zeros(cols, m, device=self.device).index_add_(0, born_sample[:active], z)
        z2 = torch.zeros(cols, m, device=self.device).index_add_(0, born_sample[:active], z.square())
        return nj_probs, p0, _Batch(sums, z1, z2, count)

    def _step(
        self,
        t: _OpTensors,
        psi: torch.Tensor,
        spare: torch.Tensor,
        nrm: torch.Tensor,
        active: int,
        samples: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every live trajectory through one op: ``C_0`` for all, a sampled jump where the no-jump draw fails."""
        old, new = psi[:, :active], spare[:, :active]
        _apply(old, self._g0(t, samples), t.op.qubits, new)
        if t.op.noisy:
            kept = _norms(new)
            u = torch.rand(active, generator=self.gen, device=self.device)
            jumped = torch.nonzero(u * nrm[:active] > kept).flatten()
            nrm[:active] = kept
            if len(jumped):
                fresh, fresh_norm = self._jump(t, old[:, jumped], samples[jumped])
                new[:, jumped] = fresh
                nrm[jumped] = fresh_norm
            low = nrm[:active].min()
            if low < 1e-20:  # renormalise before float32 runs out of range (very deep circuits)
                new.div_(nrm[:active].sqrt())
                nrm[:active] = 1.0
        return spare, psi, nrm

    def _jump(self, t: _OpTensors, cols: torch.Tensor, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Columns ``cols`` after a jump ``C_j`` (j >= 1) drawn with probability ``|C_j P psi|^2``."""
        qs = t.op.qubits
        if t.pre is not None:
            cols = _apply(cols, _per_col(t.pre[samples]), qs, torch.empty_like(cols))
        weights = _jump_weights(t, cols)
        weights = weights + (weights.sum(1, keepdim=True) <= 0).float()  # a column with no jump weight: any
        pick = torch.multinomial(weights, 1, generator=self.gen).flatten()
        out = _apply(cols, _per_col(t.jumps[pick]), qs, torch.empty_like(cols))
        return out, _norms(out)


def _jump_weights(t: _OpTensors, cols: torch.Tensor) -> torch.Tensor:
    """``|C_j psi|^2`` for every jump j >= 1 of ``t`` and column of ``cols`` (``pre`` already applied): (cols, R-1).

    From the reduced density matrix of the op's qubits, ``Tr(C_j^dagger C_j rho)``:
    one pass over the columns whatever the number of jumps.
    """
    qs = t.op.qubits
    k = 1 << len(qs)
    n = cols.shape[1]
    blocks = [b.reshape(-1, n) for b in _blocks(cols, qs)]  # (rest, cols) each
    rho = torch.empty(k, k, n, dtype=cols.dtype, device=cols.device)  # rho[a, b] = sum_rest psi_a psi_b^*
    for a in range(k):
        for b in range(a, k):
            rho[a, b] = (blocks[a] * blocks[b].conj()).sum(0)
            if b > a:
                rho[b, a] = rho[a, b].conj()
    effects = t.jump_effects.transpose(1, 2).reshape(len(t.jump_effects), k * k)  # Tr(E rho) = sum E[a,b] rho[b,a]
    return (effects @ rho.reshape(k * k, n)).real.clamp_min(0).T


# ------------------------------------------------------------------ the simulator
@dataclass
class RunStats:
    """How one PUB was simulated: method per cluster, trajectories chosen, and the rule's figures."""

    method: str
    qubits: int
    clusters: list[dict[str, Any]] = field(default_factory=list)
    #: where the time went: compiling the circuit, simulating the distributions, readout + drawing the shots
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "qubits": self.qubits, "clusters": self.clusters, "seconds": self.seconds}


class TrajectorySimulator(ThreadLockPickling):
    """The target's noise on the used qubits, all samples batched in torch (see the module docstring).

    ``device``: a torch device (``"cpu"``, ``"cuda"``); ``idle_noise``:
    ``"alap"``, ``"asap"`` or None, as for :class:`~qnas_hw.hardware.noise.NoisySimulator`
    (which this class also uses for the device's errors and as the fallback).
    ``trajectories`` fixes the count per sample (tests); None applies the rule.
    """

    def __init__(
        self,
        backend: Backend,
        device: str | torch.device = "cpu",
        idle_noise: str | None = None,
        *,
        trajectories: int | None = None,
        max_trajectories: int = MAX_TRAJECTORIES,
        fraction: float = TRAJECTORY_FRACTION,
        exact_max_qubits: int = EXACT_MAX_QUBITS,
    ) -> None:
        if trajectories is not None and trajectories < 1:
            raise ValueError(f"trajectories={trajectories} must be >= 1 (or None for the rule)")
        self.backend = backend
        self.device = torch.device(device)
        self.reference = NoisySimulator(backend, idle_noise=idle_noise)
        self.idle_noise = idle_noise
        self.trajectories = trajectories
        self.max_trajectories = int(max_trajectories)
        self.fraction = float(fraction)
        self.exact_max_qubits = int(exact_max_qubits)
        self.dt = idle_dt(backend.target)
        self._errors: dict[tuple[str, tuple[int, ...]], list[np.ndarray] | None] = {}
        self._error_index: dict[tuple[str, tuple[int, ...]], Any] | None = None
        self._compiled: dict[int, tuple[QuantumCircuit, _Compiled]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        """Ships to a worker without its caches: compiled programs hold lambdified functions, which do not pickle."""
        state = super().__getstate__()
        state.update(_compiled={}, _errors={}, _error_index=None)
        del state["_local"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._local = threading.local()

    @property
    def stats(self) -> list[RunStats]:
        """How each PUB of this thread's last :meth:`run` (or :meth:`probabilities`) was simulated."""
        return getattr(self._local, "stats", [])

    def summary(self) -> dict[str, Any]:
        """The last run in brief, for a candidate's details: simulators used and the most trajectories per sample."""
        clusters = [c for s in self.stats for c in s.clusters]
        return {
            "simulator": "trajectories",
            "methods": sorted({s.method for s in self.stats}),
            "trajectories": max((int(c.get("trajectories", 0)) for c in clusters), default=0),
        }

    # -------------------------------------------------------------- shared with the Aer path
    @property
    def errors(self) -> Any:
        return self.reference.errors

    def readout_matrix(self, physical_qubit: int) -> np.ndarray:
        return self.reference.readout_matrix(physical_qubit)

    def settings_key(self) -> str:
        """The Aer path's key (noise, idle) plus what decides this simulator's sampling error."""
        traj = self.trajectories or f"rule(f={self.fraction},pilot={PILOT_TRAJECTORIES},max={self.max_trajectories})"
        return f"{self.reference.settings_key()}|traj={traj}|exact<={self.exact_max_qubits}"

    def gate_error(self, name: str, physical: tuple[int, ...]) -> list[np.ndarray] | None:
        """Kraus operators of the device's error on ``name`` at ``physical`` (None: the target gives none)."""
        if self._error_index is None:
            self._error_index = {(n, qs): err for n, qs, err in self.errors.gate}
        key = (name, physical)
        if key not in self._errors:
            found = self._error_index.get(key)
            self._errors[key] = None if found is None else error_kraus(found)
        return self._errors[key]

    # -------------------------------------------------------------- running
    def compile(self, circuit: QuantumCircuit) -> _Compiled:
        """The fused, light-cone-split program of ``circuit`` (cached while the circuit object lives)."""
        with self._lock:
            cached = self._compiled.get(id(circuit))
        if cached is not None and cached[0] is circuit:
            return cached[1]
        small, physical, stand_ins = prepare_circuit(circuit, self.backend.target, self.idle_noise)
        compiler = _Compiler(self, small, physical, [p.name for p in circuit.parameters])
        ops, measured = compiler.compile()
        compiled = _Compiled(_clusters(ops, measured), measured, small.num_clbits, compiler.angles, physical, stand_ins)
        with self._lock:
            if len(self._compiled) > 256:
                self._compiled.clear()
            self._compiled[id(circuit)] = (circuit, compiled)
        return compiled

    def run(
        self,
        pubs: Sequence[tuple[QuantumCircuit, np.ndarray | None]],
        shots: int | Sequence[int],
        seed: int,
    ) -> list[list[dict[str, int]]]:
        """Counts per PUB, per parameter row (NoisySimulator's contract); ``self.stats`` says how each ran."""
        shot_list = shots_per_pub(shots, len(pubs))
        self._local.stats = []
        out = []
        for k, ((circuit, values), n_shots) in enumerate(zip(pubs, shot_list, strict=True)):
            pub_seed = int(seed) + 7919 * k
            t0 = time.perf_counter()
            try:
                compiled = self.compile(circuit)
            except UnsupportedCircuit as exc:
                log.info("%s runs on Aer: %s", circuit.name, exc)
                out.append(self.reference.run([(circuit, values)], n_shots, pub_seed)[0])
                self._local.stats.append(RunStats("aer", circuit.num_qubits))
                continue
            t1 = time.perf_counter()
            out.append(self._run_one(circuit, compiled, values, n_shots, pub_seed))
            self.stats[-1].seconds["compile"] = t1 - t0
        return out

    def _rows(self, circuit: QuantumCircuit, values: np.ndarray | None) -> np.ndarray:
        if circuit.num_parameters == 0:
            return np.zeros((1 if values is None else len(np.atleast_2d(values)), 0))
        if values is None:
            raise ValueError(f"circuit {circuit.name!r} has {circuit.num_parameters} parameters but no values")
        return np.asarray(values, dtype=float).reshape(-1, circuit.num_parameters)

    def _run_one(
        self, circuit: QuantumCircuit, compiled: _Compiled, values: np.ndarray | None, shots: int, seed: int
    ) -> list[dict[str, int]]:
        t0 = time.perf_counter()
        dists = self._distributions(circuit, compiled, values, shots, seed, readout=True)
        t1 = time.perf_counter()
        counts = _sample_counts(compiled, dists, shots, np.random.default_rng(seed))
        self.stats[-1].seconds.update(simulate=t1 - t0, sample=time.perf_counter() - t1)
        return counts

    def probabilities(
        self,
        circuit: QuantumCircuit,
        values: np.ndarray | None,
        readout: bool = True,
        shots: int = 1024,
        seed: int = 0,
    ) -> np.ndarray:
        """Estimated outcome distribution per row, ``(rows, 2**m)``; bit j is the j-th measured clbit (ascending).

        Exact where the clusters are narrow; ``shots`` is what the trajectory
        count is chosen for.  The counterpart of :meth:`NoisySimulator.probabilities`.
        """
        compiled = self.compile(circuit)
        self._local.stats = []
        dists = self._distributions(circuit, compiled, values, shots, seed, readout)
        return _joint(compiled, dists)

    def _distributions(
        self,
        circuit: QuantumCircuit,
        compiled: _Compiled,
        values: np.ndarray | None,
        shots: int,
        seed: int,
        readout: bool,
    ) -> list[np.ndarray]:
        """Per cluster, ``(rows, 2**m_c)`` outcome distributions (readout applied if asked); stats recorded."""
        rows = self._rows(circuit, values)
        angles = compiled.angles.evaluate(rows)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        stats = RunStats("exact", len(compiled.physical) + len(compiled.stand_ins))
        dists = []
        for cluster in compiled.clusters:
            tensors = _op_tensors(cluster.ops, angles, self.device)
            if len(cluster.qubits) <= self.exact_max_qubits:
                probs = _exact(cluster, tensors, len(rows), self.device)
                stats.clusters.append({"qubits": len(cluster.qubits), "method": "exact"})
            else:
                stats.method = "trajectories"
                readout = self._readout(compiled, cluster)
                probs, info = self._trajectories(cluster, tensors, len(rows), shots, gen, readout)
                stats.clusters.append({"qubits": len(cluster.qubits), "method": "trajectories", **info})
            probs = probs.double()
            if readout:
                probs = readout_columns(probs, self._readout(compiled, cluster))
            dist = probs.clamp_min(0).cpu().numpy().T
            dists.append(dist / dist.sum(1, keepdims=True))
        if not hasattr(self._local, "stats"):
            self._local.stats = []
        self._local.stats.append(stats)
        return dists

    def _readout(self, compiled: _Compiled, cluster: _Cluster) -> list[np.ndarray]:
        """Readout matrix of each measured bit of ``cluster`` (a deferred ancilla reads like the qubit it copies)."""
        n_phys = len(compiled.physical)
        matrices = []
        for pos in cluster.bits:
            q = compiled.measured[pos][0]
            where = compiled.physical[q] if q < n_phys else compiled.physical[compiled.stand_ins[q - n_phys]]
            matrices.append(self.readout_matrix(where))
        return matrices

    def _chunk(self, cluster: _Cluster, samples: int, per_sample_cols: int) -> int:
        """Samples per chunk: the working set within :data:`CHUNK_BYTES`, refused if one sample does not fit."""
        per_sample = (1 << len(cluster.qubits)) * 8 * per_sample_cols
        budget = CHUNK_BYTES.get(self.device.type, CHUNK_BYTES["cpu"])
        chunk = max(1, min(samples, budget // max(per_sample, 1)))
        check_fits("noisy trajectories", len(cluster.qubits), chunk, per_sample, self.device)
        return chunk

    def _trajectories(
        self,
        cluster: _Cluster,
        tensors: list[_OpTensors],
        samples: int,
        shots: int,
        gen: torch.Generator,
        readout: Sequence[np.ndarray],
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Outcome distributions of a wide cluster from the pilot, then as many more trajectories as the rule asks."""
        engine = _Trajectories(cluster, tensors, self.device, gen)
        pilot = self.trajectories or PILOT_TRAJECTORIES
        nj, p0, first = self._batch(engine, cluster, samples, pilot)
        batches = [first]
        info: dict[str, Any] = {
            "noisy_ops": len(engine.noisy),
            "mean_p_no_jump": float(p0.mean()),
            "max_jump_weight": float((1.0 - p0).max()),
        }
        if self.trajectories is None:
            want, ratio = self._count(nj, p0, first, shots, readout)
            info["rule_trajectories"] = want
            info["pilot_se_ratio"] = ratio
            if want > pilot:
                batches.append(self._batch(engine, cluster, samples, want - pilot)[2])
        total = sum(b.count for b in batches)
        sums = sum(b.sums for b in batches)
        info["trajectories"] = total
        return nj + (1.0 - p0)[None, :] * sums / total, info

    def _batch(
        self, engine: _Trajectories, cluster: _Cluster, samples: int, count: int
    ) -> tuple[torch.Tensor, torch.Tensor, _Batch]:
        chunk = self._chunk(cluster, samples, 2 * count + 3)
        parts = [engine.run(slice(s, min(samples, s + chunk)), count) for s in range(0, samples, chunk)]
        nj = torch.cat([p[0] for p in parts], dim=1)
        p0 = torch.cat([p[1] for p in parts])
        batch = _Batch(
            torch.cat([p[2].sums for p in parts], dim=1),
            torch.cat([p[2].z1 for p in parts]),
            torch.cat([p[2].z2 for p in parts]),
            count,
        )
        return nj, p0, batch

    def _count(
        self, nj: torch.Tensor, p0: torch.Tensor, pilot: _Batch, shots: int, readout: Sequence[np.ndarray]
    ) -> tuple[int, float]:
        """The rule of the module docstring: trajectories per sample, and the pilot's SE ratio at that count.

        Both variances are of what the shots read: readout maps a bit's <Z> to
        ``a + b <Z>`` (``b = 1 - p(1|0) - p(0|1)``), which scales the trajectory
        variance by ``b^2`` and sets the shot variance to ``1 - (a + b <Z>)^2``.
        """
        t = pilot.count
        if t < 2:
            return t, float("nan")
        mean = pilot.z1 / t
        var = ((pilot.z2 - t * mean.square()) / (t - 1)).clamp_min(0)  # (samples, m)
        weight = (1.0 - p0)[:, None]
        v = (weight.square() * var).mean(0)
        m = pilot.z1.shape[1]
        bits = (np.arange(nj.shape[0])[:, None] >> np.arange(m)[None, :]) & 1
        signs = torch.as_tensor(1.0 - 2.0 * bits, dtype=nj.dtype, device=nj.device)
        z = (nj + weight.T * pilot.sums / t).T @ signs  # (samples, m) estimate of <Z_q>
        a = torch.tensor([(r[0][0] - r[0][1] + r[1][0] - r[1][1]) / 2 for r in readout], dtype=z.dtype)
        b = torch.tensor([(r[0][0] - r[0][1] - r[1][0] + r[1][1]) / 2 for r in readout], dtype=z.dtype)
        v = v * b.to(v.device, v.dtype).square()
        z = a.to(z.device) + b.to(z.device) * z
        w = (1.0 - z.square()).clamp_min(1e-6).mean(0)
        need = float((v / w).max()) * shots / self.fraction**2
        want = int(min(self.max_trajectories, max(t, math.ceil(need))))
        return want, float(math.sqrt(float((v / w).max()) * shots / want))


def readout_columns(probs: torch.Tensor, matrices: Sequence[np.ndarray]) -> torch.Tensor:
    """``(2**m, rows)`` distributions through independent per-bit readout errors, exactly (bit j = matrices[j]).

    ``matrices[j][a, b]`` is P(read b | prepared a), as
    :meth:`NoisySimulator.readout_matrix` gives it: bit by bit,
    ``p'(b) = sum_a M[a, b] p(a)``, one two-term update per bit.
    """
    out = probs.clone()
    spare = torch.empty_like(out)
    for j, matrix in enumerate(matrices):
        transposed = [[float(matrix[a][b]) for a in range(2)] for b in range(2)]
        out, spare = _apply(out, transposed, (j,), spare), out
    return out


def _keys(compiled: _Compiled, outcomes: np.ndarray) -> list[str]:
    """qiskit count keys (highest clbit first) of outcome integers over the measured list (bit j = measured[j])."""
    total = compiled.n_clbits
    out = []
    for v in outcomes.tolist():
        bits = ["0"] * total
        for j, (_, c) in enumerate(compiled.measured):
            if (v >> j) & 1:
                bits[total - 1 - c] = "1"
        out.append("".join(bits))
    return out


def _joint(compiled: _Compiled, dists: list[np.ndarray]) -> np.ndarray:
    """The product of independent clusters' distributions over all measured bits, ``(rows, 2**m)``."""
    rows = dists[0].shape[0]
    out = np.ones((rows, 1))
    index = np.zeros(1, dtype=np.int64)
    for cluster, dist in zip(compiled.clusters, dists, strict=True):
        local = np.arange(dist.shape[1])
        place = np.zeros_like(local)
        for j, pos in enumerate(cluster.bits):
            place |= ((local >> j) & 1) << pos
        out = (out[:, :, None] * dist[:, None, :]).reshape(rows, -1)
        index = (index[:, None] | place[None, :]).reshape(-1)
    joint = np.zeros((rows, 1 << len(compiled.measured)))
    joint[:, index] = out
    return joint


def _sample_counts(
    compiled: _Compiled, dists: list[np.ndarray], shots: int, rng: np.random.Generator
) -> list[dict[str, int]]:
    """Shots per row from the clusters' distributions (independent clusters combine shot by shot)."""
    clusters = compiled.clusters
    rows = dists[0].shape[0]
    if len(clusters) == 1:
        m = len(clusters[0].bits)
        order = np.zeros(1 << m, dtype=np.int64)  # cluster bit j is measured position bits[j]
        for j, pos in enumerate(clusters[0].bits):
            order |= ((np.arange(1 << m) >> j) & 1) << pos
        draws = rng.multinomial(shots, dists[0])
        out = []
        if m <= 12:  # every key once, then a lookup per row
            keys = np.array(_keys(compiled, order), dtype=object)
            for r in range(rows):
                nz = np.flatnonzero(draws[r])
                out.append(dict(zip(keys[nz].tolist(), draws[r, nz].tolist(), strict=True)))
            return out
        for r in range(rows):  # wide: keys of the outcomes drawn only
            nz = np.flatnonzero(draws[r])
            out.append(dict(zip(_keys(compiled, order[nz]), draws[r, nz].tolist(), strict=True)))
        return out
    joint = np.zeros((rows, shots), dtype=np.int64)
    for cluster, dist in zip(clusters, dists, strict=True):
        cdf = np.cumsum(dist, axis=1)
        u = rng.random((rows, shots)) * cdf[:, -1:]
        local = np.stack([np.searchsorted(cdf[r], u[r], side="right") for r in range(rows)])
        local = np.minimum(local, dist.shape[1] - 1)
        for j, pos in enumerate(cluster.bits):
            joint |= ((local >> j) & 1) << pos
    out = []
    for r in range(rows):
        values, counts = np.unique(joint[r], return_counts=True)
        out.append(dict(zip(_keys(compiled, values), counts.tolist(), strict=True)))
    return out


#: ``[search] noisy_simulator`` values.
NOISY_SIMULATORS: tuple[str, ...] = ("trajectories", "aer")


def make_noisy_simulator(
    backend: Backend, method: str = "trajectories", idle_noise: str | None = "alap", device: str = "cpu"
) -> NoisySimulator | TrajectorySimulator:
    """The simulator ``accuracy = "noisy"`` scores with: ``trajectories`` (batched torch) or ``aer`` (the reference)."""
    if method == "aer":
        return NoisySimulator(backend, idle_noise=idle_noise)
    if method == "trajectories":
        return TrajectorySimulator(backend, device=device, idle_noise=idle_noise)
    raise ValueError(
        f"noisy simulator {method!r} is not supported; use one of {', '.join(map(repr, NOISY_SIMULATORS))}"
    )
