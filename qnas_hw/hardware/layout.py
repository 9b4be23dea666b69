"""Noise-aware qubit mapping: run each candidate on the device's best physical qubits, from its calibration data.

The transpiler's own layout stage (VF2Layout/Sabre) finds *a* placement that
routes well; on a real device some qubits and couplers are many times worse
than others, and the accuracy a candidate shows under noise depends on where
it lands.  This module follows mapomatic's recipe (Nation & Treinish, PRX
Quantum 4, 010327): transpile once, *deflate* the routed circuit to the
physical qubits it touches, enumerate every placement of that small circuit
on the coupling graph that needs no further routing
(:func:`mapomatic.matching_layouts`, a VF2 subgraph isomorphism), score each
placement by its **estimated success probability** (ESP: the product of
``1 - error`` over every gate and measurement, read from the backend's
``Target``), and re-transpile onto the best one.

The score is computed here from the ``Target`` (mapomatic's own scorer reads
the deprecated ``BackendProperties``), vectorised over all placements so a
127-qubit device's tens of thousands of placements cost milliseconds; the
tests check it against ``mapomatic.evaluate_layouts`` on a fake backend.

Determinism: VF2 enumerates placements in a fixed order; ties in ESP keep
the transpiler's own placement when it is among the best, else the first in
enumeration order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.transpiler import CouplingMap, Target

log = logging.getLogger(__name__)

#: Instructions without an error figure (barriers, delays, virtual RZ gates with error 0) count as perfect.
_NO_ERROR = frozenset({"barrier", "delay"})
#: Placements scored at most per circuit (VF2 stops after this many); a 127-qubit device has ~1e4-1e5.
MAX_LAYOUTS = 50_000
#: VF2 state budget (mapomatic's own default is 3e7, minutes on a heavy-hex 127-qubit graph).
VF2_CALL_LIMIT = 2_000_000
LAYOUT_METHODS: tuple[str, ...] = ("calibrated", "default")


@dataclass(frozen=True)
class LayoutChoice:
    """Where a candidate runs: physical qubit of each deflated (active) qubit, and what that buys.

    ``esp`` is the estimated success probability of the chosen placement and
    ``default_esp`` that of the transpiler's own placement of the same
    routed circuit; ``candidates`` is how many placements were scored.
    """

    physical_qubits: tuple[int, ...]
    esp: float
    default_physical_qubits: tuple[int, ...]
    default_esp: float
    candidates: int
    method: str

    def to_dict(self) -> dict[str, object]:
        return {
            "layout": list(self.physical_qubits),
            "esp": self.esp,
            "default_layout": list(self.default_physical_qubits),
            "default_esp": self.default_esp,
            "layouts_scored": self.candidates,
            "layout_method": self.method,
        }


def has_error_data(target: Target | None) -> bool:
    """True when the target reports an error for at least one instruction (snapshots and devices do).

    Placement by success probability and noisy scoring both need such data;
    an ideal simulator's target has none.
    """
    if target is None:
        return False
    for name in target.operation_names:
        for props in (target[name] or {}).values():
            if props is not None and getattr(props, "error", None):
                return True
    return False


def active_physical_qubits(circuit: QuantumCircuit) -> list[int]:
    """Indices of the qubits any non-barrier, non-delay instruction touches, ascending."""
    used = {
        circuit.find_bit(q).index for inst in circuit.data if inst.operation.name not in _NO_ERROR for q in inst.qubits
    }
    return sorted(used)


def deflate(circuit: QuantumCircuit) -> tuple[QuantumCircuit, list[int]]:
    """The circuit on its active qubits only (renumbered 0..k-1, classical registers kept), and those qubits.

    Delays on active qubits are kept (the qubit relaxes while it waits); a
    qubit with nothing but delays is not active and is dropped.

    Unlike ``mapomatic.deflate_circuit`` this keeps every classical register
    by name and size, so the counts of a cutting subexperiment (two
    registers) can still be split by register afterwards.
    """
    active = active_physical_qubits(circuit)
    index = {q: k for k, q in enumerate(active)}
    qreg = QuantumRegister(len(active), "q")
    out = QuantumCircuit(qreg, *[ClassicalRegister(c.size, c.name) for c in circuit.cregs], name=circuit.name)
    clbits = {circuit.find_bit(c).index: out.clbits[i] for i, c in enumerate(circuit.clbits)}
    for inst in circuit.data:
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        if inst.operation.name in _NO_ERROR:
            kept = [q for q in qubits if q in index]
            if inst.operation.name == "barrier" and kept:  # keep the barrier on the active qubits it spans
                out.barrier(*[qreg[index[q]] for q in kept])
            elif kept:  # a delay on an active qubit is idling the noisy simulators relax (an idle wire is dropped)
                out.append(inst.operation, [qreg[index[q]] for q in kept])
            continue
        out.append(
            inst.operation,
            [qreg[index[q]] for q in qubits],
            [clbits[circuit.find_bit(c).index] for c in inst.clbits],
        )
    out.global_phase = circuit.global_phase
    out.metadata = dict(circuit.metadata or {})
    return out, active


def _log_fidelity(target: Target, name: str, qubits: tuple[int, ...]) -> float:
    """log(1 - error) of one instruction on physical qubits; 0 where the target gives no error."""
    props = target[name].get(qubits) if name in target.operation_names else None
    error = getattr(props, "error", None)
    if error is None or not math.isfinite(error):
        return 0.0
    return math.log(max(1.0 - float(error), 1e-300))


def layout_scores(small: QuantumCircuit, layouts: np.ndarray, target: Target) -> np.ndarray:
    """ESP of ``small`` (a deflated circuit) placed on each row of ``layouts`` (n_layouts, k).

    Vectorised: every (instruction name, deflated qubits) pair becomes one
    lookup table over physical qubits, indexed by the layout columns.
    """
    n_phys = target.num_qubits
    log_esp = np.zeros(len(layouts))
    counts: dict[tuple[str, tuple[int, ...]], int] = {}
    for inst in small.data:
        name = inst.operation.name
        if name in _NO_ERROR:
            continue
        qs = tuple(small.find_bit(q).index for q in inst.qubits)
        counts[(name, qs)] = counts.get((name, qs), 0) + 1
    tables: dict[tuple[str, int], np.ndarray] = {}
    for (name, qs), count in counts.items():
        if len(qs) == 1:
            key = (name, 1)
            if key not in tables:
                tables[key] = np.array([_log_fidelity(target, name, (p,)) for p in range(n_phys)])
            log_esp += count * tables[key][layouts[:, qs[0]]]
        elif len(qs) == 2:
            key = (name, 2)
            if key not in tables:
                table = np.zeros((n_phys, n_phys))
                for pair in target[name] if name in target.operation_names else ():
                    if pair is not None and len(pair) == 2:
                        table[pair] = _log_fidelity(target, name, pair)
                tables[key] = table
            log_esp += count * tables[key][layouts[:, qs[0]], layouts[:, qs[1]]]
        else:  # wider instructions do not survive transpilation to a device basis
            continue
    return np.exp(log_esp)


def circuit_esp(circuit: QuantumCircuit, target: Target) -> float:
    """ESP of a circuit already on physical qubits (the transpiler's placement)."""
    small, active = deflate(circuit)
    return float(layout_scores(small, np.array([active]), target)[0])


def choose_layout(
    small: QuantumCircuit,
    default: Sequence[int],
    target: Target,
    coupling_edges: Sequence[tuple[int, int]],
) -> LayoutChoice:
    """The highest-ESP placement of the deflated circuit ``small`` among all that need no routing."""
    from mapomatic import matching_layouts

    default = tuple(int(q) for q in default)
    cmap = CouplingMap(list(coupling_edges))
    found = matching_layouts(small, cmap, strict_direction=True, call_limit=VF2_CALL_LIMIT)[:MAX_LAYOUTS]
    rows = [tuple(int(q) for q in lay) for lay in found]
    if default not in rows:
        rows.append(default)  # the transpiler's own placement always competes
    layouts = np.array(rows, dtype=np.int64)
    scores = layout_scores(small, layouts, target)
    default_esp = float(scores[rows.index(default)])
    best = float(scores.max())
    # ties (within float noise) keep the transpiler's placement, else the first found
    pick = default if default_esp >= best * (1 - 1e-12) else rows[int(np.argmax(scores))]
    return LayoutChoice(
        physical_qubits=pick,
        esp=float(scores[rows.index(pick)]),
        default_physical_qubits=default,
        default_esp=default_esp,
        candidates=len(rows),
        method="calibrated",
    )


def place(small: QuantumCircuit, physical: Sequence[int], num_qubits: int) -> QuantumCircuit:
    """Inflate a deflated circuit back onto ``num_qubits`` device qubits at ``physical`` (no re-routing).

    The placement comes from a directed subgraph match, so every two-qubit
    gate already lies on a coupling in its native direction: no pass needs
    to run and the gate counts stay exactly those of the routed circuit.
    """
    qreg = QuantumRegister(num_qubits, "q")
    out = QuantumCircuit(qreg, *[ClassicalRegister(c.size, c.name) for c in small.cregs], name=small.name)
    clbits = {small.find_bit(c).index: out.clbits[i] for i, c in enumerate(small.clbits)}
    for inst in small.data:
        out.append(
            inst.operation,
            [qreg[int(physical[small.find_bit(q).index])] for q in inst.qubits],
            [clbits[small.find_bit(c).index] for c in inst.clbits],
        )
    out.global_phase = small.global_phase
    out.metadata = dict(small.metadata or {})
    return out
