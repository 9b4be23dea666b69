"""What every qiskit-primitive backend shares: job states, PUB tuples, the job handle, scheduled durations.

Its own module so that the Aer and IBM backends both import it and neither
imports the other's job machinery (they used to import each other).
"""

from __future__ import annotations

import datetime as dt
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
        """Provider-reported QPU usage (IBM runtime jobs) and our wall clock; re-read on every call.

        ``metrics()`` is read once per call: its ``usage`` block is what
        ``RuntimeJobV2.usage()`` itself returns, so a second request is not
        needed; ``usage()`` is only asked when the payload has no usage figure.
        ``quantum_seconds`` stays ``None`` while IBM still computes the usage
        (status ``pending``), and for local jobs, which report 0.
        """
        self.result()
        metrics = self._metrics()
        seconds, source = reported_usage(metrics) if metrics is not None else (None, "no metrics")
        if seconds is None and source in ("no metrics", "no usage figure"):
            seconds, source = self._usage_call()
        extra: dict[str, Any] = {} if source == "no usage" else {"usage_source": source}
        if metrics is not None:
            extra["metrics"] = metrics
            running = running_seconds(metrics)
            if running is not None:
                extra["running_to_finished_s"] = running
        return JobTiming(quantum_seconds=seconds, wall_seconds=self._wall, extra=extra)

    def _metrics(self) -> dict[str, Any] | None:
        metrics = getattr(self._job, "metrics", None)
        if metrics is None:
            return None
        try:
            data = metrics()
        except Exception as exc:  # local primitive jobs have no metrics; a network error must not lose the counts
            log.debug("job %s has no metrics: %s", self.job_id, exc)
            return None
        return data if isinstance(data, dict) else None

    def _usage_call(self) -> tuple[float | None, str]:
        usage = getattr(self._job, "usage", None)
        if usage is None:
            return None, "no usage"
        try:
            value = usage()
        except Exception as exc:  # local jobs may not implement usage
            log.debug("job %s has no usage: %s", self.job_id, exc)
            return None, "no usage"
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value), "usage()"
        return None, f"usage() = {value!r}"

    def cancel(self) -> None:
        try:
            self._job.cancel()
        except Exception as exc:  # best effort by contract
            log.warning("could not cancel job %s: %s", self.job_id, exc)


#: Keys of a runtime job's ``metrics()["usage"]`` block that hold its QPU seconds, in the order they are read:
#: ``qpu_charge_time_seconds`` is what qiskit-ibm-runtime 0.51's ``RuntimeJobV2.usage()`` returns; the older
#: ``quantum_seconds`` and ``seconds`` fields of the same block are read when it is absent.
USAGE_KEYS: tuple[str, ...] = ("qpu_charge_time_seconds", "quantum_seconds", "seconds")


def reported_usage(metrics: dict[str, Any]) -> tuple[float | None, str]:
    """QPU seconds from a ``RuntimeJobV2.metrics()`` payload and where they came from (or why there are none).

    Mirrors ``RuntimeJobV2.usage()`` (qiskit-ibm-runtime 0.51): while
    ``usage.status`` is ``pending`` the figure is not final and nothing is
    returned.  A figure of 0 is what local (``LocalRuntimeJob``) jobs and
    system-failed jobs report: no QPU time, so ``None``.
    """
    usage = metrics.get("usage")
    if not isinstance(usage, dict):
        return None, "no usage figure"
    if str(usage.get("status", "")).lower() == "pending":
        return None, "pending"
    for key in USAGE_KEYS:
        value = usage.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (float(value), f"metrics.usage.{key}") if value > 0 else (None, f"metrics.usage.{key} = {value}")
    return None, "no usage figure"


def running_seconds(metrics: dict[str, Any]) -> float | None:
    """Seconds from the ``running`` to the ``finished`` timestamp of a job's metrics (ISO 8601, ``Z`` = UTC)."""
    stamps = metrics.get("timestamps")
    if not isinstance(stamps, dict):
        return None
    try:
        start = dt.datetime.fromisoformat(str(stamps["running"]).replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(str(stamps["finished"]).replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


def target_duration(transpiled: QuantumCircuit, target: Target | None) -> float:
    """Scheduled seconds of one shot from the target's instruction durations (0 without a target)."""
    if target is None:
        return 0.0
    return float(transpiled.estimate_duration(target, unit="s"))
