"""Idle noise: a qubit that waits relaxes with its T1 and T2, in the Aer path and the batched simulator alike.

References are closed forms: a qubit in |1> idling for t keeps population
exp(-t/T1); SX, idle t, SX turns the coherence exp(-t/T2) left after the
wait into a population.  The test target has no gate or readout error, so
nothing else moves the numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.circuit.library import CXGate, Measure, RZGate, SXGate, XGate
from qiskit.transpiler import InstructionProperties, QubitProperties, Target

from qnas_hw.hardware.backends import get_backend
from qnas_hw.hardware.backends.base import Backend
from qnas_hw.hardware.cutting import CutPlanner
from qnas_hw.hardware.execution import ProgramBuilder
from qnas_hw.hardware.noise import NoisySimulator, defer_measurements, prepare_circuit
from qnas_hw.hardware.trajectories import TrajectorySimulator
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.model.space import Architecture

T1, T2 = 100e-6, 60e-6
GATE = 50e-9  # every gate's duration on the test target (no gate error: only relaxation while it runs)


class RelaxOnlyBackend(Backend):
    """Two coupled qubits whose only imperfection is thermal relaxation (T1, T2); readout error 1e-12."""

    name = "relax_only"
    provider = "ibm"

    def __init__(self) -> None:
        t = Target(num_qubits=2, dt=1e-9, qubit_properties=[QubitProperties(t1=T1, t2=T2)] * 2)
        timed = {(q,): InstructionProperties(duration=GATE, error=0.0) for q in range(2)}
        t.add_instruction(SXGate(), dict(timed))
        t.add_instruction(XGate(), dict(timed))
        t.add_instruction(RZGate(Parameter("theta")), {(q,): InstructionProperties(duration=0.0) for q in range(2)})
        t.add_instruction(CXGate(), {e: InstructionProperties(duration=GATE, error=0.0) for e in [(0, 1), (1, 0)]})
        t.add_instruction(Measure(), {(q,): InstructionProperties(duration=0.0, error=1e-12) for q in range(2)})
        self._target = t

    @property
    def num_qubits(self) -> int:
        return 2

    @property
    def coupling_edges(self) -> list[tuple[int, int]]:
        return [(0, 1), (1, 0)]

    @property
    def topology_kind(self) -> str:
        return "line"

    @property
    def basis_gates(self) -> list[str]:
        return sorted(self._target.operation_names)

    @property
    def target(self) -> Target:
        return self._target

    def credentials_present(self) -> bool:
        return True

    def transpile(self, circuit: QuantumCircuit, optimization_level: int = 1, seed: int = 0) -> QuantumCircuit:
        raise NotImplementedError

    def scheduled_duration(self, transpiled: QuantumCircuit) -> float:
        return 0.0

    def submit(self, pubs, shots, seed=None):  # pragma: no cover - never submitted
        raise NotImplementedError


def _simulators(backend: Backend, idle: str | None) -> list[tuple[str, object]]:
    return [
        ("aer", NoisySimulator(backend, idle_noise=idle)),
        ("torch exact", TrajectorySimulator(backend, idle_noise=idle)),
        ("torch trajectories", TrajectorySimulator(backend, idle_noise=idle, trajectories=20000, exact_max_qubits=0)),
    ]


def _tolerance(name: str) -> float:
    # exact paths: float32 rounding; 20000 trajectories: at most 4 / sqrt(20000) = 0.028 on a probability (bound)
    return 1e-5 if name != "torch trajectories" else 4 / math.sqrt(20000)


@pytest.mark.parametrize("t_us", [10.0, 50.0])
def test_excited_qubit_idling_decays_as_t1(t_us: float) -> None:
    """X, delay t, measure: P(1) = exp(-(t + gate)/T1) (the X itself lasts one gate time)."""
    backend = RelaxOnlyBackend()
    qc = QuantumCircuit(2, 1)
    qc.x(0)
    qc.delay(t_us, 0, unit="us")
    qc.measure(0, 0)
    expected = math.exp(-(t_us * 1e-6 + GATE) / T1)
    for name, sim in _simulators(backend, None):
        p1 = float(sim.probabilities(qc, None)[0, 1])
        assert abs(p1 - expected) < _tolerance(name), f"{name}: P(1) = {p1:.5f}, exp(-t/T1) = {expected:.5f}"


def _ramsey_p1(t: float) -> float:
    """SX, relax for GATE + t, SX, relax for GATE: P(1) from the T1/T2 channel written out on the density matrix.

    Thermal relaxation (no excited population) scales the |1> population by
    exp(-tau/T1) and the coherence by exp(-tau/T2); the two relaxations
    before the second SX (the first SX's own, then the wait) compose.
    """
    sx = np.array([[1 + 1j, 1 - 1j], [1 - 1j, 1 + 1j]]) / 2
    rho = sx @ np.diag([1.0, 0.0]) @ sx.conj().T
    tau = GATE + t
    p1 = rho[1, 1].real * math.exp(-tau / T1)
    coherence = rho[0, 1] * math.exp(-tau / T2)
    rho = np.array([[1 - p1, coherence], [np.conj(coherence), p1]])
    rho = sx @ rho @ sx.conj().T
    return float(rho[1, 1].real * math.exp(-GATE / T1))


@pytest.mark.parametrize("t_us", [5.0, 30.0])
def test_superposition_idling_dephases_as_t2(t_us: float) -> None:
    """SX, delay t, SX: the coherence exp(-t/T2) left after the wait decides P(1) (closed form, T1 included)."""
    backend = RelaxOnlyBackend()
    qc = QuantumCircuit(2, 1)
    qc.sx(0)
    qc.delay(t_us, 0, unit="us")
    qc.sx(0)
    qc.measure(0, 0)
    expected = _ramsey_p1(t_us * 1e-6)
    without_t2 = _ramsey_p1(0.0)
    assert abs(expected - without_t2) > 0.02  # the wait matters at this t
    for name, sim in _simulators(backend, None):
        p1 = float(sim.probabilities(qc, None)[0, 1])
        assert abs(p1 - expected) < _tolerance(name), f"{name}: P(1) = {p1:.5f}, closed form {expected:.5f}"


def test_scheduling_decides_where_a_waiting_qubit_idles() -> None:
    """Qubit 0 flips once while qubit 1 runs ten gates: ASAP leaves it excited for 10 gate times, ALAP does not."""
    backend = RelaxOnlyBackend()
    qc = QuantumCircuit(2, 2)
    qc.x(0)
    for _ in range(10):
        qc.x(1)
    qc.barrier()
    qc.measure([0, 1], [0, 1])
    gate_only = math.exp(-GATE / T1)  # the X's own relaxation
    expected = {None: gate_only, "alap": gate_only, "asap": math.exp(-10 * GATE / T1)}  # ASAP: X, then 9 idle
    for idle, p_expected in expected.items():
        for name, sim in _simulators(backend, idle):
            p = sim.probabilities(qc, None)[0]
            p1 = float(p[1] + p[3])  # bit 0 (qubit 0) set
            assert abs(p1 - p_expected) < _tolerance(name), f"{name}, idle={idle}: P(q0=1) = {p1:.6f} != {p_expected}"
    scheduled, _, _ = prepare_circuit(qc, backend.target, "asap")
    assert any(inst.operation.name == "delay" for inst in scheduled.data)


def test_a_delay_after_the_final_measurement_is_no_mid_circuit_measurement() -> None:
    """Idling after a qubit's last measurement (a schedule's padding) must not defer it to an ancilla."""
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    qc.delay(100, 0)
    out, stand_ins = defer_measurements(qc)
    assert stand_ins == [] and out.num_qubits == 1


def test_idle_noise_paths_agree_on_a_cut_candidate_with_mid_circuit_measurements() -> None:
    """A cut candidate's subexperiments (a mid-circuit measurement lasts microseconds): Aer and torch agree exactly."""
    backend = get_backend("fake_kolkata")
    arch = Architecture.parse("angle-y|q5|l1|rx-ry|linear|z")
    planner = CutPlanner(4, seed=0, max_qubits=backend.num_qubits)
    program = ProgramBuilder(backend, Transpiler(backend, seed=0), planner, 1024).build(arch)
    run = next(r for r in program.runs if defer_measurements(r.circuit)[1])  # one with a mid-circuit measurement
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 2 * np.pi, size=(4, run.circuit.num_parameters))
    aer_off = NoisySimulator(backend).probabilities(run.circuit, values)
    for idle in ("alap", "asap"):
        aer = NoisySimulator(backend, idle_noise=idle).probabilities(run.circuit, values)
        torch_ = TrajectorySimulator(backend, idle_noise=idle).probabilities(run.circuit, values)
        assert np.abs(aer - torch_).max() < 2e-5, idle
        assert np.abs(aer - aer_off).max() > 1e-3, f"idle noise ({idle}) changed nothing"
