"""Batched, differentiable, exact statevector simulation of an architecture's circuit in torch.

The SuperCircuit trains by running this millions of times, so the plan compiles
:func:`qnas_hw.circuits.gate_program` (the single source of truth; nothing about
the architecture is re-derived here) once into a short list of fused stages:

* the gates before each qubit's first two-qubit gate act on a product state, so
  they are fused per qubit into a 2-vector and the state is built by outer
  products instead of being rotated gate by gate;
* runs of single-qubit gates between two-qubit blocks are fused per qubit, and
  the fused matrices of neighbouring qubits are Kronecker-combined into small
  (2**k x 2**k) chunk matrices, each applied as one GEMM over the whole batch;
* trailing RZs of a run are split off as one diagonal phase, so RY(+RZ) layers
  run as *real* GEMMs even on a complex state;
* runs of CNOTs are one row permutation (a gather; its gradient is the gather
  by the inverse permutation, never a scatter); runs of RZZ (IQP) one phase;
* gates at the end that are diagonal (RZ, RZZ) or permutations (CNOT) cannot
  change <Z> except by permuting probabilities, so they are dropped or folded
  into the readout matrix;
* when every remaining gate is real (RY, H, CNOT, amplitude preparation) the
  state stays real and the whole run uses real arithmetic.

The state is held batch-last as a real (2**n, C) tensor: C = B for a real
state, C = 2B (re/im interleaved, i.e. ``view_as_real``) for a complex one.
Batch-last makes every chunk GEMM a large, contiguous matrix product and every
permutation a row gather.

Amplitude embedding is not simulated through its RY tree: the tree prepares
exactly ``x/|x|`` for any real ``x`` (tests check this against qiskit), so the
state is set to the zero-padded, L2-normalised features directly, which is also
what keeps it differentiable in the raw features.

Public states are little-endian like qiskit: qubit ``q`` is bit ``q`` of the basis index.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from qnas_hw.circuits import Gate, gate_program
from qnas_hw.space import Architecture, SpaceError

logger = logging.getLogger(__name__)

_DIAGONAL = frozenset({"rz", "rzz"})
_REAL_1Q = frozenset({"ry", "h"})
_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}
#: Largest chunk (in qubits) whose Kronecker matrix is applied as one GEMM. 3-4 balances
#: GEMM efficiency (bigger is better) against flops (2**k per amplitude); see benchmarks/simulator.py.
DEFAULT_CHUNK = 4


# --------------------------------------------------------------------------- compiled stages
@dataclass(frozen=True)
class _Fused1Q:
    """Single-qubit gate runs of identical signature on several qubits; matrices built in one go.

    ``names[p]`` is the gate at position ``p`` of every run; ``kinds[p]`` is "x", "w"
    or None (fixed gate) and ``index[p]`` the (n_runs,) parameter indices.
    """

    qubits: tuple[int, ...]
    names: tuple[str, ...]
    kinds: tuple[str | None, ...]
    index: tuple[Tensor | None, ...]

    @property
    def per_sample(self) -> bool:
        return "x" in self.kinds


@dataclass(frozen=True)
class _Layer:
    """One stage of single-qubit runs on distinct qubits (they commute, so order is free).

    mode "real": fused real matrices (RY/H) in chunks, then ``phase`` (the split-off RZs).
    mode "complex": fused complex matrices in chunks. mode "per_sample": input-dependent
    matrices applied qubit by qubit (never produced by today's gate programs after the
    first entangler, kept so any program stays simulable).
    """

    mode: str
    groups: list[_Fused1Q]
    chunks: list[tuple[int, int]]  # (lowest qubit, width) of each Kronecker chunk
    phase: _RzPhase | None


@dataclass(frozen=True)
class _RzPhase:
    """RZ angles theta_j on qubits q_j: phase[k] = -1/2 sum_j theta_j z_{q_j}(k) with z = +-1."""

    kinds: tuple[str, ...]
    index: Tensor
    signs: Tensor  # (2**n, n_rz)


@dataclass(frozen=True)
class _Permutation:
    """new[k] = old[src[k]]; ``inv`` is the inverse permutation (for the backward gather)."""

    src: Tensor
    inv: Tensor


@dataclass(frozen=True)
class _Phase:
    """A run of RZZ(x_i * x_j) gates: state *= exp(i * (x_i x_j) @ coef) with coef (pairs, 2**n)."""

    first: Tensor
    second: Tensor
    coef: Tensor


class _Gather(torch.autograd.Function):
    """Permutation of basis rows: forward and backward are both gathers (no index_add scatter)."""

    @staticmethod
    def forward(ctx, state: Tensor, src: Tensor, inv: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(inv)
        return state.index_select(0, src)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (inv,) = ctx.saved_tensors
        return grad.index_select(0, inv), None, None


class _ChunkMatmul(torch.autograd.Function):
    """One Kronecker chunk ``kron`` (2**w x 2**w) applied to qubits lo..lo+w-1 of a batch-last state.

    Written by hand because autograd's broadcast-matmul backward transposes and
    copies the whole state; here both directions are plain (batched) GEMMs on
    contiguous views, and the matrix gradient is one more GEMM reduced over blocks.
    """

    @staticmethod
    def forward(ctx, state: Tensor, kron: Tensor, lo: int, width: int) -> Tensor:  # type: ignore[override]
        view = _chunk_view(state, lo, width)
        ctx.save_for_backward(state, kron)
        ctx.chunk = (lo, width)
        return _bmm(kron, view).view(state.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        state, kron = ctx.saved_tensors
        lo, width = ctx.chunk
        g = _chunk_view(grad.contiguous(), lo, width)
        grad_state = grad_kron = None
        if ctx.needs_input_grad[0]:
            grad_state = _bmm(kron.mH, g).view(state.shape)
        if ctx.needs_input_grad[1]:
            x = _chunk_view(state, lo, width)
            grad_kron = torch.matmul(g, x.mH).sum(0) if g.shape[0] > 1 else g[0] @ x[0].mH
        return grad_state, grad_kron, None, None


def _chunk_view(state: Tensor, lo: int, width: int) -> Tensor:
    """(2**(n-lo-w), 2**w, 2**lo * C) view of a (2**n, C) state: the chunk's bits in the middle axis."""
    rows, cols = state.shape
    return state.view(rows >> (lo + width), 1 << width, (1 << lo) * cols)


def _outer(vecs: list[Tensor]) -> Tensor:
    """Kronecker product of (2, B|1) columns, first factor most significant: (2**len, B|1)."""
    if len(vecs) == 1:
        return vecs[0]
    half = len(vecs) // 2
    hi, lo = _outer(vecs[:half]), _outer(vecs[half:])
    cols = max(hi.shape[1], lo.shape[1])
    return (hi[:, None, :] * lo[None, :, :]).reshape(-1, cols)


def _bmm(matrix: Tensor, view: Tensor) -> Tensor:
    if view.shape[0] == 1:
        return (matrix @ view[0]).unsqueeze(0)
    return torch.bmm(matrix.expand(view.shape[0], *matrix.shape), view)


def _bits(n: int) -> np.ndarray:
    """(2**n, n) array of bit q of every basis index."""
    k = np.arange(2**n)
    return (k[:, None] >> np.arange(n)[None, :]) & 1


def _cx_source(n: int, control: int, target: int) -> np.ndarray:
    k = np.arange(2**n)
    return k ^ (((k >> control) & 1) << target)


def _strip_tail(gates: list[Gate], n: int) -> tuple[list[Gate], list[Gate], np.ndarray]:
    """Split off trailing gates that cannot change <Z> except by permuting the basis.

    Walks backwards; a gate on qubits untouched by any kept later gate commutes to
    the end.  Diagonal ones (RZ, RZZ) only change phases and are dropped; CNOTs
    permute probabilities and are composed into the returned readout source map
    (final[k] = state[src[k]]).  Returns (kept, tail, src), both lists in program order.
    """
    blocked: set[int] = set()
    kept_rev: list[Gate] = []
    tail_rev: list[Gate] = []
    for gate in reversed(gates):
        free = not blocked.intersection(gate.qubits)
        if free and (gate.name in _DIAGONAL or gate.name == "cx"):
            tail_rev.append(gate)
            continue
        kept_rev.append(gate)
        blocked.update(gate.qubits)
    tail = tail_rev[::-1]
    src = np.arange(2**n)
    for gate in tail:  # program order: src = src_prev[src_gate]
        if gate.name == "cx":
            src = src[_cx_source(n, *gate.qubits)]
    return kept_rev[::-1], tail, src


def _group_runs(runs: dict[int, list[Gate]]) -> list[_Fused1Q]:
    """Group per-qubit runs by their gate/parameter-kind signature so each group builds its matrices at once."""
    groups: dict[tuple, list[tuple[int, list[Gate]]]] = {}
    for q, run in sorted(runs.items()):
        if not run:
            continue
        sig = tuple((g.name, None if g.param is None else g.param[0]) for g in run)
        groups.setdefault(sig, []).append((q, run))
    out = []
    for sig, members in groups.items():
        index: list[Tensor | None] = []
        for p, (_name, kind) in enumerate(sig):
            if kind is None:
                index.append(None)
            elif kind in ("x", "w"):
                index.append(torch.tensor([run[p].param[1] for _, run in members], dtype=torch.long))
            else:
                raise SpaceError(f"simulator cannot fuse a single-qubit gate with parameter {members[0][1][p].param!r}")
        out.append(
            _Fused1Q(
                qubits=tuple(q for q, _ in members),
                names=tuple(name for name, _ in sig),
                kinds=tuple(kind for _, kind in sig),
                index=tuple(index),
            )
        )
    return out


def _chunks(qubits: list[int], n: int, width: int) -> list[tuple[int, int]]:
    """Balanced consecutive qubit blocks of at most ``width`` covering ``qubits`` (blocks with none are skipped)."""
    count = math.ceil(n / width)
    sizes = [n // count + (1 if i < n % count else 0) for i in range(count)]
    out, lo = [], 0
    for size in sizes:
        if any(lo <= q < lo + size for q in qubits):
            out.append((lo, size))
        lo += size
    return out


class SimulatorPlan:
    """Everything about one architecture's simulation that does not depend on inputs or weights.

    Build once per architecture and reuse: construction compiles the gate program;
    :meth:`expectations` and :meth:`state` only run the fused stages.  ``chunk``
    is the widest Kronecker chunk (qubits) applied as one GEMM.
    """

    def __init__(self, arch: Architecture, dtype: torch.dtype = torch.float32, chunk: int = DEFAULT_CHUNK) -> None:
        if dtype not in _COMPLEX_OF:
            raise ValueError(f"SimulatorPlan dtype must be torch.float32 or torch.float64, got {dtype}")
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive number of qubits, got {chunk!r}")
        self.arch = arch
        self.n_qubits = n = arch.n_qubits
        self.dim = 2**n
        self.dtype = dtype
        self.complex_dtype = _COMPLEX_OF[dtype]
        self.chunk = chunk
        gates = gate_program(arch)
        self.amplitude = arch.embedding == "amplitude"
        if self.amplitude:
            gates = self._drop_amplitude_prefix(gates)
        kept, self._tail, readout_src = _strip_tail(gates, n)
        self.real = all(g.name in _REAL_1Q or g.name == "cx" for g in kept)
        self._z = torch.tensor(1.0 - 2.0 * _bits(n), dtype=dtype)  # (2**n, n): <Z_q> sign of basis state k
        self._eye_real = torch.eye(2, dtype=dtype)
        self._eye_complex = torch.eye(2, dtype=self.complex_dtype)
        self._ket0 = torch.tensor([[1.0], [0.0]], dtype=dtype)
        self.product_init, self.stages = self._compile(kept)
        # E[q] = sum_k p_final[k] z[k, q] = sum_j p[j] z[inv[j], q] with final[k] = state[src[k]].
        self.readout = self._z[torch.as_tensor(np.argsort(readout_src))].contiguous()

    # ------------------------------------------------------------------ compilation
    @staticmethod
    def _drop_amplitude_prefix(gates: list[Gate]) -> list[Gate]:
        """The RY tree is replaced by setting x/|x| directly (see module docstring)."""
        first_w = next(i for i, g in enumerate(gates) if g.param is not None and g.param[0] == "w")
        prefix, rest = gates[:first_w], gates[first_w:]
        if any(g.param is not None and g.param[0] != "amp" for g in prefix) or any(
            g.param is not None and g.param[0] == "amp" for g in rest
        ):
            raise SpaceError("amplitude embedding program is not a prefix of RY-tree gates; simulator needs updating")
        return rest

    def _compile(self, gates: list[Gate]) -> tuple[_Layer | None, list]:
        n = self.n_qubits
        pending: dict[int, list[Gate]] = {q: [] for q in range(n)}
        product = not self.amplitude  # is the state still |0...0> rotated qubit by qubit?
        product_init: _Layer | None = None
        stages: list = []
        i = 0
        while i < len(gates):
            gate = gates[i]
            if len(gate.qubits) == 1:
                pending[gate.qubits[0]].append(gate)
                i += 1
                continue
            j = i
            while j < len(gates) and len(gates[j].qubits) == 2 and gates[j].name == gate.name:
                j += 1
            block = gates[i:j]
            if product:
                product_init, product = self._layer(pending, product=True), False
                pending = {q: [] for q in range(n)}
            else:
                flush = {q: pending[q] for q in sorted({q for g in block for q in g.qubits}) if pending[q]}
                if flush:
                    stages.append(self._layer(flush))
                for q in flush:
                    pending[q] = []
            stages.append(self._two_qubit_stage(block))
            i = j
        if product:
            product_init = self._layer(pending, product=True)
        else:
            tail = {q: run for q, run in pending.items() if run}
            if tail:
                stages.append(self._layer(tail))
        return product_init, stages

    def _layer(self, runs: dict[int, list[Gate]], product: bool = False) -> _Layer:
        """Compile commuting single-qubit runs; ``product`` marks the runs that act on |0...0>.

        Input-dependent runs after the product state fall back to per-qubit kernels;
        the product state takes any runs since it is built from 2-vectors anyway.
        """
        if not product and any(g.param is not None and g.param[0] == "x" for run in runs.values() for g in run):
            return _Layer("per_sample", _group_runs(runs), [], None)
        heads: dict[int, list[Gate]] = {}
        rzs: list[Gate] = []
        for q, run in runs.items():
            cut = len(run)
            while cut > 0 and run[cut - 1].name == "rz":
                cut -= 1
            heads[q], rzs = run[:cut], rzs + run[cut:]
        if all(g.name in _REAL_1Q for run in heads.values() for g in run):
            phase = None
            if rzs:
                phase = _RzPhase(
                    kinds=tuple(g.param[0] for g in rzs),
                    index=torch.tensor([g.param[1] for g in rzs], dtype=torch.long),
                    signs=self._z[:, [g.qubits[0] for g in rzs]].contiguous(),
                )
            heads = {q: run for q, run in heads.items() if run}
            return _Layer("real", _group_runs(heads), _chunks(list(heads), self.n_qubits, self.chunk), phase)
        return _Layer("complex", _group_runs(runs), _chunks(list(runs), self.n_qubits, self.chunk), None)

    def _two_qubit_stage(self, block: list[Gate]) -> _Permutation | _Phase:
        n = self.n_qubits
        if block[0].name == "cx":
            src = np.arange(2**n)
            for g in block:
                src = src[_cx_source(n, *g.qubits)]
            return _Permutation(torch.tensor(src, dtype=torch.long), torch.tensor(np.argsort(src), dtype=torch.long))
        if block[0].name == "rzz":
            if any(g.param is None or g.param[0] != "xx" for g in block):
                raise SpaceError(f"simulator supports RZZ(x_i*x_j) only, got {block[0].param!r}")
            coef = torch.stack([-0.5 * self._z[:, g.qubits[0]] * self._z[:, g.qubits[1]] for g in block])
            return _Phase(
                first=torch.tensor([g.param[1] for g in block], dtype=torch.long),
                second=torch.tensor([g.param[2] for g in block], dtype=torch.long),
                coef=coef,
            )
        raise SpaceError(f"simulator has no kernel for two-qubit gate {block[0].name!r}")

    # ------------------------------------------------------------------ matrices
    def _gate_matrices(self, name: str, theta: Tensor | None, shape: tuple[int, ...], real: bool) -> Tensor:
        """(..., 2, 2) matrices of one gate kind for a tensor of angles (real dtype when ``real``)."""
        if name == "h":
            h = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=self.dtype) / math.sqrt(2.0)
            return (h if real else h.to(self.complex_dtype)).expand(*shape, 2, 2)
        assert theta is not None
        c, s = torch.cos(theta / 2), torch.sin(theta / 2)
        if name == "ry":
            m = torch.stack([c, -s, s, c], -1).unflatten(-1, (2, 2))
            return m if real else m.to(self.complex_dtype)
        zero = torch.zeros_like(c)
        if name == "rx":
            re = torch.stack([c, zero, zero, c], -1)
            im = torch.stack([zero, -s, -s, zero], -1)
        elif name == "rz":
            re = torch.stack([c, zero, zero, c], -1)
            im = torch.stack([-s, zero, zero, s], -1)
        else:
            raise SpaceError(f"simulator has no kernel for single-qubit gate {name!r}")
        return torch.complex(re, im).unflatten(-1, (2, 2))

    def _group_matrices(self, group: _Fused1Q, inputs: Tensor, weights: Tensor, real: bool) -> Tensor:
        """Fused matrices of a group: (n_runs, 2, 2) shared or (B, n_runs, 2, 2) per sample."""
        shape = (inputs.shape[0], len(group.qubits)) if group.per_sample else (len(group.qubits),)
        total: Tensor | None = None
        for name, kind, idx in zip(group.names, group.kinds, group.index, strict=True):
            if kind is None:
                theta = None
            elif kind == "x":
                theta = inputs[:, idx]
            else:
                theta = weights[idx].expand(shape) if group.per_sample else weights[idx]
            m = self._gate_matrices(name, theta, shape, real)
            total = m if total is None else m @ total
        assert total is not None
        return total

    # ------------------------------------------------------------------ kernels
    def _to_complex(self, state: Tensor) -> Tensor:
        return torch.view_as_complex(state.view(self.dim, -1, 2))

    def _to_real(self, state: Tensor) -> Tensor:
        return torch.view_as_real(state).reshape(self.dim, -1)

    def _product_state(self, layer: _Layer, inputs: Tensor, weights: Tensor) -> Tensor:
        """|psi> = (x)_q U_q|0> (then the split-off RZ phase), built batch-last by outer products.

        Halves are built recursively and joined by one outer product, so only the
        last product touches the full 2**n x B state.
        """
        n, batch = self.n_qubits, inputs.shape[0]
        real = layer.mode == "real"
        dt = self.dtype if real else self.complex_dtype
        vecs: list[Tensor] = [self._ket0.to(dt)] * n  # (2, B) or (2, 1)
        for group in layer.groups:
            col = self._group_matrices(group, inputs, weights, real)[..., :, 0]  # U|0>
            for k, q in enumerate(group.qubits):
                vecs[q] = col[:, k].T if group.per_sample else col[k][:, None]
        state = _outer(vecs[::-1]).expand(self.dim, batch).contiguous()  # most significant qubit first
        if layer.phase is not None:
            return self._apply_phase(state, layer.phase, inputs, weights, real_state=True)
        if self.real:
            return state
        if real:
            return torch.stack([state, torch.zeros_like(state)], -1).view(self.dim, -1)
        return self._to_real(state)

    def _apply_phase(self, state: Tensor, rz: _RzPhase, inputs: Tensor, weights: Tensor, real_state: bool) -> Tensor:
        """Multiply by exp(i*phase) of the split-off RZs; a real state becomes complex here."""
        if "x" in rz.kinds:
            cols = [
                inputs[:, i] if k == "x" else weights[i].expand(inputs.shape[0])
                for k, i in zip(rz.kinds, rz.index.tolist(), strict=True)
            ]
            theta = torch.stack(cols, 0)  # (n_rz, B)
        else:
            theta = weights[rz.index][:, None]
        phase = (-0.5 * rz.signs) @ theta  # (2**n, B) or (2**n, 1)
        if real_state:
            rot = torch.stack([torch.cos(phase), torch.sin(phase)], -1)  # (2**n, B|1, 2)
            return (state[:, :, None] * rot).view(self.dim, -1)
        return self._to_real(self._to_complex(state) * torch.polar(torch.ones_like(phase), phase))

    def _amplitude_state(self, inputs: Tensor) -> Tensor:
        feats = torch.nn.functional.pad(inputs, (0, self.dim - inputs.shape[1]))
        norm = feats.norm(dim=1, keepdim=True)
        basis0 = torch.zeros(self.dim, dtype=self.dtype)
        basis0[0] = 1.0
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        state = torch.where(norm > 0, feats / safe, basis0).T.contiguous()
        if self.real:
            return state
        return torch.stack([state, torch.zeros_like(state)], -1).reshape(self.dim, -1)

    def _apply_chunks(self, state: Tensor, mats: dict[int, Tensor], chunks: list[tuple[int, int]]) -> Tensor:
        """Apply (x)_q U_q chunk by chunk: each chunk's Kronecker matrix is one (broadcast) GEMM over the batch."""
        if not chunks:
            return state
        eye = self._eye_real if next(iter(mats.values())).dtype == self.dtype else self._eye_complex
        for lo, width in chunks:
            kron: Tensor | None = None
            for q in range(lo + width - 1, lo - 1, -1):
                m = mats.get(q, eye)
                kron = m if kron is None else torch.kron(kron, m)
            assert kron is not None
            state = _ChunkMatmul.apply(state, kron, lo, width)
        return state

    def _apply_layer(self, state: Tensor, layer: _Layer, inputs: Tensor, weights: Tensor) -> Tensor:
        if layer.mode == "per_sample":
            return self._apply_per_sample(state, layer.groups, inputs, weights)
        real = layer.mode == "real"
        mats: dict[int, Tensor] = {}
        for group in layer.groups:
            fused = self._group_matrices(group, inputs, weights, real)
            mats.update({q: fused[k] for k, q in enumerate(group.qubits)})
        if real:
            state = self._apply_chunks(state, mats, layer.chunks)
        else:
            state = self._to_real(self._apply_chunks(self._to_complex(state), mats, layer.chunks))
        if layer.phase is not None:
            state = self._apply_phase(state, layer.phase, inputs, weights, real_state=False)
        return state

    def _apply_per_sample(self, state: Tensor, groups: list[_Fused1Q], inputs: Tensor, weights: Tensor) -> Tensor:
        n = self.n_qubits
        psi = state if self.real else self._to_complex(state)
        for group in groups:
            mats = self._group_matrices(group, inputs, weights, self.real)
            if not group.per_sample:
                mats = mats.expand(inputs.shape[0], *mats.shape)
            for k, q in enumerate(group.qubits):
                u = mats[:, k]  # (B, 2, 2)
                view = psi.reshape(2 ** (n - 1 - q), 2, 2**q, -1)
                x0, x1 = view[:, 0], view[:, 1]
                out0 = u[:, 0, 0] * x0 + u[:, 0, 1] * x1
                out1 = u[:, 1, 0] * x0 + u[:, 1, 1] * x1
                psi = torch.stack([out0, out1], 1).reshape(self.dim, -1)
        return psi if self.real else self._to_real(psi)

    def _run(self, inputs: Tensor, weights: Tensor) -> Tensor:
        """Final (pre-tail) state, batch-last real layout (2**n, C)."""
        if self.amplitude:
            state = self._amplitude_state(inputs)
        else:
            assert self.product_init is not None
            state = self._product_state(self.product_init, inputs, weights)
        for stage in self.stages:
            if isinstance(stage, _Permutation):
                state = _Gather.apply(state, stage.src, stage.inv)
            elif isinstance(stage, _Phase):
                theta = inputs[:, stage.first] * inputs[:, stage.second]
                phase = (theta @ stage.coef).T
                state = self._to_real(self._to_complex(state) * torch.polar(torch.ones_like(phase), phase))
            else:
                state = self._apply_layer(state, stage, inputs, weights)
        return state

    def _check(self, inputs: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(inputs, Tensor) or inputs.ndim != 2:
            shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise SpaceError(
                f"inputs must be a tensor of shape (batch, features), got {shape}; "
                "use inputs.unsqueeze(0) for a single sample"
            )
        self.arch.check_features(inputs.shape[1])
        if not isinstance(weights, Tensor) or tuple(weights.shape) != (self.arch.n_weights,):
            shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
            raise SpaceError(
                f"{self.arch.canonical()} takes weights of shape ({self.arch.n_weights},), got {shape}; "
                "flatten them in gate_program order (layer, qubit, rotation)"
            )
        return inputs.to(self.dtype), weights.to(self.dtype)

    # ------------------------------------------------------------------ public
    def expectations(self, inputs: Tensor, weights: Tensor) -> Tensor:
        """<Z_q> for every qubit, (B, n_qubits), differentiable in inputs and weights."""
        inputs, weights = self._check(inputs, weights)
        state = self._run(inputs, weights)
        sq = state.square()
        probs = sq if self.real else sq.view(self.dim, -1, 2).sum(-1)
        return probs.T @ self.readout

    def state(self, inputs: Tensor, weights: Tensor) -> Tensor:
        """Final statevector (B, 2**n), complex, little-endian, for tests and diagnostics.

        The gates stripped from the tail for the readout (trailing CNOTs and
        diagonal gates) are applied here gate by gate, so this is the circuit's full state.
        """
        inputs, weights = self._check(inputs, weights)
        state = self._run(inputs, weights)
        state = state.to(self.complex_dtype) if self.real else self._to_complex(state)
        n = self.n_qubits
        for gate in self._tail:
            if gate.name == "cx":
                state = state[torch.as_tensor(_cx_source(n, *gate.qubits))]
                continue
            kind, idx = gate.param[0], gate.param[1]
            if gate.name == "rz":
                theta = inputs[:, idx] if kind == "x" else weights[idx].expand(inputs.shape[0])
                sign = self._z[:, gate.qubits[0]]
            else:  # rzz(x_i * x_j)
                theta = inputs[:, idx] * inputs[:, gate.param[2]]
                sign = self._z[:, gate.qubits[0]] * self._z[:, gate.qubits[1]]
            phase = -0.5 * sign[:, None] * theta[None, :]
            state = state * torch.polar(torch.ones_like(phase), phase)
        return state.T.contiguous()


class QuantumLayer(nn.Module):
    """An architecture's circuit as a torch layer with its own trainable weights.

    Weights are initialised uniformly in [0, 2pi) from ``generator``; with no
    generator a fixed seed (0) is used so construction never touches torch's
    global RNG and is reproducible.
    """

    def __init__(
        self, arch: Architecture, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ):
        super().__init__()
        self.arch = arch
        self.plan = SimulatorPlan(arch, dtype=dtype)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        init = torch.rand(arch.n_weights, generator=generator, dtype=dtype) * (2 * math.pi)
        self.weight = nn.Parameter(init)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.plan.expectations(inputs, self.weight)

    def extra_repr(self) -> str:
        return f"arch={self.arch.canonical()!r}, n_weights={self.arch.n_weights}"
