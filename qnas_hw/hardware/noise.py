"""The target's noise, simulated on only the qubits a candidate uses: the offline stand-in for running on the device.

``accuracy = "noisy"`` scores every candidate as the device would produce
it, so the simulator must be the device's noise, not a generic one:

* **IBM snapshots and devices** (``fake_*``, ``aer_noisy``, ``ibm:<device>``):
  the same errors Aer's ``NoiseModel.from_backend`` derives from the
  backend's ``Target`` (``basic_device_gate_errors``: depolarising +
  thermal relaxation per gate from its error, duration, T1 and T2;
  ``basic_device_readout_errors``: per-qubit assignment errors) - the model
  Qiskit Runtime's local testing mode runs a fake backend with.
* **Braket snapshots** (``braket_<device>``, ``braket:<ARN>``): their reported
  fidelities as a ``Target`` (``calibration/devices/*.json``), which the same
  functions turn into depolarising + readout errors (the snapshots carry no
  T1/T2, so no relaxation), run on Aer's density-matrix simulator.

Only the physical qubits the transpiled circuit touches are simulated: the
circuit is deflated to them and the errors of exactly those qubits and
couplers are copied, renumbered, into a small ``NoiseModel`` (cached per
qubit set).  Simulating a 4-qubit candidate placed on a 127-qubit device is
then a 4-qubit density matrix, and the result is the same distribution as the
full-device model gives (the tests compare the two).

Runs use ``AerSimulator.run`` with ``parameter_binds``: all rows of a
candidate are one parameterised circuit, simulated as parallel experiments
with counts tallied in C++ (the Sampler primitive would materialise every
shot as a bit array first, which costs more than the simulation here).
Density matrix up to :data:`DM_MAX_QUBITS` qubits, statevector trajectories
beyond.  With the density matrix, Aer returns each row's exact outcome
distribution (``save_probabilities``, gate noise included); the readout
errors of the same model (independent per qubit) are applied to it exactly
and the shots are drawn from it by a seeded multinomial: the same law as
Aer's per-shot sampling with readout flips, which otherwise costs more than
the simulation itself (0.6 ms per row and 1024 shots).

Mid-circuit measurements (a cut candidate's QPD terms measure a qubit and
keep using it) would make Aer simulate every shot separately, thousands of
times slower.  Their outcomes are never used for control, so they are
*deferred* exactly: the qubit's value is copied onto a fresh ancilla by a
noiseless CNOT (which dephases the qubit just as the measurement does) and the
ancilla is measured at the end into the same classical bit, with the
readout error of the qubit it stands for.  The outcome distribution is the
same as Aer's own mid-circuit simulation under this noise model (Aer adds no
error to a measurement besides its readout error); the tests compare both.

Idle noise (``idle_noise="alap"`` or ``"asap"``, the search's default
``alap``): ``NoiseModel.from_backend`` puts relaxation on gates only, so a
qubit that waits while others run (for a SWAP chain elsewhere, or for a
mid-circuit measurement of a cut candidate, microseconds long) would decay for
free.  :func:`prepare_circuit` schedules the deflated circuit with the
target's gate and measurement durations (qiskit's ``ALAPScheduleAnalysis`` /
``ASAPScheduleAnalysis`` + ``PadDelay``) so every idle gap becomes a
``Delay``; Aer then applies Aer's ``thermal_relaxation_error`` with the
qubit's T1 and T2 (T2 capped at 2 T1, as Aer's gate errors do) after each
delay (:func:`with_idle_relaxation`), and the trajectory simulator
(:mod:`qnas_hw.hardware.trajectories`) applies the same channel.  Targets
without T1 (Braket snapshots) have no relaxation to apply and are not
scheduled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qiskit import QuantumCircuit

from qnas_hw.hardware.backends.base import Backend, BackendError
from qnas_hw.hardware.layout import deflate, has_error_data
from qnas_hw.locking import ThreadLockPickling

log = logging.getLogger(__name__)

#: Widest circuit simulated as a density matrix (4**10 complex entries = 16 MB); wider ones use trajectories.
DM_MAX_QUBITS = 10
#: How an idle qubit's waiting is placed (``[search] idle_schedule``): as late or as soon as possible.
IDLE_SCHEDULES: tuple[str, ...] = ("alap", "asap")
#: Delay resolution used when a target gives no ``dt`` (a schedule still needs one); 0.1 ns.
_NOMINAL_DT = 1e-10


class NoiseModelError(BackendError):
    """A backend without noise data was asked for noisy execution."""


def has_noise_model(backend: Backend) -> bool:
    """True when the backend describes its errors (a ``Target`` with at least one non-zero error)."""
    try:
        target = backend.target
    except BackendError:
        return False
    return has_error_data(target)


def require_noise_model(backend: Backend) -> None:
    """Raise :class:`NoiseModelError` naming the backends that have a noise model when ``backend`` has none."""
    if not has_noise_model(backend):
        raise NoiseModelError(
            f"backend {backend.name!r} has no noise model (no error rates in its target); use accuracy='ideal', or "
            f"a backend with one: any fake_* IBM snapshot (e.g. fake_kolkata), {', '.join(noisy_backend_names())}"
        )


def noisy_backend_names() -> list[str]:
    """The registry names whose ``Target`` carries errors (for error messages naming the alternatives)."""
    from qnas_hw.hardware.backends import get_backend, known_backend_names

    out = []
    for name in known_backend_names():
        if name.startswith("fake_"):
            continue  # every IBM snapshot has one; messages say so instead of listing 60 names
        try:
            if has_noise_model(get_backend(name)):
                out.append(name)
        except BackendError:
            continue
    return out


def _fingerprint(errors: Sequence[tuple[Any, ...]]) -> str:
    import hashlib

    h = hashlib.sha256()
    for item in errors:
        h.update(repr(item).encode())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class _DeviceErrors:
    """The device's error channels, once per backend: (name, physical qubits, QuantumError) and readout."""

    gate: list[tuple[str, tuple[int, ...], Any]]
    readout: list[tuple[tuple[int, ...], Any]]
    basis: list[str]
    key: str


def device_errors(backend: Backend) -> _DeviceErrors:
    """Aer's per-instruction errors derived from the backend's ``Target`` (what ``NoiseModel.from_backend`` adds)."""
    import warnings

    from qiskit_aer.noise.device.models import basic_device_gate_errors, basic_device_readout_errors

    require_noise_model(backend)
    target = backend.target
    relaxation = bool(target.qubit_properties) and all(qp is not None for qp in target.qubit_properties)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Aer warns about missing T1/T2 (Braket snapshots): no relaxation then
        errors = basic_device_gate_errors(target=target, thermal_relaxation=relaxation)
        gate = [(name, tuple(int(q) for q in qs), err) for name, qs, err in errors]
        readout = [(tuple(int(q) for q in qs), err) for qs, err in basic_device_readout_errors(target=target)]
    basis = sorted(set(target.operation_names))
    return _DeviceErrors(gate, readout, basis, _fingerprint(_target_figures(target)))


def _target_figures(target: Any) -> list[tuple[Any, ...]]:
    """Every number the noise model is built from (errors, durations, T1/T2), in a fixed order.

    The fingerprint must not hash the Aer error objects: they carry random ids.
    """
    rows: list[tuple[Any, ...]] = []
    for name in sorted(target.operation_names):
        for qargs, props in sorted((target[name] or {}).items(), key=lambda kv: (kv[0] is None, kv[0] or ())):
            if props is not None:
                rows.append((name, qargs, getattr(props, "error", None), getattr(props, "duration", None)))
    for q, qp in enumerate(target.qubit_properties or []):
        if qp is not None:
            rows.append(("qubit", q, getattr(qp, "t1", None), getattr(qp, "t2", None), getattr(qp, "frequency", None)))
    return rows


def relaxation_times(target: Any, qubit: int) -> tuple[float, float] | None:
    """T1 and T2 (seconds) of a physical qubit as Aer's gate errors use them, or None where the target has no T1.

    Idle noise must be the relaxation the gate errors already carry, so T2 is
    capped at 2 T1 and defaults to it, as in ``qiskit_aer.noise.device.models``.
    """
    props = target.qubit_properties or []
    qp = props[qubit] if qubit < len(props) else None
    t1 = getattr(qp, "t1", None)
    if t1 is None:
        return None
    t2 = getattr(qp, "t2", None)
    return float(t1), (2.0 * float(t1) if t2 is None else min(float(t2), 2.0 * float(t1)))


def has_relaxation(target: Any) -> bool:
    """True when every qubit has a T1 (IBM snapshots and devices; Braket snapshots report none)."""
    n = target.num_qubits or 0
    return n > 0 and all(relaxation_times(target, q) is not None for q in range(n))


def idle_dt(target: Any) -> float:
    """Seconds per ``dt`` of the delays a schedule inserts (the target's, or a nominal 0.1 ns without one)."""
    return float(target.dt or _NOMINAL_DT)


def schedule_idle(small: QuantumCircuit, physical: Sequence[int], target: Any, method: str) -> QuantumCircuit:
    """``small`` (a deflated circuit on ``physical``) scheduled with the target's durations, idle gaps as delays.

    Durations are looked up on the physical qubits (an instruction the target
    gives no duration, like a virtual ``rz``, takes none).  Nothing is padded
    after a qubit's last instruction: idling after the final measurement
    changes no outcome.
    """
    from qiskit.transpiler import InstructionDurations, PassManager
    from qiskit.transpiler.passes import ALAPScheduleAnalysis, ASAPScheduleAnalysis, PadDelay

    if method not in IDLE_SCHEDULES:
        raise ValueError(
            f"idle schedule {method!r} is not supported; use one of {', '.join(map(repr, IDLE_SCHEDULES))}"
        )
    rows: dict[tuple[str, tuple[int, ...]], tuple[str, list[int], float, str]] = {}
    for inst in small.data:
        name = inst.operation.name
        qs = tuple(small.find_bit(q).index for q in inst.qubits)
        if name in ("barrier", "delay") or (name, qs) in rows:
            continue
        where = tuple(int(physical[q]) for q in qs)
        props = (target[name] or {}).get(where) if name in target.operation_names else None
        rows[(name, qs)] = (name, list(qs), float(getattr(props, "duration", None) or 0.0), "s")
    durations = InstructionDurations(list(rows.values()), dt=idle_dt(target))
    analysis = ALAPScheduleAnalysis if method == "alap" else ASAPScheduleAnalysis
    passes = PassManager([analysis(durations=durations), PadDelay(fill_very_end=False, durations=durations)])
    return passes.run(small)


def delay_seconds(operation: Any, dt: float) -> float:
    """A ``Delay``'s length in seconds (PadDelay writes ``dt`` units)."""
    from qiskit.utils.units import apply_prefix

    if operation.unit == "dt":
        return float(operation.duration) * dt
    return float(apply_prefix(float(operation.duration), operation.unit))


def idle_error(target: Any, physical_qubit: int, seconds: float) -> Any:
    """Aer's ``thermal_relaxation_error`` of an idle physical qubit over ``seconds`` (None: nothing decays)."""
    from qiskit_aer.noise import thermal_relaxation_error

    times = relaxation_times(target, int(physical_qubit))
    if times is None or seconds <= 0:
        return None
    return thermal_relaxation_error(times[0], times[1], seconds)


def prepare_circuit(
    circuit: QuantumCircuit, target: Any, idle: str | None
) -> tuple[QuantumCircuit, list[int], list[int]]:
    """What both simulators run: the circuit deflated, scheduled (``idle``) and its mid-circuit measurements deferred.

    Returns the small circuit, the physical qubit of each of its first
    ``len(physical)`` qubits, and the stand-ins of the deferred ancillas
    (see :func:`defer_measurements`).  Scheduling comes before deferral: a
    mid-circuit measurement takes its real duration, during which the other
    qubits wait.
    """
    small, physical = deflate(circuit)
    if idle is not None and has_relaxation(target):
        small = schedule_idle(small, physical, target, idle)
    small, stand_ins = defer_measurements(small)
    return small, physical, stand_ins


def with_idle_relaxation(small: QuantumCircuit, physical: Sequence[int], target: Any) -> QuantumCircuit:
    """``small`` with Aer's thermal relaxation channel after every delay on a physical qubit (the Aer path)."""
    if not any(inst.operation.name == "delay" for inst in small.data):
        return small
    dt = idle_dt(target)
    out = small.copy_empty_like()
    for inst in small.data:
        out.append(inst)
        if inst.operation.name != "delay":
            continue
        q = small.find_bit(inst.qubits[0]).index
        error = idle_error(target, physical[q], delay_seconds(inst.operation, dt)) if q < len(physical) else None
        if error is not None:
            out.append(error.to_instruction(), [inst.qubits[0]])
    return out


def shots_per_pub(shots: int | Sequence[int], n_pubs: int) -> list[int]:
    """The shots of each PUB of a simulator run: one count for all, or one per PUB (checked)."""
    out = [int(shots)] * n_pubs if isinstance(shots, int | np.integer) else [int(s) for s in shots]
    if len(out) != n_pubs:
        raise ValueError(f"{len(out)} shot counts for {n_pubs} circuits")
    return out


class NoisySimulator(ThreadLockPickling):
    """Runs transpiled circuits under the backend's noise, simulating only their active physical qubits.

    ``run`` takes ``(circuit, values)`` pairs (values: ``(rows, n_params)``
    or None) with shots per pair, and returns counts per pair per row with
    qiskit's key convention (highest clbit first, no spaces), the same
    convention the job layer stores.  Seeded: the same call gives the same
    counts.  ``idle_noise`` (``"alap"``, ``"asap"`` or None) adds the idle
    qubits' relaxation (see the module docstring); None keeps the gate errors
    of ``NoiseModel.from_backend`` only.
    """

    def __init__(self, backend: Backend, threads: int = 0, idle_noise: str | None = None) -> None:
        if idle_noise is not None and idle_noise not in IDLE_SCHEDULES:
            raise ValueError(f"idle_noise={idle_noise!r} is not supported; use None or one of {IDLE_SCHEDULES}")
        self.backend = backend
        self.threads = threads
        self.idle_noise = idle_noise
        self._errors: _DeviceErrors | None = None
        self._models: dict[tuple[int, ...], Any] = {}
        self._lock = threading.Lock()

    @property
    def errors(self) -> _DeviceErrors:
        if self._errors is None:
            self._errors = device_errors(self.backend)
        return self._errors

    def settings_key(self) -> str:
        """Changes whenever the noise the candidates see changes (a refreshed snapshot, another device)."""
        return f"noise={self.backend.name}:{self.errors.key}|dm<={DM_MAX_QUBITS}|idle={self.idle_noise or 'off'}"

    def readout_matrix(self, physical_qubit: int) -> np.ndarray:
        """``[[P(0|0), P(1|0)], [P(0|1), P(1|1)]]`` (row: prepared, column: read) of one physical qubit."""
        for qubits, error in self.errors.readout:
            if qubits == (int(physical_qubit),):
                return np.asarray(error.probabilities, dtype=float)
        return np.eye(2)

    def noise_model(self, physical: Sequence[int], stand_ins: Sequence[int] = (), readout: bool = True) -> Any:
        """The device's errors on ``physical`` qubits (renumbered 0..k-1 in that order), cached per qubit tuple.

        ``stand_ins[j]`` is the deflated qubit that ancilla ``k + j`` (a
        deferred mid-circuit measurement) stands for: it gets that qubit's
        readout error and nothing else.
        """
        from qiskit_aer.noise import NoiseModel

        key = (tuple(int(q) for q in physical), tuple(int(s) for s in stand_ins), bool(readout))
        with self._lock:
            cached = self._models.get(key)
        if cached is not None:
            return cached
        index = {q: k for k, q in enumerate(key[0])}
        errs = self.errors
        model = NoiseModel(basis_gates=sorted({*errs.basis, "cx"}))
        for qubits, error in errs.readout if readout else ():
            if all(q in index for q in qubits):
                model.add_readout_error(error, [index[q] for q in qubits])
                for j, stands_for in enumerate(key[1]):
                    if qubits == (key[0][stands_for],):
                        model.add_readout_error(error, [len(key[0]) + j])
        for name, qubits, error in errs.gate:
            if all(q in index for q in qubits):
                model.add_quantum_error(error, name, [index[q] for q in qubits])
        with self._lock:
            self._models[key] = model
        return model

    def run(
        self,
        pubs: Sequence[tuple[QuantumCircuit, np.ndarray | None]],
        shots: int | Sequence[int],
        seed: int,
    ) -> list[list[dict[str, int]]]:
        """Counts per PUB, per parameter row; each PUB is simulated on its own active qubits only."""
        from qiskit_aer import AerSimulator

        shot_list = shots_per_pub(shots, len(pubs))
        out: list[list[dict[str, int]]] = []
        for k, ((circuit, values), n_shots) in enumerate(zip(pubs, shot_list, strict=True)):
            small, physical, stand_ins = prepare_circuit(circuit, self.backend.target, self.idle_noise)
            small = with_idle_relaxation(small, physical, self.backend.target)
            if small.num_qubits <= DM_MAX_QUBITS:
                rng = np.random.default_rng(int(seed) + 7919 * k)
                out.append(self._sample_exact(circuit, small, physical, stand_ins, values, n_shots, rng))
                continue
            model = self.noise_model(physical, stand_ins)
            method = "statevector"
            sim = AerSimulator(
                method=method,
                noise_model=model,
                seed_simulator=int(seed) + 7919 * k,
                max_parallel_experiments=0,
                max_parallel_threads=self.threads,
            )
            binds = _binds(circuit, small, values)
            result = sim.run(small, parameter_binds=binds, shots=n_shots).result()
            if not result.success:
                raise BackendError(f"noisy simulation of {circuit.name!r} failed: {result.status}")
            n_rows = 1 if binds is None else len(next(iter(binds[0].values())))
            counts = result.get_counts() if n_rows > 1 else [result.get_counts()]
            out.append([{key.replace(" ", ""): int(v) for key, v in c.items()} for c in counts])
        return out

    def probabilities(self, circuit: QuantumCircuit, values: np.ndarray | None, readout: bool = True) -> np.ndarray:
        """Exact noisy outcome distribution per row, ``(rows, 2**m)``; bit j is the j-th measured clbit (ascending).

        Aer's density matrix of the prepared circuit (at most
        :data:`DM_MAX_QUBITS` qubits), readout errors applied exactly unless
        ``readout`` is False: the reference the trajectory simulator is tested against.
        """
        small, physical, stand_ins = prepare_circuit(circuit, self.backend.target, self.idle_noise)
        small = with_idle_relaxation(small, physical, self.backend.target)
        if small.num_qubits > DM_MAX_QUBITS:
            raise ValueError(f"{circuit.name!r} needs {small.num_qubits} qubits; exact up to {DM_MAX_QUBITS}")
        return self._exact_probabilities(circuit, small, physical, stand_ins, values, readout)[0]

    def _exact_probabilities(
        self,
        circuit: QuantumCircuit,
        small: QuantumCircuit,
        physical: Sequence[int],
        stand_ins: Sequence[int],
        values: np.ndarray | None,
        readout: bool = True,
    ) -> tuple[np.ndarray, list[int]]:
        """Rows of exact distributions over the measured clbits (Aer, density matrix), and those clbits."""
        from qiskit_aer import AerSimulator

        body, measured = _split_final_measurements(small)
        body.save_probabilities(qubits=[q for q, _ in measured], label="p")
        sim = AerSimulator(
            method="density_matrix",
            noise_model=self.noise_model(physical, stand_ins, readout=False),
            max_parallel_experiments=0,
            max_parallel_threads=self.threads,
        )
        binds = _binds(circuit, small, values)
        result = sim.run(body, parameter_binds=binds, shots=1).result()
        if not result.success:
            raise BackendError(f"noisy simulation of {circuit.name!r} failed: {result.status}")
        n_rows = 1 if binds is None else len(next(iter(binds[0].values())))
        n_phys = len(physical)
        matrices = [
            self.readout_matrix(physical[q] if q < n_phys else physical[stand_ins[q - n_phys]]) for q, _ in measured
        ]
        rows = []
        for r in range(n_rows):
            probs = np.asarray(result.data(r)["p"], dtype=float)
            probs = _apply_readout(probs, matrices) if readout else np.clip(probs, 0.0, None)
            rows.append(probs / probs.sum())
        return np.stack(rows), [c for _, c in measured]

    def _sample_exact(
        self,
        circuit: QuantumCircuit,
        small: QuantumCircuit,
        physical: Sequence[int],
        stand_ins: Sequence[int],
        values: np.ndarray | None,
        shots: int,
        rng: np.random.Generator,
    ) -> list[dict[str, int]]:
        """Exact noisy outcome distribution per row (Aer, density matrix), readout applied, shots drawn."""
        dists, clbits = self._exact_probabilities(circuit, small, physical, stand_ins, values)
        total = small.num_clbits
        out = []
        for probs in dists:
            draws = rng.multinomial(shots, probs)
            counts: dict[str, int] = {}
            for v in np.flatnonzero(draws):
                bits = ["0"] * total
                for j, c in enumerate(clbits):
                    if (v >> j) & 1:
                        bits[total - 1 - c] = "1"
                counts["".join(bits)] = int(draws[v])
            out.append(counts)
        return out


def _split_final_measurements(circuit: QuantumCircuit) -> tuple[QuantumCircuit, list[tuple[int, int]]]:
    """The circuit without its (final) measurements, and (qubit, clbit) of each, in clbit order."""
    body = circuit.copy_empty_like()
    measured: dict[int, int] = {}
    for inst in circuit.data:
        if inst.operation.name == "measure":
            measured[circuit.find_bit(inst.clbits[0]).index] = circuit.find_bit(inst.qubits[0]).index
            continue
        body.append(inst)
    return body, [(measured[c], c) for c in sorted(measured)]


def _apply_readout(probs: np.ndarray, matrices: Sequence[np.ndarray]) -> np.ndarray:
    """Push a distribution over measured bits (bit j = position j) through independent per-bit readout errors."""
    m = len(matrices)
    tensor = probs.reshape((2,) * m)  # axis 0 is the most significant bit, i.e. position m - 1
    for j, matrix in enumerate(matrices):
        axis = m - 1 - j
        tensor = np.moveaxis(np.tensordot(tensor, matrix, axes=([axis], [0])), -1, axis)
    return np.clip(tensor.reshape(-1), 0.0, None)


def defer_measurements(circuit: QuantumCircuit) -> tuple[QuantumCircuit, list[int]]:
    """Move every mid-circuit measurement to the end through an ancilla (see the module docstring).

    Returns the circuit with ``len(stand_ins)`` ancillas appended and, per
    ancilla, the qubit whose measurement it records.  A circuit whose
    measurements all come last is returned unchanged.
    """
    from qiskit import QuantumRegister

    later_use: set[int] = set()
    mid: set[int] = set()  # instruction indices of measurements followed by more work on their qubit
    for i in range(len(circuit.data) - 1, -1, -1):
        inst = circuit.data[i]
        qs = [circuit.find_bit(q).index for q in inst.qubits]
        if inst.operation.name == "measure":
            if qs[0] in later_use:
                mid.add(i)
            later_use.add(qs[0])
        elif inst.operation.name not in ("barrier", "delay"):  # idling after a measurement is no later use
            later_use.update(qs)
    if not mid:
        return circuit, []
    anc = QuantumRegister(len(mid), "deferred")
    out = QuantumCircuit(*circuit.qregs, anc, *circuit.cregs, name=circuit.name)
    stand_ins: list[int] = []
    finals = []
    for i, inst in enumerate(circuit.data):
        if i in mid:
            q = circuit.find_bit(inst.qubits[0]).index
            a = anc[len(stand_ins)]
            stand_ins.append(q)
            out.cx(out.qubits[q], a)
            finals.append((a, out.clbits[circuit.find_bit(inst.clbits[0]).index]))
            continue
        out.append(
            inst.operation,
            [out.qubits[circuit.find_bit(q).index] for q in inst.qubits],
            [out.clbits[circuit.find_bit(c).index] for c in inst.clbits],
        )
    for a, c in finals:
        out.measure(a, c)
    out.global_phase = circuit.global_phase
    return out, stand_ins


def _binds(
    circuit: QuantumCircuit, small: QuantumCircuit, values: np.ndarray | None
) -> list[dict[Any, list[float]]] | None:
    """Aer's parameter binds for ``small`` from values given in ``circuit.parameters`` order."""
    if small.num_parameters == 0:
        return None
    if values is None:
        raise ValueError(f"circuit {circuit.name!r} has {circuit.num_parameters} parameters but no values")
    rows = np.asarray(values, dtype=float).reshape(-1, circuit.num_parameters)
    column = {p: i for i, p in enumerate(circuit.parameters)}
    return [{p: rows[:, column[p]].tolist() for p in small.parameters}]


class TrainingNoise:
    """Noise-aware training's noise for each architecture: the target's dominant errors where it is placed.

    The candidate is transpiled and placed exactly as it will run (the same
    :class:`~qnas_hw.hardware.transpilation.Transpiler` the scoring uses); logical
    qubit ``q`` is the physical qubit its measurement lands on, and the
    :class:`~qnas_hw.model.gatewise.GateNoise` gets that qubit's and its couplers'
    errors and readout.  A candidate wider than the qubit budget (it runs as
    a cut plan) trains without noise.
    """

    def __init__(self, backend: Backend, transpiler: Any, simulator: NoisySimulator, qubit_budget: int) -> None:
        self.backend = backend
        self.transpiler = transpiler
        self.simulator = simulator
        self.qubit_budget = qubit_budget
        self._cache: dict[str, Any] = {}

    def key(self) -> str:
        return f"nat|{self.simulator.settings_key()}|{self.transpiler.settings_key()}"

    def __call__(self, arch: Any) -> Any:
        from qnas_hw.hardware.execution import measured_qubits
        from qnas_hw.model.gatewise import noise_from_target

        if arch.n_qubits > self.qubit_budget:
            return None
        cached = self._cache.get(arch.key())
        if cached is None:
            rec = self.transpiler.transpile(arch)
            physical = [int(q) for q in measured_qubits(rec.circuit)]  # clbit q measures logical qubit q
            readout = [self.simulator.readout_matrix(p) for p in physical]
            cached = noise_from_target(self.backend.target, physical, readout)
            self._cache[arch.key()] = cached
        return cached
