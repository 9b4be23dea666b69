"""Amazon Braket targets: local simulators, offline device snapshots, real QPUs by ARN.

Circuits are translated gate by gate from the transpiled qiskit circuit to a
Braket ``Circuit`` whose parameterised gate arguments are ``FreeParameter``s,
and a whole parameter array is sent as one *program set* (one task per PUB,
not one task per sample): this keeps the per-task fee of real QPUs to one
per PUB.  Only the physical qubits a circuit touches are kept (renumbered
0..k-1), so a candidate transpiled onto a 20-qubit layout still simulates as
an 8-qubit density matrix.

Snapshots (``calibration/devices/<device>.json``) let the search target a
Braket QPU offline: qubit count, coupling, native gates, typical durations and
errors become a qiskit ``Target`` (transpilation, scheduled duration) and a
depolarising + readout noise model for the local density-matrix simulator.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Parameter
from qiskit.circuit.library import (
    CXGate,
    CZGate,
    HGate,
    Measure,
    RGate,
    RXGate,
    RYGate,
    RZGate,
    RZZGate,
    SXGate,
    XGate,
    iSwapGate,
)
from qiskit.transpiler import InstructionProperties, Target

from qnas_hw.hardware.backends.base import (
    Backend,
    BackendError,
    JobHandle,
    JobState,
    JobTiming,
    Pricing,
    SamplerPub,
    find_calibration_file,
    snapshot_names,
    unreachable_reason,
    user_calibration_dir,
)
from qnas_hw.hardware.backends.primitives import target_duration
from qnas_hw.locking import ThreadLockPickling

log = logging.getLogger(__name__)

SNAPSHOT_SCHEMA = 1

#: qiskit op name -> (Braket Circuit method, number of angle arguments)
GATE_MAP: dict[str, tuple[str, int]] = {
    "id": ("i", 0),
    "h": ("h", 0),
    "x": ("x", 0),
    "y": ("y", 0),
    "z": ("z", 0),
    "s": ("s", 0),
    "sdg": ("si", 0),
    "t": ("t", 0),
    "tdg": ("ti", 0),
    "sx": ("v", 0),
    "sxdg": ("vi", 0),
    "rx": ("rx", 1),
    "ry": ("ry", 1),
    "rz": ("rz", 1),
    "p": ("phaseshift", 1),
    "r": ("prx", 2),
    "cx": ("cnot", 0),
    "cy": ("cy", 0),
    "cz": ("cz", 0),
    "swap": ("swap", 0),
    "iswap": ("iswap", 0),
    "rzz": ("zz", 1),
    "rxx": ("xx", 1),
    "ryy": ("yy", 1),
    "ccx": ("ccnot", 0),
}
#: what a circuit is rewritten to when it holds a gate GATE_MAP lacks (e.g. ECR, U)
SAFE_BASIS = ["rx", "ry", "rz", "h", "x", "sx", "cx", "cz", "rzz", "r", "iswap", "swap"]

_QISKIT_GATES = {
    "r": RGate(Parameter("theta"), Parameter("phi")),
    "rx": RXGate(Parameter("theta")),
    "ry": RYGate(Parameter("theta")),
    "rz": RZGate(Parameter("theta")),
    "sx": SXGate(),
    "x": XGate(),
    "h": HGate(),
    "cz": CZGate(),
    "cx": CXGate(),
    "iswap": iSwapGate(),
    "rzz": RZZGate(Parameter("theta")),
}

_LOCAL_DEVICES = {"braket_local_sv": "braket_sv", "braket_local_dm": "braket_dm"}


# ----------------------------------------------------------------- snapshots
def load_snapshot(device: str, directory: Path | None = None) -> dict[str, Any]:
    """A device snapshot by file stem (``iqm_garnet``), validated enough to build a Target.

    A user's ``devices/<device>.json`` (user calibration directory) wins over the shipped one.
    """
    path = find_calibration_file(Path("devices") / f"{device}.json", directory)
    if path is None:
        where = directory or f"{user_calibration_dir()} or the shipped calibration data"
        raise BackendError(
            f"no Braket device snapshot devices/{device}.json in {where}; known snapshots: "
            f"{', '.join(snapshot_names(directory)) or 'none'}"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BackendError(
            f"device snapshot {path} is not valid JSON ({exc}); fix or remove it (a shipped file: re-install qnas-hw)"
        ) from None
    missing = {"schema_version", "name", "qubits", "native_gates", "durations_s", "errors"} - set(data)
    if missing:
        raise BackendError(f"device snapshot {path} lacks {sorted(missing)}")
    if data["schema_version"] != SNAPSHOT_SCHEMA:
        raise BackendError(f"device snapshot {path} has schema {data['schema_version']}, expected {SNAPSHOT_SCHEMA}")
    return data


def _value(entry: Any) -> float:
    """Snapshot figures are ``{"value": x, "source": ...}`` or bare numbers."""
    return float(entry["value"] if isinstance(entry, dict) else entry)


def snapshot_edges(snap: dict[str, Any]) -> list[tuple[int, int]] | None:
    """Directed edges (both directions of each coupler), or None for all-to-all."""
    if snap.get("edges") is None:
        return None
    out: list[tuple[int, int]] = []
    for a, b in snap["edges"]:
        out += [(int(a), int(b)), (int(b), int(a))]
    return out


def snapshot_target(snap: dict[str, Any]) -> Target:
    """A qiskit Target: native gates on every qubit/coupler with typical durations and errors."""
    n = int(snap["qubits"])
    dur, err = snap["durations_s"], snap["errors"]
    target = Target(description=snap["name"], num_qubits=n, dt=None)
    one = {(q,): InstructionProperties(duration=_value(dur["1q"]), error=_value(err["1q"])) for q in range(n)}
    virtual = {(q,): InstructionProperties(duration=0.0, error=0.0) for q in range(n)}
    for g in snap["native_gates"]["1q"]:
        target.add_instruction(_QISKIT_GATES[g], dict(virtual if g in snap.get("virtual_gates", []) else one))
    edges = snapshot_edges(snap)
    pairs = edges if edges is not None else [(a, b) for a in range(n) for b in range(n) if a != b]
    two = {p: InstructionProperties(duration=_value(dur["2q"]), error=_value(err["2q"])) for p in pairs}
    for g in snap["native_gates"]["2q"]:
        target.add_instruction(_QISKIT_GATES[g], dict(two))
    meas = {
        (q,): InstructionProperties(duration=_value(dur["measure"]), error=_value(err["readout"])) for q in range(n)
    }
    target.add_instruction(Measure(), meas)
    return target


@dataclass(frozen=True)
class NoiseSpec:
    """Depolarising probabilities for Braket's DM simulator from average gate errors.

    A 1q depolarising channel with probability p has average infidelity 2p/3,
    a 2q one 4p/5 (Braket's parametrisation), hence the 3/2 and 5/4 factors.
    """

    p1: float
    p2: float
    readout: float

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> NoiseSpec:
        err = snap["errors"]
        return cls(
            p1=min(1.5 * _value(err["1q"]), 1.0),
            p2=min(1.25 * _value(err["2q"]), 1.0),
            readout=_value(err["readout"]),
        )


# --------------------------------------------------------------- translation
@dataclass
class BraketProgram:
    """A translated circuit plus how to fill its free parameters and read its bits back."""

    circuit: Any  # braket.circuits.Circuit
    arg_exprs: list[Any]  # qiskit ParameterExpression per FreeParameter g0, g1...
    clbit_qubit: dict[int, int]  # qiskit clbit -> Braket (compact) qubit
    num_clbits: int

    def input_sets(self, circuit: QuantumCircuit, values: np.ndarray | None) -> dict[str, list[float]] | None:
        """Per FreeParameter, its value on every parameter row (rows flattened)."""
        if not self.arg_exprs:
            return None
        rows = np.asarray(values, dtype=float).reshape(-1, circuit.num_parameters)
        params = list(circuit.parameters)
        out: dict[str, list[float]] = {}
        for k, expr in enumerate(self.arg_exprs):
            used = [params.index(p) for p in expr.parameters]
            col = []
            for row in rows:
                bound = expr.bind({params[i]: row[i] for i in used})
                col.append(float(bound.numeric()))
            out[f"g{k}"] = col
        return out

    def qiskit_counts(self, braket_counts: dict[str, int], measured_qubits: Sequence[int]) -> dict[str, int]:
        """Braket bitstrings (char i = measured_qubits[i]) -> qiskit keys (clbit n-1 first)."""
        pos = {q: i for i, q in enumerate(measured_qubits)}
        out: dict[str, int] = {}
        for bits, count in braket_counts.items():
            key = "".join(
                bits[pos[self.clbit_qubit[c]]] if c in self.clbit_qubit else "0"
                for c in range(self.num_clbits - 1, -1, -1)
            )
            out[key] = out.get(key, 0) + int(count)
        return out


def to_braket(circuit: QuantumCircuit, noise: NoiseSpec | None = None) -> BraketProgram:
    """Translate a (transpiled) qiskit circuit with final measurements to a Braket circuit.

    Gates outside :data:`GATE_MAP` are first rewritten to :data:`SAFE_BASIS`.
    Global phase is dropped (invisible to sampling).  ``noise`` inserts
    depolarising channels after gates and bit flips before measurement, which
    only the density-matrix simulator accepts.
    """
    from braket.circuits import Circuit, FreeParameter

    if any(
        i.operation.name not in GATE_MAP and i.operation.name not in ("measure", "barrier", "delay")
        for i in circuit.data
    ):
        circuit = transpile(circuit, basis_gates=SAFE_BASIS + ["measure"], optimization_level=0)
    active = sorted(
        {
            circuit.find_bit(q).index
            for i in circuit.data
            if i.operation.name not in ("barrier", "delay")
            for q in i.qubits
        }
    )
    compact = {q: k for k, q in enumerate(active)}
    bc = Circuit()
    exprs: list[Any] = []
    clbit_qubit: dict[int, int] = {}
    for inst in circuit.data:
        name = inst.operation.name
        qubits = [compact.get(circuit.find_bit(q).index) for q in inst.qubits]
        if name in ("barrier", "delay"):
            continue
        if name == "measure":
            clbit_qubit[circuit.find_bit(inst.clbits[0]).index] = qubits[0]
            continue
        if any(q in clbit_qubit.values() for q in qubits):
            raise BackendError(
                f"circuit {circuit.name!r} has a gate after a measurement; Braket path supports final measurements only"
            )
        method, n_args = GATE_MAP[name]
        args: list[Any] = []
        for p in inst.operation.params[:n_args]:
            if hasattr(p, "parameters") and p.parameters:
                args.append(FreeParameter(f"g{len(exprs)}"))
                exprs.append(p)
            else:
                args.append(float(p))
        getattr(bc, method)(*qubits, *args)
        if noise is not None:
            _add_gate_noise(bc, qubits, noise)
    if not clbit_qubit:
        raise BackendError(f"circuit {circuit.name!r} has no measurements; build it with measure=True")
    measured = sorted(set(clbit_qubit.values()))
    for q in range(len(active)):  # a qubit with no gate must still exist in the Braket circuit
        if q not in {t for ins in bc.instructions for t in ins.target}:
            bc.i(q)
    if noise is not None and noise.readout > 0:
        for q in measured:
            bc.bit_flip(q, noise.readout)
    bc.measure(measured)
    return BraketProgram(bc, exprs, clbit_qubit, circuit.num_clbits)


def _add_gate_noise(bc: Any, qubits: list[int], noise: NoiseSpec) -> None:
    if len(qubits) == 1 and noise.p1 > 0:
        bc.depolarizing(qubits[0], noise.p1)
    elif len(qubits) == 2 and noise.p2 > 0:
        bc.two_qubit_depolarizing(qubits[0], qubits[1], noise.p2)


def _program_set(pubs: Sequence[SamplerPub], shots: int, noise: NoiseSpec | None) -> list[tuple[Any, int, Any]]:
    """One (ProgramSet, total shots of the set, BraketProgram) per PUB."""
    from braket.program_sets import CircuitBinding, ProgramSet

    out = []
    for pub in pubs:
        prog = to_braket(pub.circuit, noise)
        inputs = prog.input_sets(pub.circuit, pub.parameter_values)
        n_rows = len(next(iter(inputs.values()))) if inputs else pub.rows
        pub_shots = pub.shots_or(shots)
        if inputs:
            binding = CircuitBinding(prog.circuit, input_sets=inputs)
            ps = ProgramSet(binding, shots_per_executable=pub_shots)
        else:
            ps = ProgramSet([prog.circuit] * n_rows, shots_per_executable=pub_shots)
        out.append((ps, n_rows * pub_shots, prog))
    return out


def _counts_from_result(result: Any, prog: BraketProgram) -> list[dict[str, int]]:
    rows: list[dict[str, int]] = []
    for composite in result.entries:
        for entry in composite.entries:
            rows.append(prog.qiskit_counts(dict(entry.counts), list(entry.measured_qubits)))
    return rows


# ------------------------------------------------------------------ handles
class BraketLocalJob(JobHandle):
    """Program sets run on a Braket LocalSimulator in a worker thread owned by this handle."""

    def __init__(self, device: Any, pubs: Sequence[SamplerPub], shots: int, noise: NoiseSpec | None) -> None:
        self._id = f"braket-local-{time.time_ns()}"
        self._started = time.perf_counter()
        self._wall: float | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="braket-local")
        self._future: Future = self._pool.submit(self._run, device, list(pubs), shots, noise)
        self._pool.shutdown(wait=False)

    def _run(self, device: Any, pubs: list[SamplerPub], shots: int, noise: NoiseSpec | None) -> list[Any]:
        out = []
        for ps, total_shots, prog in _program_set(pubs, shots, noise):
            result = device.run(ps, shots=total_shots).result()
            out.append(_counts_from_result(result, prog))
        self._wall = time.perf_counter() - self._started
        return out

    @property
    def job_id(self) -> str:
        return self._id

    def state(self) -> JobState:
        if not self._future.done():
            return JobState.RUNNING
        return JobState.FAILED if self._future.exception() is not None else JobState.DONE

    def counts(self) -> list[list[dict[str, int]]]:
        return self._future.result()

    def timing(self) -> JobTiming:
        self._future.result()
        return JobTiming(quantum_seconds=None, wall_seconds=self._wall)


#: key of ``JobTiming.extra`` holding what ``braket.tracking.Tracker`` estimates the job's tasks cost (USD)
TRACKER_USD = "tracker_usd"


def tracker_usd(tracker: Any) -> float | None:
    """The Braket SDK's own cost estimate of the tasks ``tracker`` saw (QPU: per task + per shot at AWS's price
    list), or None when it cannot say (the price list is fetched over the network)."""
    if tracker is None:
        return None
    try:
        return float(tracker.qpu_tasks_cost() + tracker.simulator_tasks_cost())
    except Exception as exc:  # pricing lookups need AWS's price list; the job's counts do not
        log.warning("braket Tracker could not price the tasks: %s", exc)
        return None


#: key of ``JobTiming.extra`` holding the billed execution seconds Braket reported for the job's tasks (simulator
#: tasks only: QPU tasks are billed per task and per shot, and report none)
BILLED_SECONDS = "billed_seconds"


def tracker_billed_seconds(tracker: Any) -> float | None:
    """Billed execution seconds of the tasks ``tracker`` heard complete, or None when none reported a duration."""
    if tracker is None:
        return None
    try:
        stats = tracker.quantum_tasks_statistics()
    except Exception as exc:  # a stand-in or an SDK without statistics: the counts do not depend on it
        log.debug("braket Tracker has no task statistics: %s", exc)
        return None
    billed = [s["billed_execution_duration"] for s in stats.values() if "billed_execution_duration" in s]
    return float(sum(d.total_seconds() for d in billed)) if billed else None


@contextmanager
def _hearing(tracker: Any) -> Iterator[None]:
    """The tracker registered while results download: Braket announces a task's (billed) duration only then."""
    if tracker is None:
        yield
        return
    tracker.start()
    try:
        yield
    finally:
        tracker.stop()


class BraketCloudJob(JobHandle):
    """One AwsQuantumTask (program set) per PUB; the job id is the comma-joined task ARNs.

    ``tracker`` (a ``braket.tracking.Tracker`` that watched the tasks being created) gives the SDK's own cost
    estimate in :meth:`timing` (``extra["tracker_usd"]``), which the ledger keeps beside the predicted cost; a
    re-attached job has none.
    """

    def __init__(self, tasks: list[Any], programs: list[BraketProgram] | None = None, tracker: Any = None) -> None:
        self._tasks = tasks
        self._programs = programs
        self._tracker = tracker

    @property
    def job_id(self) -> str:
        return ",".join(t.id for t in self._tasks)

    def state(self) -> JobState:
        states = {str(t.state()).upper() for t in self._tasks}
        if states & {"FAILED"}:
            return JobState.FAILED
        if states & {"CANCELLING", "CANCELLED"}:
            return JobState.CANCELLED
        if states <= {"COMPLETED"}:
            return JobState.DONE
        return JobState.RUNNING if "RUNNING" in states else JobState.QUEUED

    def counts(self) -> list[list[dict[str, int]]]:
        if self._programs is None:
            raise BackendError(
                "a re-attached Braket job cannot map bits back to qiskit clbits without its circuits; "
                "re-attach through the ledger, which stores the submitted PUBs"
            )
        with _hearing(self._tracker):
            return [_counts_from_result(t.result(), p) for t, p in zip(self._tasks, self._programs, strict=True)]

    def timing(self) -> JobTiming:
        extra: dict[str, Any] = {}
        for t in self._tasks:
            meta = t.metadata()
            extra[t.id] = {k: str(meta.get(k)) for k in ("createdAt", "endedAt", "shots", "status")}
        extra[TRACKER_USD] = tracker_usd(self._tracker)
        extra[BILLED_SECONDS] = tracker_billed_seconds(self._tracker)
        return JobTiming(quantum_seconds=None, wall_seconds=None, extra=extra)

    def cancel(self) -> None:
        for t in self._tasks:
            t.cancel()


def aws_credentials_present() -> bool:
    """Whether boto3's standard chain has a source, checked without network (no instance metadata probe)."""
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return True
    home = Path(os.environ.get("HOME", "~")).expanduser()
    files = [os.environ.get("AWS_SHARED_CREDENTIALS_FILE"), os.environ.get("AWS_CONFIG_FILE")]
    files += [str(home / ".aws" / "credentials"), str(home / ".aws" / "config")]
    return any(f and os.path.isfile(f) for f in files)


# ----------------------------------------------------------------- backends
class BraketLocalBackend(Backend):
    """Braket's local state-vector or density-matrix simulator (all-to-all, wall-clock cost)."""

    provider = "braket"

    def __init__(self, name: str, noise_from: str | None = "iqm_garnet") -> None:
        from braket.devices import LocalSimulator

        if name not in _LOCAL_DEVICES:
            raise BackendError(f"unknown Braket local simulator {name!r}; known: {sorted(_LOCAL_DEVICES)}")
        self.name = name
        self._device = LocalSimulator(_LOCAL_DEVICES[name])
        self._noise_from = noise_from if name == "braket_local_dm" else None
        self._noise = NoiseSpec.from_snapshot(load_snapshot(noise_from)) if self._noise_from else None

    @property
    def num_qubits(self) -> int:
        return int(self._device.properties.paradigm.qubitCount)

    @property
    def coupling_edges(self) -> list[tuple[int, int]] | None:
        return None

    @property
    def topology_kind(self) -> str:
        return "all-to-all"

    @property
    def basis_gates(self) -> list[str]:
        return ["rx", "ry", "rz", "h", "x", "cx", "rzz", "measure"]

    def credentials_present(self) -> bool:
        return True

    @property
    def supports_mid_circuit_measurement(self) -> bool:
        return False  # translated programs take final measurements only

    def transpile(self, circuit: QuantumCircuit, optimization_level: int = 1, seed: int = 0) -> QuantumCircuit:
        return transpile(
            circuit, basis_gates=self.basis_gates, optimization_level=optimization_level, seed_transpiler=seed
        )

    def scheduled_duration(self, transpiled: QuantumCircuit) -> float:
        return 0.0  # a simulator has no instruction durations; its cost model is wall-clock

    def submit(self, pubs: Sequence[SamplerPub], shots: int, seed: int | None = None) -> JobHandle:
        if seed is not None:
            log.debug("Braket local simulators take no seed; sampling is not reproducible (seed=%s ignored)", seed)
        return BraketLocalJob(self._device, pubs, shots, self._noise)

    def describe(self) -> dict[str, Any]:
        row = super().describe()
        row["noise_from"] = self._noise_from
        return row


class BraketDeviceBackend(ThreadLockPickling, Backend):
    """A Braket QPU described by its snapshot; runs noisily on the local DM simulator, or on AWS by ARN."""

    provider = "braket"

    def __init__(self, snapshot: str, name: str | None = None, cloud: bool = False) -> None:
        self._snap = load_snapshot(snapshot)
        self.snapshot = snapshot
        self.name = name or f"braket_{snapshot}"
        self.arn = str(self._snap.get("device_arn", ""))
        self._cloud = cloud
        self._target = snapshot_target(self._snap)
        self._noise = NoiseSpec.from_snapshot(self._snap)
        self._aws_device: Any = None
        # a Tracker hears every task created in the process: submissions one at a time keep each job's own
        self._lock = threading.Lock()

    @property
    def num_qubits(self) -> int:
        return int(self._snap["qubits"])

    @property
    def coupling_edges(self) -> list[tuple[int, int]] | None:
        return snapshot_edges(self._snap)

    @property
    def topology_kind(self) -> str:
        return str(self._snap.get("topology", "unknown"))

    @property
    def basis_gates(self) -> list[str]:
        return [*self._snap["native_gates"]["1q"], *self._snap["native_gates"]["2q"], "measure"]

    @property
    def is_simulator(self) -> bool:
        return not self._cloud

    @property
    def supports_reattach(self) -> bool:
        return self._cloud

    @property
    def timing_source(self) -> str:
        return "device"

    @property
    def target(self) -> Target | None:
        return self._target

    @property
    def rep_delay_s(self) -> float:
        rep = self._snap.get("shot_overhead_s")
        return _value(rep) if rep is not None else 0.0

    @property
    def pricing(self) -> Pricing | None:
        p = self._snap.get("pricing")
        if not p:
            return None
        return Pricing(_value(p["per_task_usd"]), _value(p["per_shot_usd"]), str(p.get("source", "")))

    def credentials_present(self) -> bool:
        return aws_credentials_present() if self._cloud else True

    @property
    def supports_mid_circuit_measurement(self) -> bool:
        return False  # Braket circuits take final measurements only

    def preflight(self) -> None:
        if self._cloud:
            self._device()

    def transpile(self, circuit: QuantumCircuit, optimization_level: int = 1, seed: int = 0) -> QuantumCircuit:
        return transpile(circuit, target=self._target, optimization_level=optimization_level, seed_transpiler=seed)

    def scheduled_duration(self, transpiled: QuantumCircuit) -> float:
        return target_duration(transpiled, self._target)

    def _device(self) -> Any:
        if self._aws_device is None:
            if not self.credentials_present():
                raise BackendError(
                    f"{self.name}: no AWS credentials; configure them the standard boto3 way "
                    "(aws configure, AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
                )
            from braket.aws import AwsDevice

            try:
                self._aws_device = AwsDevice(self.arn)
            except Exception as exc:
                reason = unreachable_reason(exc)
                if reason is None:
                    raise
                raise BackendError(
                    f"{self.name}: Amazon Braket is unreachable (no network connection, or the service is down: "
                    f"{reason}); your credentials were not checked. Retry when the network is back, or search "
                    f"offline with the snapshot (--backend braket_{self.snapshot})"
                ) from None
        return self._aws_device

    def submit(self, pubs: Sequence[SamplerPub], shots: int, seed: int | None = None) -> JobHandle:
        if not self._cloud:
            from braket.devices import LocalSimulator

            return BraketLocalJob(LocalSimulator("braket_dm"), pubs, shots, self._noise)
        from braket.tracking import Tracker

        device = self._device()
        tasks, programs = [], []
        with self._lock, Tracker() as tracker:  # sees exactly this job's task creations (the SDK's cost estimate)
            for ps, total_shots, prog in _program_set(pubs, shots, None):
                tasks.append(device.run(ps, shots=total_shots))
                programs.append(prog)
        log.info("submitted %d Braket task(s) to %s", len(tasks), self.arn)
        return BraketCloudJob(tasks, programs, tracker)

    def reattach(self, job_id: str) -> JobHandle:
        if not self._cloud:
            return super().reattach(job_id)
        from braket.aws import AwsQuantumTask

        self._device()  # credentials check with a clear message
        return BraketCloudJob([AwsQuantumTask(arn) for arn in job_id.split(",") if arn])

    def describe(self) -> dict[str, Any]:
        row = super().describe()
        row.update(snapshot=self.snapshot, arn=self.arn, retrieved=self._snap.get("retrieved"))
        return row


def braket_backend_for_arn(arn: str, directory: Path | None = None) -> BraketDeviceBackend:
    """``braket:<arn>``: the snapshot whose ``device_arn`` matches describes the QPU."""
    for stem in snapshot_names(directory):
        if load_snapshot(stem, directory).get("device_arn") == arn:
            return BraketDeviceBackend(stem, name=f"braket:{arn}", cloud=True)
    raise BackendError(
        f"no device snapshot for Braket ARN {arn!r}; add {user_calibration_dir() / 'devices'}/<device>.json with "
        f"that device_arn (known: {', '.join(snapshot_names(directory))})"
    )
