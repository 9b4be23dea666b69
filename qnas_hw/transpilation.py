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
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager

from qnas_hw.backends.base import Backend, BackendError
from qnas_hw.circuits import build_circuit
from qnas_hw.space import Architecture

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

    def __init__(self, backend: Backend, optimization_level: int = 1, seed: int = 0) -> None:
        if optimization_level not in (0, 1, 2, 3):
            raise BackendError(f"optimization_level must be 0..3, got {optimization_level!r}")
        self.backend = backend
        self.optimization_level = optimization_level
        self.seed = seed
        self.hits = 0
        self.misses = 0
        self._cache: dict[tuple[str, str, int, int], TranspileRecord] = {}

    def settings_key(self) -> str:
        return f"{self.backend.name}|O{self.optimization_level}|seed{self.seed}"

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
            pm = generate_preset_pass_manager(
                optimization_level=self.optimization_level, target=target, seed_transpiler=self.seed
            )
            tqc = pm.run(circuit, callback=watcher)
        else:
            tqc = self.backend.transpile(circuit, self.optimization_level, self.seed)
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
        )
