"""Batched, differentiable, exact statevector simulation of an architecture's circuit in torch.

The SuperCircuit trains by running this millions of times, so the plan compiles
:func:`qnas_hw.circuits.gate_program` (the single source of truth; nothing about
the architecture is re-derived here) once into a short list of fused stages:

* the gates before each qubit's first two-qubit gate act on a product state, so
  they are fused per qubit into a 2-vector and the state is built by outer
  products instead of being rotated gate by gate;
* runs of single-qubit gates on one qubit are fused into one 2x2 matrix (shared
  when it depends on weights only, per sample when it depends on inputs);
* runs of CNOTs are one index permutation (a gather; its gradient is the gather
  by the inverse permutation, never a scatter);
* runs of RZZ gates (IQP) are one diagonal phase;
* gates at the end that are diagonal (RZ, RZZ) or permutations (CNOT) cannot
  change <Z> probabilities except by permuting them, so they are dropped or
  folded into the readout matrix;
* when every remaining gate is real (RY, H, CNOT, amplitude preparation) the
  state stays real and the whole run uses real arithmetic.

Amplitude embedding is not simulated through its RY tree: the tree prepares
exactly ``x/|x|`` for any real ``x`` (the circuit tests check that against
qiskit), so the state is set to the zero-padded, L2-normalised features
directly, which is also what keeps it differentiable in the raw features.

States are little-endian like qiskit: qubit ``q`` is bit ``q`` of the basis index.
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

_DIAGONAL_1Q = frozenset({"rz"})
_DIAGONAL_2Q = frozenset({"rzz"})
_REAL_1Q = frozenset({"ry", "h"})
_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}


# --------------------------------------------------------------------------- compiled stages
@dataclass(frozen=True)
class _Fused1Q:
    """Single-qubit gate runs, one per qubit, applied together (they commute: distinct qubits).

    ``names[p]`` is the gate at position ``p`` of every run in the group; runs with
    different gate sequences live in different groups.  ``kinds[p]`` is "x", "w" or
    None (fixed gate) and ``index[p]`` the (n_runs,) parameter indices.
    """

    qubits: tuple[int, ...]
    names: tuple[str, ...]
    kinds: tuple[str | None, ...]
    index: tuple[Tensor | None, ...]

    @property
    def per_sample(self) -> bool:
        return "x" in self.kinds


@dataclass(frozen=True)
class _Permutation:
    """new[:, k] = old[:, src[k]]; ``inv`` is the inverse permutation (for the backward gather)."""

    src: Tensor
    inv: Tensor


@dataclass(frozen=True)
class _Phase:
    """A run of RZZ(x_i * x_j) gates: state *= exp(i * (x_i x_j) @ coef) with coef (pairs, 2**n)."""

    first: Tensor
    second: Tensor
    coef: Tensor


class _Gather(torch.autograd.Function):
    """Permutation of the basis: forward and backward are both gathers (no index_add scatter)."""

    @staticmethod
    def forward(ctx, state: Tensor, src: Tensor, inv: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(inv)
        return state.index_select(-1, src)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (inv,) = ctx.saved_tensors
        return grad.index_select(-1, inv), None, None


def _bits(n: int) -> np.ndarray:
    """(2**n, n) array of bit q of every basis index."""
    k = np.arange(2**n)
    return (k[:, None] >> np.arange(n)[None, :]) & 1


def _cx_source(n: int, control: int, target: int) -> np.ndarray:
    k = np.arange(2**n)
    return k ^ (((k >> control) & 1) << target)


def _strip_tail(gates: list[Gate], n: int) -> tuple[list[Gate], np.ndarray]:
    """Drop trailing gates that cannot change <Z> except by permuting the basis.

    Walks backwards; a gate on qubits untouched by any kept later gate commutes to
    the end.  Diagonal ones (RZ, RZZ) only change phases and are dropped; CNOTs
    permute probabilities and are composed into the returned readout source map
    (final[k] = state[src[k]]).
    """
    blocked: set[int] = set()
    kept_rev: list[Gate] = []
    tail_rev: list[Gate] = []
    for gate in reversed(gates):
        free = not blocked.intersection(gate.qubits)
        if free and (gate.name in _DIAGONAL_1Q or gate.name in _DIAGONAL_2Q):
            continue
        if free and gate.name == "cx":
            tail_rev.append(gate)
            continue
        kept_rev.append(gate)
        blocked.update(gate.qubits)
    src = np.arange(2**n)
    for gate in reversed(tail_rev):  # program order: src = src_prev[src_gate]
        src = src[_cx_source(n, *gate.qubits)]
    return kept_rev[::-1], src


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


class SimulatorPlan:
    """Everything about one architecture's simulation that does not depend on inputs or weights.

    Build once per architecture and reuse: construction compiles the gate program;
    :meth:`expectations` and :meth:`state` only run the fused stages.
    """

    def __init__(self, arch: Architecture, dtype: torch.dtype = torch.float32) -> None:
        if dtype not in _COMPLEX_OF:
            raise ValueError(f"SimulatorPlan dtype must be torch.float32 or torch.float64, got {dtype}")
        self.arch = arch
        self.n_qubits = n = arch.n_qubits
        self.dtype = dtype
        self.complex_dtype = _COMPLEX_OF[dtype]
        gates = gate_program(arch)
        self.amplitude = arch.embedding == "amplitude"
        if self.amplitude:
            gates = self._drop_amplitude_prefix(gates)
        kept, readout_src = _strip_tail(gates, n)
        self.real = all(g.name in _REAL_1Q or g.name == "cx" for g in kept)
        self.product_init, self.stages, tail_runs = self._compile(kept)
        if tail_runs:
            self.stages.append(tail_runs)
        z = 1.0 - 2.0 * _bits(n).astype(np.float64)  # (2**n, n): <Z_q> sign of basis state k
        # E[q] = sum_k p_final[k] z[k, q] = sum_j p[j] z[inv[j], q] with final[k] = state[src[k]].
        inv = np.argsort(readout_src)
        self.readout = torch.tensor(z[inv], dtype=dtype)
        self.n_stages = len(self.stages)

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

    def _compile(self, gates: list[Gate]) -> tuple[list[_Fused1Q] | None, list, dict[int, list[Gate]]]:
        n = self.n_qubits
        pending: dict[int, list[Gate]] = {q: [] for q in range(n)}
        touched = False  # has any two-qubit gate run yet (i.e. is the state still a product state)?
        product_init: list[_Fused1Q] | None = None
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
            qubits = sorted({q for g in block for q in g.qubits})
            if not touched and not self.amplitude:
                product_init = _group_runs(pending)
                pending = {q: [] for q in range(n)}
                touched = True
            else:
                flush = {q: pending[q] for q in qubits if pending[q]}
                if flush:
                    stages.append(_group_runs(flush))
                for q in flush:
                    pending[q] = []
                touched = True
            stages.append(self._two_qubit_stage(block))
            i = j
        if not touched and not self.amplitude:
            product_init = _group_runs(pending)
            pending = {q: [] for q in range(n)}
        tail = {q: run for q, run in pending.items() if run}
        return product_init, stages, _group_runs(tail) if tail else []

    def _two_qubit_stage(self, block: list[Gate]) -> _Permutation | _Phase:
        n = self.n_qubits
        if block[0].name == "cx":
            src = np.arange(2**n)
            for g in block:
                src = src[_cx_source(n, *g.qubits)]
            return _Permutation(torch.tensor(src, dtype=torch.long), torch.tensor(np.argsort(src), dtype=torch.long))
        if block[0].name == "rzz":
            z = 1.0 - 2.0 * _bits(n)
            if any(g.param is None or g.param[0] != "xx" for g in block):
                raise SpaceError(f"simulator supports RZZ(x_i*x_j) only, got {block[0].param!r}")
            coef = np.stack([-0.5 * z[:, g.qubits[0]] * z[:, g.qubits[1]] for g in block])
            return _Phase(
                first=torch.tensor([g.param[1] for g in block], dtype=torch.long),
                second=torch.tensor([g.param[2] for g in block], dtype=torch.long),
                coef=torch.tensor(coef, dtype=self.dtype),
            )
        raise SpaceError(f"simulator has no kernel for two-qubit gate {block[0].name!r}")

    # ------------------------------------------------------------------ matrices
    def _gate_matrices(self, name: str, theta: Tensor | None, shape: tuple[int, ...]) -> Tensor:
        """(..., 2, 2) matrices of one gate kind for a tensor of angles (real when the plan is real)."""
        if name == "h":
            h = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=self.dtype) / math.sqrt(2.0)
            h = h if self.real else h.to(self.complex_dtype)
            return h.expand(*shape, 2, 2)
        assert theta is not None
        c, s = torch.cos(theta / 2), torch.sin(theta / 2)
        if name == "ry":
            m = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
            return m if self.real else m.to(self.complex_dtype)
        zero = torch.zeros_like(c)
        if name == "rx":
            re = torch.stack([torch.stack([c, zero], -1), torch.stack([zero, c], -1)], -2)
            im = torch.stack([torch.stack([zero, -s], -1), torch.stack([-s, zero], -1)], -2)
            return torch.complex(re, im)
        if name == "rz":
            re = torch.stack([torch.stack([c, zero], -1), torch.stack([zero, c], -1)], -2)
            im = torch.stack([torch.stack([-s, zero], -1), torch.stack([zero, s], -1)], -2)
            return torch.complex(re, im)
        raise SpaceError(f"simulator has no kernel for single-qubit gate {name!r}")

    def _group_matrices(self, group: _Fused1Q, inputs: Tensor, weights: Tensor) -> Tensor:
        """Fused matrices of a group: (n_runs, 2, 2) shared or (B, n_runs, 2, 2) per sample."""
        batch = inputs.shape[0]
        shape = (batch, len(group.qubits)) if group.per_sample else (len(group.qubits),)
        total: Tensor | None = None
        for name, kind, idx in zip(group.names, group.kinds, group.index, strict=True):
            if kind is None:
                theta = None
            elif kind == "x":
                theta = inputs[:, idx]
            else:
                theta = weights[idx].expand(shape) if group.per_sample else weights[idx]
            m = self._gate_matrices(name, theta, shape)
            total = m if total is None else m @ total
        assert total is not None
        return total

    # ------------------------------------------------------------------ kernels
    def _product_state(self, groups: list[_Fused1Q], inputs: Tensor, weights: Tensor) -> Tensor:
        n, batch = self.n_qubits, inputs.shape[0]
        dt = self.dtype if self.real else self.complex_dtype
        vecs: list[Tensor | None] = [None] * n
        for group in groups:
            col = self._group_matrices(group, inputs, weights)[..., :, 0]  # U|0>
            for k, q in enumerate(group.qubits):
                vecs[q] = col[:, k] if group.per_sample else col[k].expand(batch, 2)
        zero = torch.tensor([1.0, 0.0], dtype=dt).expand(batch, 2)
        state = vecs[n - 1] if vecs[n - 1] is not None else zero
        for q in range(n - 2, -1, -1):
            v = vecs[q] if vecs[q] is not None else zero
            state = (state[:, :, None] * v[:, None, :]).reshape(batch, -1)
        return state

    def _apply_1q(self, state: Tensor, groups: list[_Fused1Q], inputs: Tensor, weights: Tensor) -> Tensor:
        n, batch = self.n_qubits, state.shape[0]
        for group in groups:
            mats = self._group_matrices(group, inputs, weights)
            for k, q in enumerate(group.qubits):
                if group.per_sample:
                    view = state.reshape(batch, 2 ** (n - 1 - q), 2, 2**q)
                    state = torch.matmul(mats[:, None, k], view).reshape(batch, -1)
                else:
                    view = state.reshape(batch * 2 ** (n - 1 - q), 2, 2**q)
                    state = torch.matmul(mats[k], view).reshape(batch, -1)
        return state

    def _initial_state(self, inputs: Tensor, weights: Tensor) -> Tensor:
        if self.amplitude:
            dim = 2**self.n_qubits
            feats = torch.nn.functional.pad(inputs, (0, dim - inputs.shape[1]))
            norm = feats.norm(dim=1, keepdim=True)
            basis0 = torch.zeros(dim, dtype=self.dtype)
            basis0[0] = 1.0
            safe = torch.where(norm > 0, norm, torch.ones_like(norm))
            state = torch.where(norm > 0, feats / safe, basis0)
            return state if self.real else state.to(self.complex_dtype)
        assert self.product_init is not None
        return self._product_state(self.product_init, inputs, weights)

    def _run(self, inputs: Tensor, weights: Tensor) -> Tensor:
        inputs, weights = self._check(inputs, weights)
        state = self._initial_state(inputs, weights)
        for stage in self.stages:
            if isinstance(stage, _Permutation):
                state = _Gather.apply(state, stage.src, stage.inv)
            elif isinstance(stage, _Phase):
                theta = inputs[:, stage.first] * inputs[:, stage.second]
                phase = theta @ stage.coef
                state = state * torch.polar(torch.ones_like(phase), phase)
            else:
                state = self._apply_1q(state, stage, inputs, weights)
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
    def state(self, inputs: Tensor, weights: Tensor) -> Tensor:
        """Final statevector (B, 2**n), complex, little-endian.

        Gates stripped from the tail for the readout (trailing CNOTs and diagonal
        gates) are applied here, so this is the circuit's full state.
        """
        n = self.n_qubits
        state = self._run(inputs, weights)
        state = state.to(self.complex_dtype)
        # Re-run the stripped tail exactly: it is cheap and only used by tests/diagnostics.
        tail = self._stripped_tail()
        for gate in tail:
            if gate.name == "cx":
                state = state[:, torch.as_tensor(_cx_source(n, *gate.qubits))]
            elif gate.name == "rz":
                theta = self._param_value(gate, inputs.to(self.dtype), weights.to(self.dtype))
                z = torch.as_tensor(1.0 - 2.0 * _bits(n)[:, gate.qubits[0]], dtype=self.dtype)
                phase = -0.5 * theta[..., None] * z
                state = state * torch.polar(torch.ones_like(phase), phase)
            elif gate.name == "rzz":
                theta = self._param_value(gate, inputs.to(self.dtype), weights.to(self.dtype))
                bits = _bits(n)
                z = torch.as_tensor((1.0 - 2.0 * bits[:, gate.qubits[0]]) * (1.0 - 2.0 * bits[:, gate.qubits[1]]))
                phase = -0.5 * theta[..., None] * z.to(self.dtype)
                state = state * torch.polar(torch.ones_like(phase), phase)
        return state

    def _stripped_tail(self) -> list[Gate]:
        gates = gate_program(self.arch)
        if self.amplitude:
            gates = self._drop_amplitude_prefix(gates)
        kept, _ = _strip_tail(gates, self.n_qubits)
        # The tail is the program minus the kept gates, in program order.
        kept_ids = iter(kept)
        nxt = next(kept_ids, None)
        tail = []
        for g in gates:
            if nxt is not None and g is nxt:
                nxt = next(kept_ids, None)
            else:
                tail.append(g)
        return tail

    @staticmethod
    def _param_value(gate: Gate, inputs: Tensor, weights: Tensor) -> Tensor:
        assert gate.param is not None
        kind = gate.param[0]
        if kind == "x":
            return inputs[:, gate.param[1]]
        if kind == "w":
            return weights[gate.param[1]].expand(inputs.shape[0])
        if kind == "xx":
            return inputs[:, gate.param[1]] * inputs[:, gate.param[2]]
        raise SpaceError(f"unknown parameter reference {gate.param!r}")

    def expectations(self, inputs: Tensor, weights: Tensor) -> Tensor:
        """<Z_q> for every qubit, (B, n_qubits), differentiable in inputs and weights."""
        state = self._run(inputs, weights)
        probs = state.square() if self.real else (state.real.square() + state.imag.square())
        return probs @ self.readout


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
