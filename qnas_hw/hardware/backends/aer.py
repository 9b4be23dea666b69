"""Qiskit Aer simulators and the job handle shared by every qiskit-primitive backend.

``aer_ideal`` is the noiseless reference (all-to-all, no durations);
``aer_noisy`` simulates an IBM snapshot's noise model (default: fake_kolkata)
directly with Aer's SamplerV2, without the runtime's local-testing layer.
Both are local: their cost model is wall-clock, fitted by ``qnas-hw calibrate``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.transpiler import Target

from qnas_hw.hardware.backends.base import Backend, BackendError, JobHandle, JobState, JobTiming, SamplerPub

log = logging.getLogger(__name__)

_STATUS = {
    "INITIALIZING": JobState.QUEUED,
    "QUEUED": JobState.QUEUED,
    "VALIDATING": JobState.QUEUED,
    "RUNNING": JobState.RUNNING,
    "DONE": JobState.DONE,
    "ERROR": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
}

#: Basis of the ideal simulator: small and universal so gate counts mean something.
IDEAL_BASIS = ["rz", "sx", "x", "cx", "measure", "reset", "delay"]


def job_state_from_status(status: Any) -> JobState:
    """Map a qiskit ``JobStatus`` (enum or string, per provider) to :class:`JobState`."""
    name = getattr(status, "name", None) or str(status).split(".")[-1]
    return _STATUS.get(name.upper(), JobState.RUNNING)


def pub_tuple(pub: SamplerPub) -> tuple[Any, ...]:
    """A qiskit primitive PUB from ours (values omitted for unparameterised circuits; shots when set)."""
    if pub.circuit.num_parameters == 0:
        return (pub.circuit,) if pub.shots is None else (pub.circuit, None, int(pub.shots))
    if pub.parameter_values is None:
        raise BackendError(
            f"circuit {pub.circuit.name!r} has {pub.circuit.num_parameters} parameters but no parameter_values"
        )
    values = np.asarray(pub.parameter_values, dtype=float)
    if values.shape[-1] != pub.circuit.num_parameters:
        raise BackendError(
            f"parameter_values last axis is {values.shape[-1]}, circuit {pub.circuit.name!r} "
            f"has {pub.circuit.num_parameters} parameters (order: circuit.parameters)"
        )
    return (pub.circuit, values) if pub.shots is None else (pub.circuit, values, int(pub.shots))


class PrimitiveJobHandle(JobHandle):
    """Wraps a qiskit primitive job (Aer ``PrimitiveJob``, runtime ``LocalRuntimeJob``/``RuntimeJobV2``).

    ``wall_seconds`` is measured from submission to the first time the result
    is read here, so callers that wait on it promptly (the executor,
    calibration) get the true turnaround.
    """

    def __init__(self, job: Any, submitted_at: float | None = None) -> None:
        self._job = job
        self._submitted = time.perf_counter() if submitted_at is None else submitted_at
        self._result: Any = None
        self._wall: float | None = None

    @property
    def job_id(self) -> str:
        return str(self._job.job_id())

    def state(self) -> JobState:
        if self._result is not None:
            return JobState.DONE
        return job_state_from_status(self._job.status())

    def result(self) -> Any:
        """The primitive result, fetched once (blocks until the job finishes)."""
        if self._result is None:
            self._result = self._job.result()
            self._wall = time.perf_counter() - self._submitted
        return self._result

    def counts(self) -> list[list[dict[str, int]]]:
        out: list[list[dict[str, int]]] = []
        for pub_result in self.result():
            bits = pub_result.join_data()
            out.append([bits.get_counts(loc=idx) for idx in np.ndindex(bits.shape)])
        return out

    def timing(self) -> JobTiming:
        self.result()
        return JobTiming(quantum_seconds=self._quantum_seconds(), wall_seconds=self._wall, extra=self._extra())

    def _quantum_seconds(self) -> float | None:
        """Provider-reported QPU usage (IBM runtime jobs); local jobs have none."""
        usage = getattr(self._job, "usage", None)
        if usage is None:
            return None
        try:
            value = usage()
        except Exception as exc:  # local jobs may not implement usage
            log.debug("job %s has no usage: %s", self.job_id, exc)
            return None
        return float(value) if isinstance(value, int | float) and value > 0 else None

    def _extra(self) -> dict[str, Any]:
        metrics = getattr(self._job, "metrics", None)
        if metrics is None:
            return {}
        try:
            data = metrics()
        except Exception as exc:
            log.debug("job %s has no metrics: %s", self.job_id, exc)
            return {}
        return {"metrics": data} if isinstance(data, dict) else {}

    def cancel(self) -> None:
        try:
            self._job.cancel()
        except Exception as exc:  # best effort by contract
            log.warning("could not cancel job %s: %s", self.job_id, exc)


def target_duration(transpiled: QuantumCircuit, target: Target | None) -> float:
    """Scheduled seconds of one shot from the target's instruction durations (0 without a target)."""
    if target is None:
        return 0.0
    return float(transpiled.estimate_duration(target, unit="s"))


class AerBackend(Backend):
    """Aer simulator, ideal or with a fake IBM device's noise model and coupling map."""

    provider = "aer"

    def __init__(self, name: str, noise_from: str | None = None) -> None:
        from qiskit_aer import AerSimulator

        self.name = name
        self._noise_from = noise_from
        if noise_from is None:
            self._sim = AerSimulator()
            self._device = None
        else:
            from qnas_hw.hardware.backends.ibm import fake_backend_instance

            self._device = fake_backend_instance(noise_from)
            self._sim = AerSimulator.from_backend(self._device)

    @property
    def num_qubits(self) -> int:
        return int(self._device.num_qubits if self._device is not None else self._sim.num_qubits)

    @property
    def coupling_edges(self) -> list[tuple[int, int]] | None:
        if self._device is None:
            return None
        return [tuple(e) for e in self._device.coupling_map.get_edges()]  # type: ignore[misc]

    @property
    def topology_kind(self) -> str:
        if self._device is None:
            return "all-to-all"
        from qnas_hw.hardware.backends.ibm import ibm_topology

        return ibm_topology(self._device)

    @property
    def basis_gates(self) -> list[str]:
        if self._device is None:
            return list(IDEAL_BASIS)
        return sorted(self._device.operation_names)

    @property
    def target(self) -> Target | None:
        return None if self._device is None else self._device.target

    def credentials_present(self) -> bool:
        return True  # local, nothing to authenticate

    def transpile(self, circuit: QuantumCircuit, optimization_level: int = 1, seed: int = 0) -> QuantumCircuit:
        if self._device is None:
            return transpile(
                circuit, basis_gates=IDEAL_BASIS, optimization_level=optimization_level, seed_transpiler=seed
            )
        return transpile(circuit, self._device, optimization_level=optimization_level, seed_transpiler=seed)

    def scheduled_duration(self, transpiled: QuantumCircuit) -> float:
        return target_duration(transpiled, self.target)

    def submit(self, pubs: Sequence[SamplerPub], shots: int, seed: int | None = None) -> JobHandle:
        from qiskit_aer.primitives import SamplerV2

        sampler = SamplerV2.from_backend(self._sim, seed=seed, default_shots=shots)
        started = time.perf_counter()
        job = sampler.run([pub_tuple(p) for p in pubs], shots=shots)
        return PrimitiveJobHandle(job, submitted_at=started)

    def describe(self) -> dict[str, Any]:
        row = super().describe()
        row["noise_from"] = self._noise_from
        return row
