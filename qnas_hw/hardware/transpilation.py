"""Candidates compiled to the target device: layout, routing, basis, schedule length.

The search scores thousands of candidates but only a few hundred distinct
architectures, so each is transpiled once per (architecture, device,
optimisation level, seed) and cached in the :class:`Transpiler` object.

SWAP counting: the routing pass inserts explicit ``swap`` gates that the
basis translation later turns into three two-qubit gates each.  A pass-manager
callback watches the DAG after every pass and keeps the number of ``swap``
nodes present *before* translation (the maximum seen), which is exactly what
routing added; comparing 2q counts with the logical circuit instead would be
confounded by the basis change (e.g. CX -> ECR) and later gate cancellation.
For unconstrained targets (ideal simulators) there is no routing and swaps is 0.

Placement: with ``layout="calibrated"`` (the default) the routed circuit is
moved onto the physical qubits with the highest estimated success
probability among every placement that needs no further routing
(:mod:`qnas_hw.hardware.layout`, mapomatic's method); ``"default"`` keeps the
transpiler's own placement.  Either way the record carries the placement and
its ESP, and every consumer (runtime objective, noisy scoring, device jobs)
runs the same transpiled circuit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager

from qnas_hw.hardware.backends.base import Backend, BackendError
from qnas_hw.hardware.layout import (
    LAYOUT_METHODS,
    LayoutChoice,
    choose_layout,
    circuit_esp,
    deflate,
    has_error_data,
    place,
)
from qnas_hw.model.circuits import build_circuit
from qnas_hw.model.space import Architecture

log = logging.getLogger(__name__)

#: Non-gate instructions excluded from gate counts.
NON_GATES = frozenset({"measure", "barrier", "delay", "reset"})


@dataclass(frozen=True)
class TranspileRecord:
    """A transpiled candidate and the figures the cost model and reports read."""

    circuit: QuantumCircuit
    depth: int
    n_1q: int
    n_2q: int
    swaps: int
    duration_s: float
    logical_2q: int = 0
    physical_qubits: tuple[int, ...] = ()
    transpile_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: the noise-aware placement (None: no calibration data, e.g. an ideal simulator)
    layout: LayoutChoice | None = None
    #: estimated success probability of the circuit as placed (product of 1 - error; None without error data)
    esp: float | None = None

    @property
    def n_gates(self) -> int:
        return self.n_1q + self.n_2q

    @property
    def width(self) -> int:
        """Physical qubits the circuit actually touches (what a simulator has to hold)."""
        return len(self.physical_qubits)

    def summary(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "n_1q": self.n_1q,
            "n_2q": self.n_2q,
            "swaps": self.swaps,
            "duration_s": self.duration_s,
            "logical_2q": self.logical_2q,
            "physical_qubits": list(self.physical_qubits),
            "transpile_seconds": self.transpile_seconds,
            "esp": self.esp,
            **(self.layout.to_dict() if self.layout is not None else {}),
        }


def gate_counts(circuit: QuantumCircuit) -> tuple[int, int]:
    """(1-qubit, multi-qubit) gate counts, ignoring measurements, barriers, delays and resets."""
    n1 = n2 = 0
    for inst in circuit.data:
        if inst.operation.name in NON_GATES:
            continue
        if len(inst.qubits) == 1:
            n1 += 1
        else:
            n2 += 1
    return n1, n2


def active_qubits(circuit: QuantumCircuit) -> tuple[int, ...]:
    used = {
        circuit.find_bit(q).index
        for inst in circuit.data
        if inst.operation.name not in ("barrier", "delay")
        for q in inst.qubits
    }
    return tuple(sorted(used))


class _SwapWatcher:
    """Pass-manager callback: the most ``swap`` nodes seen in the DAG (routing output, pre-translation)."""

    def __init__(self) -> None:
        self.max_swaps = 0

    def __call__(self, **kwargs: Any) -> None:
        dag = kwargs["dag"]
        self.max_swaps = max(self.max_swaps, int(dag.count_ops(recurse=False).get("swap", 0)))


class Transpiler:
    """Transpiles architectures to one backend, caching by (architecture, device, level, seed)."""

    def __init__(
        self, backend: Backend, optimization_level: int = 1, seed: int = 0, layout: str = "calibrated"
    ) -> None:
        if optimization_level not in (0, 1, 2, 3):
            raise BackendError(f"optimization_level must be 0..3, got {optimization_level!r}")
        if layout not in LAYOUT_METHODS:
            raise BackendError(f"layout={layout!r} is not supported; use one of {', '.join(LAYOUT_METHODS)}")
        self.backend = backend
        self.layout = layout
        self.optimization_level = optimization_level
        self.seed = seed
        self.hits = 0
        self.misses = 0
        self._cache: dict[tuple[str, str, int, int], TranspileRecord] = {}
        self._pm: Any = None  # the preset pass manager, built once (a cut candidate transpiles hundreds of circuits)

    def settings_key(self) -> str:
        return f"{self.backend.name}|O{self.optimization_level}|seed{self.seed}|layout-{self.layout}"

    def transpile(self, arch: Architecture) -> TranspileRecord:
        key = (arch.key(), self.backend.name, self.optimization_level, self.seed)
        rec = self._cache.get(key)
        if rec is not None:
            self.hits += 1
            return rec
        self.misses += 1
        if arch.n_qubits > self.backend.num_qubits:
            raise BackendError(
                f"{arch.canonical()} needs {arch.n_qubits} qubits but {self.backend.name} has "
                f"{self.backend.num_qubits}; cut it first or restrict the search space's qubits"
            )
        rec = self.transpile_circuit(build_circuit(arch, measure=True))
        self._cache[key] = rec
        return rec

    def transpile_circuit(self, circuit: QuantumCircuit) -> TranspileRecord:
        """Transpile any measured circuit (uncached): used for calibration circuits too."""
        started = time.perf_counter()
        target = self.backend.target
        watcher = _SwapWatcher()
        if target is not None and self.backend.coupling_edges is not None:
            # same preset pipeline as backend.transpile (transpile(circ, backend) builds exactly this
            # pass manager from the backend's target), run here so the callback can count SWAPs
            if self._pm is None:
                self._pm = generate_preset_pass_manager(
                    optimization_level=self.optimization_level, target=target, seed_transpiler=self.seed
                )
            tqc = self._pm.run(circuit, callback=watcher)
        else:
            tqc = self.backend.transpile(circuit, self.optimization_level, self.seed)
        choice, esp = None, None
        if has_error_data(target) and self.backend.coupling_edges is not None:
            tqc, choice, esp = self._place(tqc, target)
        elapsed = time.perf_counter() - started
        n1, n2 = gate_counts(tqc)
        _, logical_2q = gate_counts(circuit)
        return TranspileRecord(
            circuit=tqc,
            depth=int(tqc.depth()),
            n_1q=n1,
            n_2q=n2,
            swaps=watcher.max_swaps,
            duration_s=float(self.backend.scheduled_duration(tqc)),
            logical_2q=logical_2q,
            physical_qubits=active_qubits(tqc),
            transpile_seconds=elapsed,
            layout=choice,
            esp=esp,
        )

    def _place(self, tqc: QuantumCircuit, target: Any) -> tuple[QuantumCircuit, LayoutChoice | None, float]:
        """Move the routed circuit to its highest-ESP placement (``calibrated``) or keep it (``default``)."""
        if self.layout == "default":
            return tqc, None, circuit_esp(tqc, target)
        small, active = deflate(tqc)
        choice = choose_layout(small, active, target, self.backend.coupling_edges or [])
        if tuple(choice.physical_qubits) != tuple(active):
            tqc = place(small, choice.physical_qubits, tqc.num_qubits)
        return tqc, choice, choice.esp
