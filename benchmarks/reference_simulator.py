"""A naive reference simulator for benchmarks/simulator.py: one ``torch.einsum`` per gate, plain autograd.

This is deliberately the textbook way to simulate :func:`qnas_hw.model.circuits.gate_program`
in torch, as a yardstick for the fused :class:`qnas_hw.model.simulator.SimulatorPlan`:
the state is a complex ``(B, 2, ..., 2)`` tensor, every single-qubit gate is an
einsum with its ``(2, 2)`` (or per-sample ``(B, 2, 2)``) matrix on that qubit's
axis, every two-qubit gate an einsum with its ``(2, 2, 2, 2)`` tensor, and
autograd keeps every intermediate state for the backward.  No fusion, no
in-place work, no hand-written backward.  Not used by the package.

Little-endian like qiskit: qubit ``q`` is bit ``q`` of the basis index, i.e.
axis ``n - q`` of the ``(B, 2, ..., 2)`` view.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from qnas_hw.model.circuits import Gate, gate_program
from qnas_hw.model.space import Architecture

_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _one_qubit(name: str, theta: Tensor | None, cdtype: torch.dtype, device: torch.device) -> Tensor:
    """(2, 2) or (B, 2, 2) matrix of a single-qubit gate."""
    if name == "h":
        return torch.tensor([[1, 1], [1, -1]], dtype=cdtype, device=device) / math.sqrt(2.0)
    assert theta is not None
    c, s = torch.cos(theta / 2).to(cdtype), torch.sin(theta / 2).to(cdtype)
    zero = torch.zeros_like(c)
    if name == "ry":
        rows = [[c, -s], [s, c]]
    elif name == "rx":
        rows = [[c, -1j * s], [-1j * s, c]]
    elif name == "rz":
        e = torch.exp(-0.5j * theta.to(cdtype))
        rows = [[e, zero], [zero, e.conj()]]
    else:
        raise ValueError(f"reference simulator has no gate {name!r}")
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def _two_qubit(gate: Gate, theta: Tensor | None, cdtype: torch.dtype, device: torch.device) -> Tensor:
    """(2, 2, 2, 2) (or per sample (B, 2, 2, 2, 2)) tensor [out_a, out_b, in_a, in_b] of a CNOT or an RZZ."""
    if gate.name == "cx":  # a = control, b = target
        m = torch.zeros(2, 2, 2, 2, dtype=cdtype, device=device)
        for a in range(2):
            for b in range(2):
                m[a, b ^ a, a, b] = 1
        return m
    if gate.name == "rzz":
        assert theta is not None
        sign = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], device=device)  # z_a * z_b
        phase = torch.exp(-0.5j * theta.to(cdtype)[:, None, None] * sign.to(cdtype))  # (B, 2, 2)
        eye = torch.eye(4, dtype=cdtype, device=device).view(2, 2, 2, 2)
        return phase[:, :, :, None, None] * eye
    raise ValueError(f"reference simulator has no gate {gate.name!r}")


class ReferenceSimulator:
    """<Z> per qubit of an architecture, gate by gate (angle, 4x4 and IQP embeddings; not amplitude)."""

    def __init__(self, arch: Architecture, dtype: torch.dtype = torch.float32) -> None:
        if arch.embedding == "amplitude":
            raise ValueError("the reference simulator has no amplitude embedding")
        self.n = arch.n_qubits
        self.dtype = dtype
        self.cdtype = _COMPLEX_OF[dtype]
        self.gates = gate_program(arch)

    def estimate_bytes(self, batch: int) -> int:
        """Autograd keeps every gate's output state; the backward holds about three more."""
        state = batch * 2**self.n * (torch.finfo(self.dtype).bits // 4)
        return state * (len(self.gates) + 4)

    def _theta(self, gate: Gate, x: Tensor, w: Tensor) -> Tensor | None:
        if gate.param is None:
            return None
        kind = gate.param[0]
        if kind == "x":
            return x[:, gate.param[1]]
        if kind == "w":
            return w[gate.param[1]]
        if kind == "xx":
            return x[:, gate.param[1]] * x[:, gate.param[2]]
        raise ValueError(f"reference simulator has no parameter {gate.param!r}")

    def expectations(self, x: Tensor, w: Tensor) -> Tensor:
        n, batch, device = self.n, x.shape[0], x.device
        x, w = x.to(self.dtype), w.to(self.dtype)
        psi = torch.zeros(batch, 2**n, dtype=self.cdtype, device=device)
        psi[:, 0] = 1
        psi = psi.view(batch, *([2] * n))
        for gate in self.gates:
            theta = self._theta(gate, x, w)
            if len(gate.qubits) == 1:
                axis = n - gate.qubits[0]
                u = _one_qubit(gate.name, theta, self.cdtype, device)
                moved = psi.movedim(axis, -1)
                out = torch.einsum("b...j,bij->b...i" if u.ndim == 3 else "b...j,ij->b...i", moved, u)
                psi = out.movedim(-1, axis)
            else:
                axes = [n - q for q in gate.qubits]
                m = _two_qubit(gate, theta, self.cdtype, device)
                moved = psi.movedim(axes, [-2, -1])
                eq = "b...kl,bijkl->b...ij" if m.ndim == 5 else "b...kl,ijkl->b...ij"
                psi = torch.einsum(eq, moved, m).movedim([-2, -1], axes)
        probs = (psi.real**2 + psi.imag**2).reshape(batch, 2**n)
        bits = (torch.arange(2**n, device=device)[:, None] >> torch.arange(n, device=device)) & 1
        return probs @ (1.0 - 2.0 * bits).to(self.dtype)
