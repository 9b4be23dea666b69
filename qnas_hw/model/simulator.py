"""Batched, differentiable, exact statevector simulation of an architecture's circuit in torch.

The SuperCircuit trains by running this millions of times, so the plan compiles
:func:`qnas_hw.model.circuits.gate_program` (the single source of truth; nothing about
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

Devices.  A plan computes on the device of its inputs.  Its constants (readout
signs, permutations, index tensors) are compiled on the CPU, exactly as before,
and move with :meth:`SimulatorPlan.to`: :class:`QuantumLayer` calls it from
``module.to()``, and a plan called with inputs on another device moves itself
first (the SuperCircuit runs cached templates through ``functional_call`` with
its own tensors, so their plans never see a ``.to()``).  They are deliberately
not registered buffers: a SuperCircuit shares every buffer of its template
models across architectures by slicing, which plan constants must not enter.
The dtype of a plan is its simulation precision, fixed at construction;
``module.to(dtype)`` changes the weights' dtype, never the plan's.

Memory.  Before a call allocates anything state-sized, the plan estimates its
peak (state-sized buffers the fused pass keeps for the backward, plus
autograd's copies) and refuses a batch that does not fit with
:class:`~qnas_hw.model.memory.SimulationMemoryError`, which names a batch size that does.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from qnas_hw.model.circuits import Gate, gate_program
from qnas_hw.model.gatewise import GateNoise, GatewisePlan
from qnas_hw.model.memory import check_fits
from qnas_hw.model.space import Architecture, SpaceError, reuploads

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
    mode "complex": fused complex matrices in chunks.  The initial product layer uses
    the same record with no chunks (its runs become per-qubit vectors).
    """

    mode: str
    groups: list[_Fused1Q]
    chunks: list[tuple[int, int]]  # (lowest qubit, width) of each Kronecker chunk
    phase: _RzPhase | None


@dataclass(frozen=True)
class _RzPhase:
    """RZ angles theta_j on qubits q_j: phase[k] = -1/2 sum_j theta_j z_{q_j}(k) with z = +-1.

    The (2**n, n_rz) sign matrix is built once for all phases of the plan (``_phase_signs``), not kept per
    stage: at 20 qubits each column is 4-8 MiB.
    """

    kinds: tuple[str, ...]
    index: Tensor
    qubits: tuple[int, ...]


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


class _Workspace:
    """State-sized scratch buffers reused across calls of one plan, on one device.

    Why: a W12 step touches a dozen fresh multi-MiB tensors; glibc hands blocks
    that large straight back to the OS, so every step pays page faults on all of
    them (about half the step time in the anchors).  Buffers only come back here
    once nothing can read them any more (after the backward, or right away in
    no-grad calls), and tensors that escape to the caller never come from here.
    Only CPU buffers are kept: torch's CUDA caching allocator already reuses
    freed blocks without page faults, and keeping them here would pin GPU memory
    in every plan a SuperCircuit caches.
    """

    def __init__(self, per_size: int = 12, sizes: int = 4, device: torch.device | str = "cpu") -> None:
        self._free: dict[tuple[int, torch.dtype], list[Tensor]] = {}
        self._per_size = per_size
        self._sizes = sizes
        self.device = torch.device(device)
        self._keep = self.device.type == "cpu"

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        stack = self._free.get((math.prod(shape), dtype))
        if stack:
            try:
                return stack.pop().view(shape)
            except IndexError:  # another thread emptied it between the check and the pop
                pass
        return torch.empty(shape, dtype=dtype, device=self.device)

    def give(self, *tensors: Tensor) -> None:
        if not self._keep:
            return
        for t in tensors:
            key = (t.numel(), t.dtype)
            stack = self._free.setdefault(key, [])
            if len(stack) < self._per_size:
                stack.append(t.view(-1))
            if len(self._free) > self._sizes:  # batch size changed: forget the other sizes
                self._free = {key: stack}

    def held_bytes(self, numel: int, dtype: torch.dtype) -> int:
        """Bytes of kept buffers of this size (a call of that size reuses them rather than allocating)."""
        return sum(t.numel() * t.element_size() for t in self._free.get((numel, dtype), ()))

    def __deepcopy__(self, memo: dict) -> _Workspace:
        return _Workspace(self._per_size, self._sizes, self.device)

    def __getstate__(self) -> dict:
        return {"per_size": self._per_size, "sizes": self._sizes, "device": str(self.device)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["per_size"], state["sizes"], state.get("device", "cpu"))


def _canonical_device(device: torch.device | str) -> torch.device:
    """``cuda`` -> ``cuda:<current>``, so it compares equal to a tensor's device; others unchanged."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _moved(obj: object, device: torch.device, memo: dict[int, tuple[object, object]]) -> object:
    """``obj`` with every tensor it holds (through dataclasses, lists, tuples and dicts) on ``device``.

    Shared sub-objects stay shared (``memo``): a stage referenced from two lists moves once.
    """
    key = id(obj)
    if key in memo:
        return memo[key][1]
    out: object
    if isinstance(obj, Tensor):
        out = obj.to(device)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            new = _moved(value, device, memo)
            if new is not value:
                changes[f.name] = new
        out = dataclasses.replace(obj, **changes) if changes else obj  # type: ignore[type-var]
    elif isinstance(obj, list):
        out = [_moved(v, device, memo) for v in obj]
    elif isinstance(obj, tuple):
        items = tuple(_moved(v, device, memo) for v in obj)
        out = obj if all(a is b for a, b in zip(items, obj, strict=True)) else items
    elif isinstance(obj, dict):
        out = {k: _moved(v, device, memo) for k, v in obj.items()}
    else:
        out = obj
    memo[key] = (obj, out)  # holding obj keeps its id from being reused while the walk runs
    return out


def _outer_forward(vecs: list[Tensor]) -> tuple[Tensor, tuple | None]:
    """Kronecker product of (2, B|1) columns, first factor most significant, and the tree for its backward."""
    if len(vecs) == 1:  # batch-last contiguous: a transposed factor makes every product below it slow
        return vecs[0].contiguous(), None
    half = len(vecs) // 2
    hi, hi_tree = _outer_forward(vecs[:half])
    lo, lo_tree = _outer_forward(vecs[half:])
    cols = max(hi.shape[1], lo.shape[1])
    return (hi[:, None, :] * lo[None, :, :]).reshape(-1, cols), (half, hi, hi_tree, lo, lo_tree)


def _sum_cols(g: Tensor, cols: int) -> Tensor:
    return g.sum(1, keepdim=True) if cols == 1 and g.shape[1] != 1 else g


def _outer_split_grads(g: Tensor, hi: Tensor, lo: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of hi and lo for out = hi (x) lo given the output gradient g (rows_hi * rows_lo, cols)."""
    g3 = g.view(hi.shape[0], lo.shape[0], g.shape[1])
    g_hi = torch.linalg.vecdot(lo[None, :, :], g3, dim=1)  # vecdot(a, b) = sum(conj(a) * b)
    g_lo = torch.linalg.vecdot(hi[:, None, :], g3, dim=0)
    return _sum_cols(g_hi, hi.shape[1]), _sum_cols(g_lo, lo.shape[1])


def _outer_backward(g: Tensor, vecs: list[Tensor], tree: tuple | None) -> list[Tensor]:
    if tree is None:
        return [_sum_cols(g, vecs[0].shape[1])]
    half, hi, hi_tree, lo, lo_tree = tree
    g_hi, g_lo = _outer_split_grads(g, hi, lo)
    return _outer_backward(g_hi, vecs[:half], hi_tree) + _outer_backward(g_lo, vecs[half:], lo_tree)


def _batched_kron(factors: Tensor) -> Tensor:
    """(..., w, 2, 2) factors, the first most significant -> (..., 2**w, 2**w) Kronecker products."""
    out = factors[..., 0, :, :]
    for j in range(1, factors.shape[-3]):
        size = out.shape[-1] * 2
        out = (out[..., :, None, :, None] * factors[..., j, None, :, None, :]).reshape(*out.shape[:-2], size, size)
    return out


class _Circuit(torch.autograd.Function):
    """The whole state-sized part of a plan (init, stages, readout) as one autograd node.

    Its inputs are the small tensors autograd builds from inputs and weights
    (per-qubit vectors and matrices, phases); the backward is a hand-written
    reverse pass over the same stages, so no state-sized tensor ever enters
    autograd's graph and the saved states are the plan's reusable buffers.
    """

    @staticmethod
    def forward(ctx, plan: SimulatorPlan, batch: int, *params: Tensor) -> Tensor:  # type: ignore[override]
        out, tape, release = plan._forward(list(params), batch, keep=True)
        ctx.plan, ctx.batch, ctx.tape, ctx.release = plan, batch, tape, release
        ctx.save_for_backward(*params)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        plan: SimulatorPlan = ctx.plan
        params = list(ctx.saved_tensors)
        tape, release = ctx.tape, ctx.release
        if tape is None:  # a second backward through the same graph (retain_graph): the buffers went back
            _, tape, release = plan._forward(params, ctx.batch, keep=True)
        ctx.tape = ctx.release = None
        grads = plan._backward(tape, params, grad)
        plan._workspace.give(*release)
        return (None, None, *grads)


def _chunk_view(state: Tensor, lo: int, width: int) -> Tensor:
    """(2**(n-lo-w), 2**w, 2**lo * C) view of a (2**n, C) state: the chunk's bits in the middle axis."""
    rows, cols = state.shape
    return state.view(rows >> (lo + width), 1 << width, (1 << lo) * cols)


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
        # (2**n, n): <Z_q> sign of basis state k.  Only the compiler reads every column; it is dropped below
        # (at 20 qubits it is 80-160 MiB, as much as the readout matrices the plan does keep).
        self._z = torch.tensor(1.0 - 2.0 * _bits(n), dtype=dtype)
        self._eye_real = torch.eye(2, dtype=dtype)
        self._eye_complex = torch.eye(2, dtype=self.complex_dtype)
        self._ket0 = torch.tensor([[1.0], [0.0]], dtype=dtype)
        self._ket0_complex = self._ket0.to(self.complex_dtype)
        self.product_init, self.stages = self._compile(kept)
        # E[q] = sum_k p_final[k] z[k, q] = sum_j p[j] z[inv[j], q] with final[k] = state[src[k]].
        readout = self._z[torch.as_tensor(np.argsort(readout_src))].contiguous()
        self._readout_t = readout.T.contiguous()
        self._readout2 = 2 * readout  # d<Z>/d|amplitude|: 2 * amplitude * readout
        self._ops = self._op_list()
        del self._z
        self._peak_states = {grad: self._state_buffers(grad) for grad in (False, True)}
        if self.product_init is not None:
            slot = {q: 1 + i for i, q in enumerate(q for g in self.product_init.groups for q in g.qubits)}
            self._product_order = torch.tensor([slot.get(q, 0) for q in reversed(range(n))], dtype=torch.long)
        self._kron_basis: dict[tuple[int, torch.dtype], tuple[Tensor, Tensor]] = {}
        self._workspace = _Workspace()
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------ device
    def to(self, device: torch.device | str) -> SimulatorPlan:
        """Move every constant of the plan to ``device`` (in place; returns the plan).

        Scratch buffers and cached Kronecker bases of the old device are dropped.
        """
        device = _canonical_device(device)
        if device == self.device:
            return self
        memo: dict[int, tuple[object, object]] = {}
        for name, value in list(vars(self).items()):
            if name not in ("arch", "_workspace", "_kron_basis", "device"):
                setattr(self, name, _moved(value, device, memo))
        self._kron_basis = {}
        self._workspace = _Workspace(device=device)
        logger.debug("moved the simulator plan of %s to %s", self.arch.canonical(), device)
        self.device = device
        return self

    def tensors(self) -> list[Tensor]:
        """Every tensor the plan holds (constants and cached bases; not scratch buffers), e.g. to check a move."""
        found: dict[int, Tensor] = {}

        def walk(obj: object) -> None:
            if isinstance(obj, Tensor):
                found.setdefault(id(obj), obj)
            elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
                for f in dataclasses.fields(obj):
                    walk(getattr(obj, f.name))
            elif isinstance(obj, list | tuple):
                for v in obj:
                    walk(v)
            elif isinstance(obj, dict):
                for v in obj.values():
                    walk(v)

        for name, value in vars(self).items():
            if name != "_workspace":
                walk(value)
        return list(found.values())

    # ------------------------------------------------------------------ memory
    def _state_buffers(self, grad: bool) -> float:
        """Peak number of state-sized (2**n, C) buffers one call holds at once (see :meth:`estimate_bytes`)."""
        chunks = sum(len(stage.chunks) for kind, stage, _, _ in self._ops if kind == "layer")
        phases = sum(1 for kind, *_ in self._ops if kind == "phase")
        # input-dependent phases (IQP) are built up front: the angles phi (2**n, B) (half a complex state)
        # and their rotation exp(i phi), plus the gradient's complex temporaries
        inputs = len(self._input_phases) * (3.0 if grad else 1.5)
        # amplitude embedding: padded features, normalised, selected and transposed copies, in autograd
        amplitude = (5.0 if grad else 2.0) if self.amplitude else 0.0
        if not grad:  # the state, the next one, the squared one of the readout
            return 3.0 + inputs + amplitude
        # forward: the initial state and the input of every chunk GEMM and phase stay on the tape, plus the
        # final state; backward: dprobs, the gradient and the next gradient (or the product's scratch)
        return 1.0 + chunks + phases + 1.0 + 3.0 + inputs + amplitude

    def estimate_bytes(self, batch: int, grad: bool = True) -> int:
        """Peak memory of one call at ``batch`` samples: state-sized buffers times their count.

        Counted from the compiled stages as :meth:`_forward` and :meth:`_backward` allocate them
        (``grad``: the forward keeps its tape for the hand-written backward); small per-layer tensors
        and the plan's constants (already allocated) are left out.
        """
        cols = batch if self.real else 2 * batch
        state = self.dim * cols * (torch.finfo(self.dtype).bits // 8)
        return math.ceil(state * self._peak_states[grad])

    def check_memory(self, batch: int, grad: bool = True, available: int | None = None) -> None:
        """Raise :class:`~qnas_hw.model.memory.SimulationMemoryError` when a call at ``batch`` would not fit.

        ``available`` overrides the measured free memory of the plan's device (tests).
        """
        numel = self.dim * (batch if self.real else 2 * batch)
        check_fits(
            self.arch.canonical(),
            self.n_qubits,
            batch,
            self.estimate_bytes(1, grad),
            self.device,
            reusable_bytes=self._workspace.held_bytes(numel, self.dtype),
            available=available,
        )

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
                product_init, product = self._product_layer(pending), False
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
            product_init = self._product_layer(pending)
        else:
            tail = {q: run for q, run in pending.items() if run}
            if tail:
                stages.append(self._layer(tail))
        return product_init, stages

    def _product_layer(self, runs: dict[int, list[Gate]]) -> _Layer:
        """Runs acting on |0...0>: each becomes one 2-vector U_q|0> (complex if any gate is), whatever the gates."""
        runs = {q: run for q, run in runs.items() if run}
        real = all(g.name in _REAL_1Q for run in runs.values() for g in run)
        return _Layer("real" if real else "complex", _group_runs(runs), [], None)

    def _layer(self, runs: dict[int, list[Gate]]) -> _Layer:
        """Compile commuting single-qubit runs after the first entangler into Kronecker chunks (+ an RZ phase)."""
        if any(g.param is not None and g.param[0] == "x" for run in runs.values() for g in run):
            raise SpaceError(
                "simulator has no kernel for input-dependent single-qubit gates after the first entangler "
                f"({self.arch.canonical()}); extend SimulatorPlan before adding such gates to gate_program"
            )
        heads: dict[int, list[Gate]] = {}
        rzs: list[Gate] = []
        for q, run in runs.items():
            cut = len(run)
            while cut > 0 and run[cut - 1].name == "rz":
                cut -= 1
            heads[q], rzs = run[:cut], rzs + run[cut:]
        if all(g.name in _REAL_1Q for run in heads.values() for g in run):
            mode, phase = "real", None
            if rzs:
                phase = _RzPhase(
                    kinds=tuple(g.param[0] for g in rzs),
                    index=torch.tensor([g.param[1] for g in rzs], dtype=torch.long),
                    qubits=tuple(g.qubits[0] for g in rzs),
                )
            runs = {q: run for q, run in heads.items() if run}
        else:
            mode, phase = "complex", None
        return _Layer(mode, _group_runs(runs), _chunks(list(runs), self.n_qubits, self.chunk), phase)

    def _op_list(self) -> list[tuple[str, object, int, int]]:
        """The state-sized pass as (kind, stage, param, slot) steps: init, then gathers, chunk layers and phases.

        Small tensors are shared between steps so autograd builds them in a handful of ops
        whatever the depth: ``params[param][slot]`` is a layer's (n, 2, 2) matrices (one
        tensor per mode for all layers), ``params[param][:, slot]`` a weight phase (one
        (2**n, P) tensor for all of them); input-dependent phases get a tensor each.
        """
        steps: list[tuple[str, object, str, int]] = [
            ("amplitude" if self.amplitude else "product", self.product_init, "init", 0)
        ]
        layers: dict[str, list[_Layer]] = {"real": [], "complex": []}
        weight_phases: list[_RzPhase] = []
        input_phases: list[_Phase] = []
        for stage in self.stages:
            if isinstance(stage, _Permutation):
                steps.append(("gather", stage, "", 0))
            elif isinstance(stage, _Phase):
                steps.append(("phase", stage, f"x{len(input_phases)}", 0))
                input_phases.append(stage)
            else:
                if stage.chunks:
                    steps.append(("layer", stage, stage.mode, len(layers[stage.mode])))
                    layers[stage.mode].append(stage)
                if stage.phase is not None:
                    steps.append(("phase", stage.phase, "w", len(weight_phases)))
                    weight_phases.append(stage.phase)
        names = ["init"] + [m for m in ("real", "complex") if layers[m]] + (["w"] if weight_phases else [])
        names += [f"x{i}" for i in range(len(input_phases))]
        self._param_names = names
        self._merged = {m: self._merge_layers(layers[m]) for m in ("real", "complex") if layers[m]}
        self._batches = {m: self._chunk_batches(layers[m]) for m in ("real", "complex") if layers[m]}
        self._input_phases = input_phases
        if weight_phases:
            kinds = {k for ph in weight_phases for k in ph.kinds}
            if kinds != {"w"}:
                raise SpaceError(f"simulator expects weight-only RZ phases after the first entangler, got {kinds}")
            sizes = [len(ph.index) for ph in weight_phases]
            signs = [self._z[:, list(ph.qubits)] for ph in weight_phases]
            self._phase_signs = -0.5 * torch.cat(signs, 1)  # (2**n, total)
            self._phase_index = torch.cat([ph.index for ph in weight_phases])
            self._phase_select = torch.block_diag(*[torch.ones(k, 1, dtype=self.dtype) for k in sizes])  # (total, P)
        return [(kind, stage, names.index(name) if name else -1, slot) for kind, stage, name, slot in steps]

    def _merge_layers(self, layers: list[_Layer]) -> tuple[list[_Fused1Q], Tensor, int]:
        """Groups of every layer of one mode merged by gate signature, and where each fused matrix goes.

        Returns (groups, order, n_layers): ``cat([eye] + group matrices)[order]`` is the
        (n_layers * n, 2, 2) stack of per-qubit matrices, identity where a layer has no gate.
        """
        n = self.n_qubits
        by_sig: dict[tuple, list[tuple[int, _Fused1Q]]] = {}
        for l, layer in enumerate(layers):
            for g in layer.groups:
                by_sig.setdefault((g.names, g.kinds), []).append((l, g))
        merged, rows = [], []
        for (names, kinds), members in by_sig.items():
            index = tuple(
                None if kinds[p] is None else torch.cat([g.index[p] for _, g in members])  # type: ignore[misc]
                for p in range(len(names))
            )
            qubits = tuple(l * n + q for l, g in members for q in g.qubits)
            merged.append(_Fused1Q(qubits, names, kinds, index))
            rows.extend(qubits)
        slot = {r: 1 + i for i, r in enumerate(rows)}
        order = torch.tensor([slot.get(r, 0) for r in range(len(layers) * n)], dtype=torch.long)
        return merged, order, len(layers)

    def _chunk_batches(self, layers: list[_Layer]) -> tuple[dict[int, Tensor], dict[tuple[int, int], int]]:
        """All chunks of a mode's layers grouped by width, so their Kronecker matrices (and the
        gradients of their factors) are built in a few batched ops instead of a few per chunk.

        Returns ({width: (count, width) rows into the (layers * n) matrix stack, most significant
        qubit first}, {(layer, lo): position within its width's batch}).
        """
        n = self.n_qubits
        rows: dict[int, list[list[int]]] = {}
        where: dict[tuple[int, int], int] = {}
        for l, layer in enumerate(layers):
            for lo, width in layer.chunks:
                where[(l, lo)] = len(rows.setdefault(width, []))
                rows[width].append([l * n + q for q in range(lo + width - 1, lo - 1, -1)])
        return {w: torch.tensor(r, dtype=torch.long) for w, r in rows.items()}, where

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
            h = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=self.dtype, device=self.device) / math.sqrt(2.0)
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

    # ------------------------------------------------------------------ small tensors (autograd)
    def _params(self, inputs: Tensor, weights: Tensor) -> list[Tensor]:
        """The per-call tensors the state-sized pass takes, built with autograd from inputs and weights.

        In :attr:`_param_names` order: the initial product's (n, 2, B) per-qubit vectors (or
        the amplitude state), the stacked layer matrices per mode, the weight phases, the
        input-dependent phases (see :meth:`_op_list`).
        """
        params: list[Tensor] = []
        for name in self._param_names:
            if name == "init":
                init = self._amplitude_state(inputs) if self.amplitude else self._product_vectors(inputs, weights)
                params.append(init)
            elif name in ("real", "complex"):
                params.append(self._layer_matrices(name, inputs, weights))
            elif name == "w":
                theta = weights[self._phase_index][:, None] * self._phase_select  # (total, P)
                params.append(self._phase_signs @ theta)
            else:
                params.append(self._phase_angles(self._input_phases[int(name[1:])], inputs, weights))
        return params

    def _product_vectors(self, inputs: Tensor, weights: Tensor) -> Tensor:
        """U_q|0> per qubit as one (n, 2, B) tensor, most significant qubit first."""
        layer = self.product_init
        assert layer is not None
        real = layer.mode == "real"
        batch = inputs.shape[0]
        cols = [(self._ket0 if real else self._ket0_complex)[None].expand(1, 2, batch)]
        cols += [self._group_ket0(group, inputs, weights, real, batch) for group in layer.groups]
        return torch.cat(cols, 0).index_select(0, self._product_order)

    def _group_ket0(self, group: _Fused1Q, inputs: Tensor, weights: Tensor, real: bool, batch: int) -> Tensor:
        """U|0> of a group's runs as (runs, 2, B).

        Gates up to the last input-dependent one act on the vector (the first one is just
        its matrix's first column); the weight-only gates after it are fused into one shared
        (runs, 2, 2) matrix first and applied with one small batched product over the runs.
        """
        last_x = max((i for i, kind in enumerate(group.kinds) if kind == "x"), default=0)
        gates = []
        for p, (name, kind, idx) in enumerate(zip(group.names, group.kinds, group.index, strict=True)):
            per_sample = group.per_sample and p <= last_x
            shape = (batch, len(group.qubits)) if per_sample else (len(group.qubits),)
            if kind is None:
                theta = None
            elif kind == "x":
                theta = inputs[:, idx]
            else:
                theta = weights[idx].expand(shape) if per_sample else weights[idx]
            gates.append(self._gate_matrices(name, theta, shape, real))
        vec = gates[0][..., :, 0]  # (B, runs, 2) or (runs, 2)
        for m in gates[1 : last_x + 1]:
            vec = (m @ vec[..., None])[..., 0]
        vec = vec.permute(1, 2, 0) if vec.ndim == 3 else vec[:, :, None].expand(-1, 2, batch)
        if last_x + 1 < len(gates):
            shared = gates[last_x + 1]
            for m in gates[last_x + 2 :]:
                shared = m @ shared
            vec = torch.bmm(shared, vec)
        return vec

    def _layer_matrices(self, mode: str, inputs: Tensor, weights: Tensor) -> Tensor:
        """(layers, n, 2, 2) fused matrix per layer of this mode and qubit (identity where a layer has no gate)."""
        groups, order, n_layers = self._merged[mode]
        real = mode == "real"
        eye = self._eye_real if real else self._eye_complex
        fused = [eye[None]] + [self._group_matrices(g, inputs, weights, real) for g in groups]
        return torch.cat(fused).index_select(0, order).view(n_layers, self.n_qubits, 2, 2)

    def _phase_angles(self, stage: _Phase, inputs: Tensor, weights: Tensor) -> Tensor:
        """phi (2**n, B) with an input-dependent phase stage (RZZ run) multiplying the state by exp(i * phi).

        (Weight-only RZ phases are built for all layers at once in :meth:`_params`.)
        """
        theta = inputs[:, stage.first] * inputs[:, stage.second]
        return (theta @ stage.coef).T

    def _amplitude_state(self, inputs: Tensor) -> Tensor:
        feats = torch.nn.functional.pad(inputs, (0, self.dim - inputs.shape[1]))
        norm = feats.norm(dim=1, keepdim=True)
        basis0 = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        basis0[0] = 1.0
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        state = torch.where(norm > 0, feats / safe, basis0).T.contiguous()
        if self.real:
            return state
        return torch.stack([state, torch.zeros_like(state)], -1).reshape(self.dim, -1)

    # ------------------------------------------------------------------ state-sized pass
    # The state is a real (2**n, C) tensor, C = B (real) or 2B (complex, re/im interleaved).
    # ``owned``: the tensor is a workspace buffer nothing else reads, so it may be
    # overwritten in place or handed back; ``release`` lists the saved buffers that go
    # back to the workspace once the backward has run.

    def _complex(self, state: Tensor) -> Tensor:
        return torch.view_as_complex(state.view(self.dim, -1, 2))

    def _forward(
        self, params: list[Tensor], batch: int, keep: bool, readout: bool = True
    ) -> tuple[Tensor, list, list[Tensor]]:
        ws = self._workspace
        cols = batch if self.real else 2 * batch
        tape: list = []
        release: list[Tensor] = []
        state, owned = params[0], False
        krons = {
            mode: {
                w: _batched_kron(self._chunk_factors(params[self._param_names.index(mode)], rows))
                for w, rows in b.items()
            }
            for mode, (b, _) in self._batches.items()
        }
        for kind, stage, pidx, slot in self._ops:
            record = None
            if kind == "product":
                state, record = self._product_forward(list(params[0].contiguous()), batch, cols)
                owned = True
            elif kind == "gather":
                out = ws.take((self.dim, cols), self.dtype)
                torch.index_select(state, 0, stage.src, out=out)
                if owned:
                    ws.give(state)
                state, owned = out, True
            elif kind == "layer":
                where = self._batches[stage.mode][1]
                record = []
                for lo, width in stage.chunks:
                    kron = krons[stage.mode][width][where[(slot, lo)]]
                    out = ws.take((self.dim, cols), self.dtype)
                    self._chunk_matmul(kron, state, out, lo, width, stage.mode == "complex")
                    if keep:
                        record.append((state, kron))
                        if owned:
                            release.append(state)
                    elif owned:
                        ws.give(state)
                    state, owned = out, True
            elif kind == "phase":
                phi = params[pidx] if self._param_names[pidx] != "w" else params[pidx][:, slot : slot + 1]
                rot = torch.polar(torch.ones_like(phi), phi)
                if owned:
                    self._complex(state).mul_(rot)
                else:
                    out = ws.take((self.dim, cols), self.dtype)
                    torch.mul(self._complex(state), rot, out=self._complex(out))
                    state, owned = out, True
                record = (state, rot)
                if keep:
                    release.append(state)
                    owned = False
            tape.append(record)
        if not readout:
            return state, [owned], []
        sq = ws.take((self.dim, cols), self.dtype)
        torch.mul(state, state, out=sq)
        out_t = self._readout_t @ sq  # (n, C): the big operand un-transposed is the fast GEMM here
        out = (out_t if self.real else out_t.view(-1, batch, 2).sum(-1)).T
        ws.give(sq)
        if keep:
            tape.append(state)
            if owned:
                release.append(state)
        elif owned:
            ws.give(state)
        return out, tape, release

    def _chunk_matmul(self, kron: Tensor, state: Tensor, out: Tensor, lo: int, width: int, complex_: bool) -> None:
        """out = (I (x) kron (x) I) state for the chunk of qubits lo..lo+width-1, as one (batched) GEMM."""
        if complex_:
            state, out = self._complex(state), self._complex(out)
        view = _chunk_view(state, lo, width)
        dest = _chunk_view(out, lo, width)
        if view.shape[0] == 1:
            torch.mm(kron, view[0], out=dest[0])
        else:
            torch.bmm(kron.expand(view.shape[0], *kron.shape), view, out=dest)

    def _product_forward(self, vecs: list[Tensor], batch: int, cols: int) -> tuple[Tensor, tuple | None]:
        """(x)_q U_q|0> into a workspace buffer; only the last outer product touches the whole state."""
        out = self._workspace.take((self.dim, cols), self.dtype)
        complex_vecs = vecs[0].is_complex()
        if complex_vecs:
            dest = self._complex(out)
        elif self.real:
            dest = out
        else:  # real factors of a state that turns complex later: imaginary part zero
            dest = out.view(self.dim, batch, 2)[..., 0]
            out.view(self.dim, batch, 2)[..., 1].zero_()
        if len(vecs) == 1:
            dest.copy_(vecs[0])
            return out, None
        half = len(vecs) // 2
        hi, hi_tree = _outer_forward(vecs[:half])
        lo, lo_tree = _outer_forward(vecs[half:])
        torch.mul(hi[:, None, :], lo[None, :, :], out=dest.view(hi.shape[0], lo.shape[0], batch))
        return out, (half, hi, hi_tree, lo, lo_tree)

    def _backward(self, tape: list, params: list[Tensor], grad_out: Tensor) -> list[Tensor | None]:
        ws = self._workspace
        grads: list[Tensor | None] = [
            None if name == "init" or name.startswith("x") else torch.zeros_like(p)
            for name, p in zip(self._param_names, params, strict=True)
        ]
        final = tape[-1]
        batch = grad_out.shape[0]
        grad_t = grad_out.T  # (n, B); for a complex state each column twice (re, im) so the product below is flat
        if not self.real:
            grad_t = grad_t[:, :, None].expand(-1, batch, 2).reshape(-1, 2 * batch)
        dprobs = ws.take(final.shape, self.dtype)
        torch.mm(self._readout2, grad_t, out=dprobs)
        grad = ws.take(final.shape, self.dtype)
        torch.mul(final, dprobs, out=grad)
        ws.give(dprobs)
        grad_krons = {
            mode: {w: params[self._param_names.index(mode)].new_empty(len(r), 2**w, 2**w) for w, r in b.items()}
            for mode, (b, _) in self._batches.items()
        }
        for (kind, stage, pidx, slot), record in zip(reversed(self._ops), reversed(tape[:-1]), strict=True):
            if kind == "product":
                grads[0] = torch.stack(self._product_backward(grad, list(params[0]), record))
                ws.give(grad)
            elif kind == "amplitude":
                grads[0] = grad  # escapes to autograd: never handed back to the workspace
            elif kind == "gather":
                out = ws.take(grad.shape, self.dtype)
                torch.index_select(grad, 0, stage.inv, out=out)
                ws.give(grad)
                grad = out
            elif kind == "layer":
                where = self._batches[stage.mode][1]
                dests = [grad_krons[stage.mode][width][where[(slot, lo)]] for lo, width in stage.chunks]
                grad = self._layer_backward(grad, stage, record, dests)
            else:  # phase
                out, rot = record
                g = self._complex(grad)
                if self._param_names[pidx] == "w":
                    grads[pidx][:, slot] = torch.linalg.vecdot(self._complex(out), g, dim=1).imag
                else:
                    grads[pidx] = (g * self._complex(out).conj()).imag
                g.mul_(rot.conj())
        for mode, (batches, _) in self._batches.items():
            pidx = self._param_names.index(mode)
            flat = grads[pidx].view(-1, 2, 2)
            for width, rows in batches.items():
                factors = self._chunk_factors(params[pidx], rows)
                flat.index_add_(0, rows.view(-1), self._kron_grads(grad_krons[mode][width], factors).view(-1, 2, 2))
        return grads

    @staticmethod
    def _chunk_factors(mats: Tensor, rows: Tensor) -> Tensor:
        """(count, w, 2, 2) Kronecker factors of a width's chunks from the (layers, n, 2, 2) matrix stack."""
        return mats.reshape(-1, 2, 2).index_select(0, rows.view(-1)).view(*rows.shape, 2, 2)

    def _layer_backward(self, grad: Tensor, layer: _Layer, record: list, dests: list[Tensor]) -> Tensor:
        """Reverse of one chunk layer; writes each chunk's Kronecker-matrix gradient into ``dests``."""
        ws = self._workspace
        complex_ = layer.mode == "complex"
        chunks = zip(reversed(layer.chunks), reversed(record), reversed(dests), strict=True)
        for (lo, width), (x, kron), grad_kron in chunks:
            g_view = _chunk_view(self._complex(grad) if complex_ else grad, lo, width)
            x_view = _chunk_view(self._complex(x) if complex_ else x, lo, width)
            if x_view.shape[0] == 1:
                torch.mm(g_view[0], x_view[0].mH, out=grad_kron)
            else:
                torch.sum(torch.bmm(g_view, x_view.mH), 0, out=grad_kron)
            out = ws.take(grad.shape, self.dtype)
            dest = _chunk_view(self._complex(out) if complex_ else out, lo, width)
            k_h = kron.mH.contiguous()
            if g_view.shape[0] == 1:
                torch.mm(k_h, g_view[0], out=dest[0])
            else:
                torch.bmm(k_h.expand(g_view.shape[0], *k_h.shape), g_view, out=dest)
            ws.give(grad)
            grad = out
        return grad

    def _kron_grads(self, grad: Tensor, factors: Tensor) -> Tensor:
        """dL/df_i for K = f_0 (x) ... (x) f_{w-1}, batched: factors (count, w, 2, 2), grad (count, 2**w, 2**w).

        All 4w partial derivatives at once: dL/df_i[a, b] = <dL/dK, conj(K with f_i -> E_ab)>,
        with those Kronecker products built batched: a handful of small ops for every chunk of every layer.
        """
        count, w = factors.shape[:2]
        key = (w, factors.dtype)
        if key not in self._kron_basis:
            dev = factors.device
            basis = torch.eye(4, dtype=factors.dtype, device=dev).view(4, 2, 2).repeat(w, 1, 1).expand(w, 4 * w, 2, 2)
            mask = torch.arange(4 * w, device=dev)[None, :] // 4 == torch.arange(w, device=dev)[:, None]
            mask = mask[:, :, None, None]
            self._kron_basis[key] = (basis.transpose(0, 1), mask.transpose(0, 1))  # (4w, w, ...)
        basis, mask = self._kron_basis[key]
        stack = torch.where(mask, basis, factors.conj()[:, None])  # (count, 4w, w, 2, 2)
        kb = _batched_kron(stack).view(count, 4 * w, -1)
        return torch.bmm(kb, grad.reshape(count, -1, 1)).view(count, w, 2, 2)

    def _product_backward(self, grad: Tensor, vecs: list[Tensor], tree: tuple | None) -> list[Tensor]:
        complex_vecs = vecs[0].is_complex()
        if complex_vecs:
            g = self._complex(grad)
        elif self.real:
            g = grad
        else:  # real factors, complex state: only the real part of the gradient reaches them
            g = grad.view(self.dim, -1, 2)[..., 0]
        if tree is None:  # one qubit: the gradient is the state's (a workspace buffer), so copy it out
            return [g.clone()]
        half, hi, hi_tree, lo, lo_tree = tree
        # Top level by hand into a workspace buffer: a fresh state-sized temporary page-faults.
        g3 = g.view(hi.shape[0], lo.shape[0], g.shape[1])
        tmp = self._workspace.take(g3.shape, g3.dtype)
        torch.mul(g3, lo.conj()[None, :, :], out=tmp)
        g_hi = tmp.sum(1)
        torch.mul(g3, hi.conj()[:, None, :], out=tmp)
        g_lo = tmp.sum(0)
        self._workspace.give(tmp)
        return _outer_backward(g_hi, vecs[:half], hi_tree) + _outer_backward(g_lo, vecs[half:], lo_tree)

    def _run(self, inputs: Tensor, weights: Tensor) -> Tensor:
        """Final (pre-tail) state, batch-last real layout (2**n, C); not differentiable (tests, diagnostics)."""
        with torch.no_grad():
            state, (owned,), _ = self._forward(
                self._params(inputs, weights), inputs.shape[0], keep=False, readout=False
            )
            out = state.clone()
            if owned:
                self._workspace.give(state)
        return out

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
        if weights.device != inputs.device:
            raise SpaceError(
                f"inputs are on {inputs.device} and weights on {weights.device}; move the model and its inputs to "
                "the same device (model.to(device), inputs.to(device))"
            )
        self.to(inputs.device)  # a no-op unless the inputs come from another device (see the module docstring)
        return inputs.to(self.dtype), weights.to(self.dtype)

    # ------------------------------------------------------------------ public
    def expectations(self, inputs: Tensor, weights: Tensor) -> Tensor:
        """<Z_q> for every qubit, (B, n_qubits), differentiable in inputs and weights."""
        inputs, weights = self._check(inputs, weights)
        batch = inputs.shape[0]
        self.check_memory(batch, grad=torch.is_grad_enabled() and (inputs.requires_grad or weights.requires_grad))
        params = self._params(inputs, weights)
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return _Circuit.apply(self, batch, *params)
        with torch.no_grad():
            return self._forward(params, batch, keep=False)[0]

    def state(self, inputs: Tensor, weights: Tensor) -> Tensor:
        """Final statevector (B, 2**n), complex, little-endian, for tests and diagnostics.

        The gates stripped from the tail for the readout (trailing CNOTs and
        diagonal gates) are applied here gate by gate, so this is the circuit's full state.
        """
        inputs, weights = self._check(inputs, weights)
        self.check_memory(inputs.shape[0], grad=False)
        state = self._run(inputs, weights)
        state = state.to(self.complex_dtype) if self.real else self._complex(state)
        n = self.n_qubits
        for gate in self._tail:
            if gate.name == "cx":
                state = state[torch.as_tensor(_cx_source(n, *gate.qubits), device=state.device)]
                continue
            kind, idx = gate.param[0], gate.param[1]
            if gate.name == "rz":
                theta = inputs[:, idx] if kind == "x" else weights[idx].expand(inputs.shape[0])
                sign = self._z_column(gate.qubits[0])
            else:  # rzz(x_i * x_j)
                theta = inputs[:, idx] * inputs[:, gate.param[2]]
                sign = self._z_column(gate.qubits[0]) * self._z_column(gate.qubits[1])
            phase = -0.5 * sign[:, None] * theta[None, :]
            state = state * torch.polar(torch.ones_like(phase), phase)
        return state.T.contiguous()

    def _z_column(self, q: int) -> Tensor:
        """(2**n,) sign of <Z_q> per basis state (the compiler's ``_z`` column, rebuilt: the plan does not keep it)."""
        return torch.tensor(1.0 - 2.0 * ((np.arange(self.dim) >> q) & 1), dtype=self.dtype, device=self.device)


class QuantumLayer(nn.Module):
    """An architecture's circuit as a torch layer with its own trainable weights.

    Weights are initialised uniformly in [0, 2pi) from ``generator``; with no
    generator a fixed seed (0) is used so construction never touches torch's
    global RNG and is reproducible.  ``layer.to(device)`` moves the plans'
    constants with the weight (they are not buffers: see the module docstring).
    """

    def __init__(
        self, arch: Architecture, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ):
        super().__init__()
        self.arch = arch
        self.dtype = dtype
        # re-uploading puts input rotations after entanglers, which the fused plan has no kernel for
        self.plan: SimulatorPlan | GatewisePlan = (
            GatewisePlan(arch, dtype=dtype) if reuploads(arch.embedding) else SimulatorPlan(arch, dtype=dtype)
        )
        self._exact_plan = self.plan
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        init = torch.rand(arch.n_weights, generator=generator, dtype=dtype) * (2 * math.pi)
        self.weight = nn.Parameter(init)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.plan.expectations(inputs, self.weight)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        """``to()``, ``cuda()``, ``cpu()`` and friends: the plans follow the weight's device."""
        out = super()._apply(fn, recurse)
        self._exact_plan.to(self.weight.device)
        if self.plan is not self._exact_plan:
            self.plan.to(self.weight.device)
        return out

    def set_noise(self, noise: GateNoise | None) -> None:
        """Simulate the target's dominant noise (noise-aware training), or exactly again with ``None``."""
        if noise is None:
            self.plan = self._exact_plan
        else:
            self.plan = GatewisePlan(self.arch, dtype=self.dtype, noise=noise).to(self.weight.device)

    def extra_repr(self) -> str:
        return f"arch={self.arch.canonical()!r}, n_weights={self.arch.n_weights}"
