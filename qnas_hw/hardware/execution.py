"""What a candidate runs on its target, and how its ``<Z_q>`` come back: one definition for every consumer.

The runtime objective prices it, ``accuracy = "noisy"`` simulates it under
the target's noise, ``accuracy = "device"`` and ``qnas-hw hw-eval`` submit
it.  Because all of them start from the same :class:`CandidateProgram`, the
circuits, placements and shots that are costed are the ones that run.

* An **uncut** candidate is one transpiled, noise-aware-placed circuit
  (:class:`~qnas_hw.hardware.transpilation.Transpiler`); the validation samples are the
  rows of one parameter array.
* A **cut** candidate (wider than the qubit budget) is its plan's
  subexperiments (:meth:`~qnas_hw.hardware.cutting.CutPlanner.execution`), each
  transpiled and placed on its own, each with the shots its QPD term is
  allotted (:func:`~qnas_hw.hardware.cutting.allot_shots`); ``<Z_q>`` are rebuilt
  per sample by the addon's ``reconstruct_expectation_values``.

Readout mitigation (:class:`ReadoutMitigator`) uses mthree: each physical
qubit's assignment matrix is *measured* (two calibration circuits, all
qubits in 0 and all in 1, run exactly like the candidate's circuits: on the
noisy simulator, or as ledger jobs on the device) and mthree turns counts
into quasi-probabilities, from which ``<Z_q>`` (uncut) or the cut
reconstruction (cut) are computed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager

from qnas_hw.hardware.backends.base import Backend
from qnas_hw.hardware.cutting import SHOT_POLICIES, CutExecution, CutPlanner, CuttingError
from qnas_hw.hardware.transpilation import Transpiler, TranspileRecord
from qnas_hw.locking import ThreadLockPickling
from qnas_hw.model.circuits import INPUT_NAME, WEIGHT_NAME
from qnas_hw.model.space import Architecture

log = logging.getLogger(__name__)

#: Shots per readout-calibration circuit (two circuits per qubit set): standard error of each flip rate ~0.3%.
CAL_SHOTS = 8192


# ------------------------------------------------------------------ programs
@dataclass(frozen=True)
class CircuitRun:
    """One circuit a candidate runs: transpiled and placed for the device, with its shots per input row."""

    label: str
    circuit: QuantumCircuit
    shots: int
    measured_qubits: tuple[int | None, ...]  # physical qubit measured into each clbit (None: never written, reads 0)
    record: TranspileRecord

    @property
    def esp(self) -> float | None:
        return self.record.esp


def measured_qubits(circuit: QuantumCircuit) -> tuple[int | None, ...]:
    """Physical qubit behind every classical bit (the last measurement into it), in clbit order.

    A cutting subexperiment leaves the ``qpd_measurements`` bits of the QPD
    terms that measure nothing unwritten: those read 0 on every shot (None here).
    """
    out: dict[int, int] = {}
    for inst in circuit.data:
        if inst.operation.name == "measure":
            out[circuit.find_bit(inst.clbits[0]).index] = circuit.find_bit(inst.qubits[0]).index
    return tuple(out.get(c) for c in range(circuit.num_clbits))


def circuit_values(circuit: QuantumCircuit, inputs: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """``(rows, circuit.num_parameters)`` values in ``circuit.parameters`` order from per-row inputs and weights.

    ``weights`` is one vector shared by every row (a model's), or ``(rows, n_weights)`` with each row's own (the
    random replicas of a training-free screen).
    """
    if circuit.num_parameters == 0:
        return None
    x = np.asarray(inputs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = np.broadcast_to(w.reshape(-1), (x.shape[0], w.size)) if w.ndim < 2 else w
    cols = []
    for p in circuit.parameters:
        if p.vector.name == INPUT_NAME:
            cols.append(x[:, p.index])
        elif p.vector.name == WEIGHT_NAME:
            cols.append(w[:, p.index])
        else:  # pragma: no cover - circuits are built by qnas_hw.model.circuits only
            raise CuttingError(f"unknown parameter {p} in {circuit.name!r}")
    return np.stack(cols, axis=-1)


@dataclass
class CandidateProgram:
    """Everything that runs for one candidate on one backend (see the module docstring)."""

    arch: Architecture
    runs: list[CircuitRun]
    cut: CutExecution | None = None

    @property
    def shots_per_row(self) -> int:
        return sum(r.shots for r in self.runs)

    @property
    def circuits_per_row(self) -> int:
        return len(self.runs)

    def parameter_values(self, inputs: np.ndarray, weights: np.ndarray) -> list[np.ndarray | None]:
        """One value array per run; ``inputs`` are the circuit's ``x`` values per row (``circuit_inputs``)."""
        return [circuit_values(r.circuit, inputs, weights) for r in self.runs]

    def expectations(
        self,
        counts: Sequence[Sequence[dict[str, int]]],
        inputs: np.ndarray,
        mitigator: ReadoutMitigator | None = None,
    ) -> np.ndarray:
        """``(rows, n_qubits)`` ``<Z_q>`` from counts per run per row (qiskit keys, highest clbit first)."""
        if len(counts) != len(self.runs):
            raise ValueError(f"{len(counts)} result sets for {len(self.runs)} circuits of {self.arch.canonical()}")
        dists = [
            mitigator.quasi(rows, run.measured_qubits) if mitigator is not None else probabilities(rows)
            for run, rows in zip(self.runs, counts, strict=True)
        ]
        if self.cut is None:
            return z_from_distributions(dists[0], self.arch.n_qubits)
        by_label: dict[Hashable, list[list[dict[int, float]]]] = {label: [] for label in self.cut.experiments}
        for run, rows in zip(self.runs, dists, strict=True):
            by_label[_label_of(run.label, self.cut)].append(rows)
        return self.cut.reconstruct(by_label, self.cut.coefficients(inputs))

    def details(self) -> dict[str, Any]:
        """Figures the study stores with the candidate: placement, success probability, circuits and shots.

        ``layout`` is every physical qubit the candidate's circuits touch.  A
        cut candidate's subcircuits are placed one by one, often on the same
        best qubits, so that union can be narrower than the candidate
        (``[24, 25]`` for five qubits cut into 2-qubit pieces);
        ``subcircuit_layouts`` keeps each subcircuit's own qubits, in the cut
        plan's label order, for the report's layout column.
        """
        esps = [r.esp for r in self.runs if r.esp is not None]
        first = self.runs[0].record
        out: dict[str, Any] = {
            "circuits_per_row": self.circuits_per_row,
            "shots_per_row": self.shots_per_row,
            "esp": min(esps) if esps else None,
            "layout": list(first.layout.physical_qubits) if first.layout is not None else list(first.physical_qubits),
        }
        if self.cut is None and first.layout is not None:
            out["default_layout"] = list(first.layout.default_physical_qubits)
            out["default_esp"] = first.layout.default_esp
        if self.cut is not None:
            out["cut_experiments"] = self.cut.n_experiments
            out["layout"] = sorted({q for r in self.runs for q in r.record.physical_qubits})
            out["subcircuit_layouts"] = self.subcircuit_layouts()
        return out

    def subcircuit_layouts(self) -> list[list[int]]:
        """Per subcircuit of the cut plan (label order), the sorted physical qubits its subexperiments run on.

        Each subexperiment is transpiled and placed on its own; the ones of one
        subcircuit normally share a placement, and where they do not the union
        is what that subcircuit occupies.  Empty for an uncut program.
        """
        if self.cut is None:
            return []
        qubits: dict[Hashable, set[int]] = {label: set() for label in self.cut.labels}
        for run in self.runs:
            qubits[_label_of(run.label, self.cut)].update(run.record.physical_qubits)
        return [sorted(qubits[label]) for label in self.cut.labels]


def _label_of(run_label: str, cut: CutExecution) -> Hashable:
    name = run_label.rsplit(":", 1)[0]
    for label in cut.experiments:
        if str(label) == name:
            return label
    raise ValueError(f"run {run_label!r} belongs to no subcircuit of the cut plan")


def probabilities(rows: Sequence[dict[str, int]]) -> list[dict[int, float]]:
    """Counts (bit-string keys) to outcome-integer probabilities, per row."""
    out = []
    for r, counts in enumerate(rows):
        total = sum(counts.values())
        if total <= 0:
            raise ValueError(f"row {r} has no shots in its counts")
        dist: dict[int, float] = {}
        for key, n in counts.items():
            k = int(key.replace(" ", ""), 2)
            dist[k] = dist.get(k, 0.0) + n / total
        out.append(dist)
    return out


def z_from_distributions(dists: Sequence[dict[int, float]], n_qubits: int) -> np.ndarray:
    """``<Z_q>`` per row: sum over outcomes of p(outcome) * (+1 if bit q is 0 else -1); clbit q = qubit q."""
    out = np.zeros((len(dists), n_qubits))
    for r, dist in enumerate(dists):
        outcomes = np.fromiter(dist.keys(), dtype=np.int64, count=len(dist))
        probs = np.fromiter(dist.values(), dtype=np.float64, count=len(dist))
        bits = (outcomes[:, None] >> np.arange(n_qubits)[None, :]) & 1
        out[r] = probs @ (1.0 - 2.0 * bits)
    return out


class ProgramBuilder(ThreadLockPickling):
    """Builds (and caches per architecture) each candidate's :class:`CandidateProgram` for one backend."""

    def __init__(
        self,
        backend: Backend,
        transpiler: Transpiler,
        planner: CutPlanner | None,
        shots: int,
        cut_shots: str = "scaled",
        max_cut_experiments: int | None = None,
    ) -> None:
        if shots < 1:
            raise ValueError(f"shots={shots} must be >= 1")
        if cut_shots not in SHOT_POLICIES:
            raise ValueError(f"cut_shots={cut_shots!r} is not supported; use one of {', '.join(SHOT_POLICIES)}")
        self.backend = backend
        self.transpiler = transpiler
        self.planner = planner
        self.shots = int(shots)
        self.cut_shots = cut_shots
        self.max_cut_experiments = max_cut_experiments
        self._cache: dict[str, CandidateProgram] = {}
        self._lock = threading.Lock()

    def settings_key(self) -> str:
        plan = "nocut" if self.planner is None else self.planner.settings_key()
        return (
            f"{self.transpiler.settings_key()}|{plan}|shots{self.shots}|cut-{self.cut_shots}"
            f"|maxexp{self.max_cut_experiments}"
        )

    def unrunnable(self, arch: Architecture) -> str | None:
        """Why ``arch`` is not run (an infeasible or oversized cut plan), or None when it is.

        Such a candidate is already excluded by the cut constraints, or would
        take thousands of subexperiment circuits per sample to score; it is
        stored without an accuracy (left off every front) instead of failing.
        """
        plan = self.planner.plan(arch) if self.planner is not None else None
        if plan is None or not plan.is_cut:
            return None
        if not plan.feasible:
            return f"cut plan infeasible: {plan.reason}"
        if plan.n_cuts > 0 and not self.backend.supports_mid_circuit_measurement:
            return (
                f"its cut plan's QPD terms measure qubits mid-circuit, which {self.backend.name} cannot run "
                "(final measurements only)"
            )
        if self.max_cut_experiments is not None and plan.n_subexperiments > self.max_cut_experiments:
            return (
                f"cut plan needs {plan.n_subexperiments} subexperiment circuits per sample, more than "
                f"search.cut_max_experiments={self.max_cut_experiments}"
            )
        return None

    def build(self, arch: Architecture) -> CandidateProgram:
        with self._lock:
            cached = self._cache.get(arch.key())
        if cached is not None:
            return cached
        plan = self.planner.plan(arch) if self.planner is not None else None
        if plan is not None and plan.is_cut:
            program = self._cut(arch)
        else:
            rec = self.transpiler.transpile(arch)
            run = CircuitRun("main", rec.circuit, self.shots, measured_qubits(rec.circuit), rec)
            program = CandidateProgram(arch, [run])
        with self._lock:
            self._cache[arch.key()] = program
        return program

    def _cut(self, arch: Architecture) -> CandidateProgram:
        assert self.planner is not None
        plan = self.planner.plan(arch)
        if self.cut_shots == "fixed" and self.shots < plan.min_fixed_shots():
            raise CuttingError(
                f"{arch.canonical()}: shots={self.shots} are too few for its cut plan (sampling overhead "
                f"{plan.sampling_overhead:g}); with cut_shots='fixed' every QPD term needs a shot, so use shots >= "
                f"{plan.min_fixed_shots()} or cut_shots='scaled'"
            )
        cut = self.planner.execution(arch)
        runs = []
        for label in cut.labels:
            for k, experiment in enumerate(cut.experiments[label]):
                rec = self.transpiler.transpile_circuit(experiment)
                shots = cut.shots(label, k, self.shots, self.cut_shots)
                runs.append(CircuitRun(f"{label}:{k}", rec.circuit, shots, measured_qubits(rec.circuit), rec))
        return CandidateProgram(arch, runs, cut)


# ------------------------------------------------------------------ readout mitigation
def calibration_circuits(backend: Backend, qubits: Sequence[int]) -> list[QuantumCircuit]:
    """Two circuits on the device's ``qubits``: all prepared in 0, all in 1, each measured into clbit i."""
    qubits = tuple(sorted(int(q) for q in qubits))
    out = []
    for flip in (False, True):
        qc = QuantumCircuit(
            backend.num_qubits, len(qubits), name=f"readout-cal-{int(flip)}-{'-'.join(map(str, qubits))}"
        )
        for i, q in enumerate(qubits):
            if flip:
                qc.x(q)
            qc.measure(q, i)
        target = backend.target
        if target is not None:
            pm = generate_preset_pass_manager(
                optimization_level=0, target=target, initial_layout=list(range(backend.num_qubits))
            )
            qc = pm.run(qc)
        out.append(qc)
    return out


def assignment_matrices(
    counts0: dict[str, int], counts1: dict[str, int], qubits: Sequence[int]
) -> dict[int, np.ndarray]:
    """Per physical qubit, mthree's 2x2 assignment matrix (columns: prepared 0 / 1; rows: measured 0 / 1)."""
    out = {}
    p0, p1 = probabilities([counts0])[0], probabilities([counts1])[0]
    for i, q in enumerate(sorted(int(x) for x in qubits)):
        flip0 = sum(p for k, p in p0.items() if (k >> i) & 1)  # measured 1 after preparing 0
        flip1 = sum(p for k, p in p1.items() if not (k >> i) & 1)  # measured 0 after preparing 1
        out[q] = np.array([[1.0 - flip0, flip1], [flip0, 1.0 - flip1]])
    return out


@dataclass
class ReadoutMitigator:
    """Measured assignment matrices per physical qubit, applied with mthree (quasi-probabilities out)."""

    matrices: dict[int, np.ndarray] = field(default_factory=dict)

    def covers(self, qubits: Sequence[int | None]) -> bool:
        return all(int(q) in self.matrices for q in qubits if q is not None)

    def add(self, matrices: dict[int, np.ndarray]) -> None:
        self.matrices.update(matrices)

    def quasi(self, rows: Sequence[dict[str, int]], qubits: Sequence[int | None]) -> list[dict[int, float]]:
        """mthree's corrected quasi-distribution per row (outcome integers over all ``len(qubits)`` clbits).

        ``qubits[i]`` is the physical qubit measured into clbit ``i``; bits no
        measurement writes (None) are always 0 and carry no readout error,
        so mthree corrects the written bits only and they are put back as 0.
        """
        import mthree

        written = [i for i, q in enumerate(qubits) if q is not None]
        if not self.covers(qubits):
            missing = sorted({int(q) for q in qubits if q is not None} - set(self.matrices))
            raise ValueError(f"no readout calibration for physical qubits {missing}")
        if not written:
            return probabilities(rows)
        n = len(qubits)
        marginal = []
        for row in rows:
            m: dict[str, int] = {}
            for key, count in row.items():
                bits = key.replace(" ", "").zfill(n)
                sub_key = "".join(bits[n - 1 - i] for i in reversed(written))
                m[sub_key] = m.get(sub_key, 0) + int(count)
            marginal.append(m)
        size = max(self.matrices) + 1
        mit = mthree.M3Mitigation()
        mit.cals_from_matrices([self.matrices.get(q) for q in range(size)])
        quasi = mit.apply_correction(marginal, [int(qubits[i]) for i in written])
        dists = [quasi] if isinstance(quasi, dict) else list(quasi)
        out = []
        for d in dists:
            full: dict[int, float] = {}
            for key, value in d.items():
                sub_bits = key.replace(" ", "")
                k = 0
                for pos, i in enumerate(reversed(written)):  # sub_key's leftmost char is the highest written bit
                    if sub_bits[pos] == "1":
                        k |= 1 << i
                full[k] = full.get(k, 0.0) + float(value)
            out.append(full)
        return out


def program_key(program: CandidateProgram) -> str:
    """Content hash of what a program runs (circuits and shots): part of cache and job keys."""
    h = hashlib.sha256(program.arch.canonical().encode())
    for run in program.runs:
        h.update(f"|{run.label}|{run.shots}|{run.circuit.num_qubits}|{run.circuit.size()}".encode())
    return h.hexdigest()[:16]


__all__ = [
    "CAL_SHOTS",
    "CandidateProgram",
    "CircuitRun",
    "ProgramBuilder",
    "ReadoutMitigator",
    "assignment_matrices",
    "calibration_circuits",
    "circuit_values",
    "measured_qubits",
    "probabilities",
    "program_key",
    "z_from_distributions",
]
