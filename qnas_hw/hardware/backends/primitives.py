"""What every qiskit-primitive backend shares: job states, PUB tuples, the job handle, scheduled durations.

Its own module so that the Aer and IBM backends both import it and neither
imports the other's job machinery (they used to import each other).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.transpiler import Target

from qnas_hw.hardware.backends.base import BackendError, JobHandle, JobState, JobTiming, SamplerPub

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
