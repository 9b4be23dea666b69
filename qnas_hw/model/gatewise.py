"""Gate-by-gate torch simulation with autograd: re-uploading circuits, and noisy density matrices for training.

:class:`~qnas_hw.model.simulator.SimulatorPlan` is fast because it fuses the
circuit into a few stages with a hand-written backward pass, and its fusion
assumes inputs enter only before the first entangler.  Two things break that
assumption: data re-uploading (input rotations before every layer) and
noise-aware training (a channel after every gate).  This module runs
:func:`~qnas_hw.model.circuits.gate_program` gate by gate with plain torch autograd
instead, on a statevector ``(B, 2**n)`` or, with a :class:`GateNoise`, on a
density matrix ``(B, 2**n, 2**n)``: slower per gate, exact, and small enough
for the 2-6 qubit circuits it is used for.

The noise model is the target's dominant errors on the candidate's mapped
qubits (QuantumNAS's noise injection, as differentiable channels rather than
sampled Pauli errors):

* a depolarising channel after each gate, its strength from the ``Target``'s
  error of that gate on the physical qubits the logical ones land on (a
  rotation compiles to two ``sx``, an ``RZ`` is virtual and free, a CNOT
  between uncoupled qubits pays a SWAP's three more);
* an assignment (readout) error per qubit, applied to ``<Z_q>`` exactly:
  ``<Z>_read = (1 - p01 - p10) <Z> + (p10 - p01)``.

Tests compare it with Aer running the same simplified noise model.
Little-endian like qiskit: qubit ``q`` is bit ``q`` of the basis index.

Like the fused plan, a gatewise plan computes on its inputs' device (its
constants move with :meth:`GatewisePlan.to`, or on the first call from another
device) and refuses, before allocating, a batch whose states (every gate's
output stays in autograd's graph) would not fit in memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from qnas_hw.model.circuits import Gate, gate_program
from qnas_hw.model.memory import check_fits
from qnas_hw.model.space import Architecture, SpaceError

_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}
#: sx gates a general single-qubit rotation compiles to on IBM-style bases (RZ is virtual)
SX_PER_ROTATION = {"rx": 2, "ry": 2, "rz": 0, "h": 1}


@dataclass(frozen=True)
class GateNoise:
    """Depolarising strengths (the lambda of ``(1-lambda) rho + lambda I/d``) and readout errors, per logical qubit.

    ``one[q]``: one ``sx``'s lambda on qubit q; ``two[(a, b)]``: a CNOT's
    lambda between logical a and b (unordered); ``p01[q]`` = P(read 1 | 0),
    ``p10[q]`` = P(read 0 | 1).
    """

    one: tuple[float, ...]
    two: dict[tuple[int, int], float] = field(default_factory=dict)
    p01: tuple[float, ...] = ()
    p10: tuple[float, ...] = ()

    def one_qubit(self, gate: str, q: int) -> float:
        k = SX_PER_ROTATION.get(gate, 1)
        return 1.0 - (1.0 - self.one[q]) ** k

    def two_qubit(self, a: int, b: int) -> float:
        return self.two.get((min(a, b), max(a, b)), 0.0)

    def key(self) -> str:
        blob = repr((self.one, sorted(self.two.items()), self.p01, self.p10))
        import hashlib

        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def noise_from_target(
    target: object, physical: Sequence[int], readout: Sequence[np.ndarray] | None = None
) -> GateNoise:
    """The target's errors on the physical qubits the logical ones use (``physical[q]`` for logical ``q``).

    ``readout[q]``: the 2x2 ``[[P(0|0), P(1|0)], [P(0|1), P(1|1)]]`` of logical
    qubit q (as Aer's readout error holds it); else the ``measure`` error, symmetric.
    """
    ops = set(target.operation_names)  # type: ignore[attr-defined]
    one_gate = "sx" if "sx" in ops else next((g for g in ("prx", "r", "rx") if g in ops), None)
    two_gates = [g for g in ("cx", "ecr", "cz") if g in ops]

    def err(name: str | None, qargs: tuple[int, ...]) -> float | None:
        if name is None:
            return None
        props = target[name].get(qargs)  # type: ignore[index]
        value = getattr(props, "error", None)
        return None if value is None else float(value)

    n = len(physical)
    one = []
    for q in range(n):
        e = err(one_gate, (int(physical[q]),)) or 0.0
        one.append(min(1.0, 2.0 * e))  # average infidelity e of a 1-qubit depolarising channel: lambda = 2e
    couplers = []
    for g in two_gates:
        for qargs in target[g]:  # type: ignore[index]
            e = err(g, qargs)
            if qargs is not None and e is not None:
                couplers.append(((int(qargs[0]), int(qargs[1])), e))
    by_pair = {}
    for (a, b), e in couplers:
        by_pair[(min(a, b), max(a, b))] = min(e, by_pair.get((min(a, b), max(a, b)), 1.0))
    median = float(np.median([e for _, e in couplers])) if couplers else 0.0
    two = {}
    for a in range(n):
        for b in range(a + 1, n):
            pa, pb = int(physical[a]), int(physical[b])
            e = by_pair.get((min(pa, pb), max(pa, pb)))
            if e is None:  # not coupled: the router adds a SWAP (three more two-qubit gates)
                e = 1.0 - (1.0 - median) ** 4
            two[(a, b)] = min(1.0, 4.0 / 3.0 * e)  # two-qubit depolarising: lambda = (d / (d - 1)) e, d = 4
    if readout is not None:
        p01 = tuple(float(m[0][1]) for m in readout)
        p10 = tuple(float(m[1][0]) for m in readout)
    else:
        sym = tuple(err("measure", (int(physical[q]),)) or 0.0 for q in range(n))
        p01, p10 = sym, sym
    return GateNoise(tuple(one), two, p01, p10)


def _matrix(name: str, theta: Tensor | None, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    """The gate's 2x2 matrix; ``theta`` of shape (B,) (per sample) or () (shared) gives (..., 2, 2)."""
    cdtype = _COMPLEX_OF[dtype]
    if name == "h":
        return torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=cdtype, device=device) / math.sqrt(2.0)
    assert theta is not None
    c, s = torch.cos(theta / 2).to(cdtype), torch.sin(theta / 2).to(cdtype)
    zero = torch.zeros_like(c)
    if name == "ry":
        rows = [[c, -s], [s, c]]
    elif name == "rx":
        rows = [[c, -1j * s], [-1j * s, c]]
    elif name == "rz":
        e = torch.exp(-0.5j * theta.to(cdtype))
        rows = [[e, zero], [zero, torch.conj(e)]]
    else:
        raise SpaceError(f"gate {name!r} has no gatewise kernel")
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


class GatewisePlan:
    """Exact gate-by-gate simulation of an architecture (statevector, or density matrix with ``noise``)."""

    def __init__(self, arch: Architecture, dtype: torch.dtype = torch.float32, noise: GateNoise | None = None) -> None:
        if dtype not in _COMPLEX_OF:
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if noise is not None and len(noise.one) != arch.n_qubits:
            raise ValueError(f"noise describes {len(noise.one)} qubits, {arch.canonical()} has {arch.n_qubits}")
        self.arch = arch
        self.n = arch.n_qubits
        self.dtype = dtype
        self.cdtype = _COMPLEX_OF[dtype]
        self.noise = noise
        self.gates = gate_program(arch)
        self.amplitude = arch.embedding == "amplitude"
        if self.amplitude:  # the RY tree prepares x/|x| exactly: set it (as SimulatorPlan does)
            first_w = next(i for i, g in enumerate(self.gates) if g.param is not None and g.param[0] == "w")
            self.gates = self.gates[first_w:]
        bits = (np.arange(2**self.n)[:, None] >> np.arange(self.n)[None, :]) & 1
        self._z = torch.tensor(1.0 - 2.0 * bits, dtype=dtype)  # (2**n, n)
        self._cx: dict[tuple[int, int], Tensor] = {}
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> GatewisePlan:
        """Move the plan's constants to ``device`` (in place; returns the plan)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device != self.device:
            self._z = self._z.to(device)
            self._cx = {k: v.to(device) for k, v in self._cx.items()}
            self.device = device
        return self

    def tensors(self) -> list[Tensor]:
        """Every tensor the plan holds (to check a move)."""
        return [self._z, *self._cx.values()]

    def estimate_bytes(self, batch: int) -> int:
        """Peak memory of a differentiable call: autograd keeps every gate's output state (or density matrix)."""
        amplitudes = 2**self.n * (2**self.n if self.noise is not None else 1)
        per_state = amplitudes * (torch.finfo(self.dtype).bits // 4)  # complex: two reals
        # each gate's output (a noisy gate: the channel's output and its twirled copy too) plus the gradients
        per_gate = 3 if self.noise is not None else 1
        return batch * per_state * (per_gate * len(self.gates) + 4)

    def _prepare(self, inputs: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        """Same device for inputs, weights and constants; refuse a batch that does not fit (before allocating)."""
        if weights.device != inputs.device:
            raise SpaceError(
                f"inputs are on {inputs.device} and weights on {weights.device}; move the model and its inputs to "
                "the same device (model.to(device), inputs.to(device))"
            )
        self.to(inputs.device)
        what = self.arch.canonical() + (" as a density matrix (noise)" if self.noise is not None else "")
        check_fits(what, self.n, inputs.shape[0], self.estimate_bytes(1), self.device)
        return inputs.to(self.dtype), weights.to(self.dtype)

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def _theta(gate: Gate, inputs: Tensor, weights: Tensor) -> Tensor | None:
        if gate.param is None:
            return None
        kind = gate.param[0]
        if kind == "x":
            return inputs[:, gate.param[1]]
        if kind == "w":
            return weights[gate.param[1]]
        if kind == "xx":
            return inputs[:, gate.param[1]] * inputs[:, gate.param[2]]
        raise SpaceError(f"parameter {gate.param!r} has no gatewise kernel")

    def _perm(self, control: int, target: int) -> Tensor:
        key = (control, target)
        if key not in self._cx:
            idx = np.arange(2**self.n)
            src = np.where((idx >> control) & 1, idx ^ (1 << target), idx)
            self._cx[key] = torch.as_tensor(src, dtype=torch.long, device=self.device)
        return self._cx[key]

    # ------------------------------------------------------------------ statevector
    def _apply_1q(self, psi: Tensor, u: Tensor, q: int) -> Tensor:
        """``psi`` (B, 2**n [, 2**n]) with ``u`` (2,2) or (B,2,2) on qubit q of the first state axis."""
        b = psi.shape[0]
        hi, lo = 2 ** (self.n - 1 - q), 2**q
        rest = psi.shape[2:]
        view = psi.reshape(b, hi, 2, lo, *rest)
        if u.ndim == 2:
            out = torch.einsum("ij,bhjl...->bhil...", u, view)
        else:
            out = torch.einsum("bij,bhjl...->bhil...", u, view)
        return out.reshape(psi.shape)

    def _initial(self, inputs: Tensor) -> Tensor:
        b = inputs.shape[0]
        if self.amplitude:
            x = inputs.to(self.dtype)
            pad = torch.zeros(b, 2**self.n - x.shape[1], dtype=self.dtype, device=x.device)
            amps = torch.cat([x, pad], dim=1)
            norm = amps.norm(dim=1, keepdim=True)
            amps = torch.where(
                norm > 0,
                amps / norm.clamp_min(1e-30),
                torch.nn.functional.one_hot(x.new_zeros(b, dtype=torch.long), 2**self.n).to(self.dtype),
            )
            return amps.to(self.cdtype)
        psi = torch.zeros(b, 2**self.n, dtype=self.cdtype, device=inputs.device)
        psi[:, 0] = 1.0
        return psi

    def _step(self, psi: Tensor, gate: Gate, inputs: Tensor, weights: Tensor, density: bool) -> Tensor:
        theta = self._theta(gate, inputs, weights)
        if gate.name == "cx":
            perm = self._perm(*gate.qubits)
            psi = psi[:, perm]
            return psi[:, :, perm] if density else psi
        if gate.name == "rzz":
            a, bq = gate.qubits
            sign = self._z[:, a] * self._z[:, bq]
            phase = torch.exp((-0.5j * theta.to(self.cdtype))[:, None] * sign.to(self.cdtype)[None, :])
            psi = psi * (phase[:, :, None] if density else phase)
            return psi * torch.conj(phase)[:, None, :] if density else psi
        u = _matrix(gate.name, theta, self.dtype, psi.device)
        psi = self._apply_1q(psi, u, gate.qubits[0])
        if density:  # rho -> rho U^dagger on the column index
            psi = self._apply_1q(psi.transpose(1, 2), torch.conj(u), gate.qubits[0]).transpose(1, 2)
        return psi

    # ------------------------------------------------------------------ density matrix noise
    def _depolarize(self, rho: Tensor, qubits: tuple[int, ...], lam: float) -> Tensor:
        """``(1 - lam) rho + lam (I/2^k) (x) Tr_qubits rho`` on the given qubits."""
        if lam <= 0.0:
            return rho
        b, d = rho.shape[0], 2**self.n
        twirled = rho
        for q in qubits:  # averaging over the Paulis of each qubit = replacing it by I/2 (tensor with its trace)
            hi, lo = 2 ** (self.n - 1 - q), 2**q
            view = twirled.reshape(b, hi, 2, lo, hi, 2, lo)
            traced = torch.einsum("bhilgim->bhlgm", view)  # trace qubit q
            eye = torch.eye(2, dtype=rho.dtype, device=rho.device) / 2.0
            twirled = torch.einsum("bhlgm,ij->bhilgjm", traced, eye).reshape(b, d, d)
        return (1.0 - lam) * rho + lam * twirled

    def _noisy_gate(self, rho: Tensor, gate: Gate) -> Tensor:
        noise = self.noise
        assert noise is not None
        if len(gate.qubits) == 1:
            return self._depolarize(rho, gate.qubits, noise.one_qubit(gate.name, gate.qubits[0]))
        return self._depolarize(rho, gate.qubits, noise.two_qubit(*gate.qubits))

    # ------------------------------------------------------------------ public
    def expectations(self, inputs: Tensor, weights: Tensor) -> Tensor:
        """``<Z_q>`` per sample (B, n), differentiable; noisy (channels + readout) when the plan has noise."""
        if inputs.ndim != 2:
            raise SpaceError(f"inputs must be (batch, features), got shape {tuple(inputs.shape)}")
        inputs, weights = self._prepare(inputs, weights)
        density = self.noise is not None
        psi = self._initial(inputs)
        if density:
            psi = psi[:, :, None] * torch.conj(psi)[:, None, :]
        for gate in self.gates:
            psi = self._step(psi, gate, inputs, weights, density)
            if density:
                psi = self._noisy_gate(psi, gate)
        probs = torch.diagonal(psi, dim1=1, dim2=2).real if density else psi.real**2 + psi.imag**2
        z = probs @ self._z
        if density and self.noise is not None and self.noise.p01:
            p01 = torch.tensor(self.noise.p01, dtype=self.dtype, device=z.device)
            p10 = torch.tensor(self.noise.p10, dtype=self.dtype, device=z.device)
            z = z * (1.0 - p01 - p10) + (p10 - p01)
        return z

    def state(self, inputs: Tensor, weights: Tensor) -> Tensor:
        """The final statevector (B, 2**n), complex (noiseless plans only)."""
        if self.noise is not None:
            raise SpaceError("a noisy plan has a density matrix, not a statevector")
        inputs, weights = self._prepare(inputs, weights)
        psi = self._initial(inputs)
        for gate in self.gates:
            psi = self._step(psi, gate, inputs, weights, False)
        return psi
