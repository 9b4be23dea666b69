"""A fault-injecting wrapper around a real backend, for tests and the benchmark.

Every job still runs on the wrapped backend (Aer, a fake IBM snapshot...);
the wrapper only adds the failures real providers produce, raising the
providers' own exception classes so the executor's classifier is exercised on
what it will meet in production:

* submission failures at a set rate (IBM ``RequestsApiError`` 503 /
  connection errors),
* throttling (botocore ``ClientError`` ``ThrottlingException`` / IBM 429),
* jobs that end FAILED at the provider (``RuntimeJobFailureError``),
* jobs that hang (stay RUNNING forever, past any timeout),
* transient errors on status polls,
* death mid-batch: after ``die_after`` successful submissions every further
  submission fails permanently (the provider went away).

Fault decisions are a deterministic function of the job's content and its
submission number (not of thread timing), and ``max_faults_per_job`` bounds
them, so a test knows exactly how many submissions each job needs.
``paid=True`` makes the wrapper *claim* to be a paid QPU with re-attachable
jobs (the wrapper keeps its jobs by id, as a cloud provider would), to test
the paths that must never resubmit.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qnas_hw.hardware.backends.base import (
    Backend,
    BackendError,
    DelegatingBackend,
    JobHandle,
    JobState,
    JobTiming,
    SamplerPub,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultPlan:
    """Rates in [0, 1] per submission; at most ``max_faults_per_job`` injected faults per job."""

    submit_error_rate: float = 0.0
    throttle_rate: float = 0.0
    job_failure_rate: float = 0.0
    hang_rate: float = 0.0
    poll_error_rate: float = 0.0
    die_after: int | None = None
    max_faults_per_job: int = 2
    seed: int = 0
    submit_delay_s: float = 0.0  # slows every submission (the SIGKILL test needs time to kill mid-batch)

    def __post_init__(self) -> None:
        for name in ("submit_error_rate", "throttle_rate", "job_failure_rate", "hang_rate", "poll_error_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FaultPlan.{name} must be in [0, 1], got {value!r}")
        if self.die_after is not None and self.die_after < 0:
            raise ValueError(f"FaultPlan.die_after must be >= 0 or None, got {self.die_after!r}")


def pubs_fingerprint(pubs: Sequence[SamplerPub], shots: int, seed: int | None) -> str:
    """Content hash of a submission (parameter values, circuit sizes, shots, seed), stable across processes."""
    h = hashlib.sha256(f"{shots}|{seed}|{len(pubs)}".encode())
    for pub in pubs:
        h.update(f"|{pub.circuit.num_qubits}|{pub.circuit.size()}|{pub.circuit.num_parameters}".encode())
        if pub.shots is not None:
            h.update(f"|shots{pub.shots}".encode())
        if pub.parameter_values is not None:
            h.update(np.ascontiguousarray(np.asarray(pub.parameter_values, dtype=np.float64)).tobytes())
    return h.hexdigest()


def _uniform(*parts: Any) -> float:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _throttle_error(kind: int) -> Exception:
    if kind % 2 == 0:
        from botocore.exceptions import ClientError

        return ClientError(
            {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}, "ResponseMetadata": {}},
            "CreateQuantumTask",
        )
    from qiskit_ibm_runtime.api.exceptions import RequestsApiError

    return RequestsApiError("'429 Client Error: Too Many Requests for url: .../jobs'", status_code=429)


def _submit_error(kind: int) -> Exception:
    if kind % 2 == 0:
        from qiskit_ibm_runtime.api.exceptions import RequestsApiError

        return RequestsApiError("'503 Server Error: Service Unavailable for url: .../jobs'", status_code=503)
    return ConnectionError("Connection reset by peer (injected)")


class FaultyJob(JobHandle):
    """Wraps a real job; may pretend to hang, fail at the provider, or fail status polls."""

    def __init__(
        self,
        inner: JobHandle | None,
        mode: str,
        owner: FaultyBackend,
        fingerprint: str,
        submission: int,
        request: tuple[list[SamplerPub], int, int | None],
    ) -> None:
        self._inner = inner  # None: the provider never runs it (hung in its queue / failed at validation)
        self._mode = mode  # "ok" | "fail" | "hang"
        self._owner = owner
        self._fp = fingerprint
        self._submission = submission
        self._request = request  # what was submitted, so a healed hung job can really run
        self._polls = 0
        self._id = inner.job_id if inner is not None else f"injected-{mode}-{fingerprint[:12]}-{submission}"
        self.cancelled = False

    @property
    def job_id(self) -> str:
        return self._id

    def _real(self) -> JobHandle:
        if self._inner is None:
            raise BackendError(f"job {self.job_id} has no real job behind it (injected {self._mode})")
        return self._inner

    def state(self) -> JobState:
        self._polls += 1
        plan = self._owner.plan
        if (
            plan.poll_error_rate > 0
            and self._polls <= 2
            and _uniform(plan.seed, "poll", self._fp, self._submission, self._polls) < plan.poll_error_rate
        ):
            self._owner._count("poll_errors")
            raise TimeoutError(f"status poll of {self.job_id} timed out (injected)")
        if self._mode == "hang":
            return JobState.CANCELLED if self.cancelled else JobState.RUNNING
        if self._mode == "fail":
            return JobState.FAILED
        return self._real().state()

    def counts(self) -> list[list[dict[str, int]]]:
        if self._mode == "fail":
            from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError

            raise RuntimeJobFailureError(f"Unable to retrieve job result. Job {self.job_id} failed: Internal error")
        if self._mode == "hang":
            raise BackendError(f"job {self.job_id} hangs (injected); its result is never read")
        return self._real().counts()

    def timing(self) -> JobTiming:
        return self._real().timing()

    def cancel(self) -> None:
        self.cancelled = True
        self._owner._count("cancels")


class FaultyBackend(DelegatingBackend):
    """Delegates description and execution to ``inner``; injects the faults of ``plan``."""

    def __init__(self, inner: Backend, plan: FaultPlan | None = None, *, paid: bool = False) -> None:
        super().__init__(inner)  # same name, so the same ledger keys: results must match a fault-free run
        self.plan = plan or FaultPlan()
        self.paid = paid
        self._lock = threading.Lock()
        self.submissions: Counter[str] = Counter()  # fingerprint -> backend.submit calls
        self.injected: Counter[str] = Counter()  # fault kind -> count
        self._faults_per_job: Counter[str] = Counter()
        self._accepted = 0
        self._jobs: dict[str, FaultyJob] = {}  # provider-side job store (for paid re-attach)

    # description: delegated (DelegatingBackend); a paid wrapper claims a cloud QPU's semantics
    @property
    def is_simulator(self) -> bool:
        return False if self.paid else self.inner.is_simulator

    @property
    def supports_reattach(self) -> bool:
        return True if self.paid else self.inner.supports_reattach

    # faults
    def _count(self, what: str) -> None:
        with self._lock:
            self.injected[what] += 1

    def _decide(self, fp: str, n: int) -> str:
        """The fault for submission ``n`` of job ``fp``: deterministic, bounded per job."""
        p = self.plan
        with self._lock:
            if self._faults_per_job[fp] >= p.max_faults_per_job:
                return "ok"
        u = _uniform(p.seed, fp, n)
        edges = [
            ("submit_error", p.submit_error_rate),
            ("throttle", p.throttle_rate),
            ("fail", p.job_failure_rate),
            ("hang", p.hang_rate),
        ]
        acc = 0.0
        for kind, rate in edges:
            acc += rate
            if u < acc:
                with self._lock:
                    self._faults_per_job[fp] += 1
                return kind
        return "ok"

    def submit(self, pubs: Sequence[SamplerPub], shots: int, seed: int | None = None) -> JobHandle:
        fp = pubs_fingerprint(pubs, shots, seed)
        with self._lock:
            self.submissions[fp] += 1
            n = self.submissions[fp]
            dead = self.plan.die_after is not None and self._accepted >= self.plan.die_after
        if self.plan.submit_delay_s:
            time.sleep(self.plan.submit_delay_s)
        if dead:
            self._count("dead")
            raise BackendError(f"{self.name}: backend went away after {self.plan.die_after} jobs (injected)")
        mode = self._decide(fp, n)
        if mode == "submit_error":
            self._count(mode)
            raise _submit_error(n)
        if mode == "throttle":
            self._count(mode)
            raise _throttle_error(n)
        # hung and failing jobs never run: like a stuck provider queue, they cost no local CPU
        inner = self.inner.submit(pubs, shots, seed) if mode == "ok" else None
        job = FaultyJob(inner, mode, self, fp, n, (list(pubs), shots, seed))
        if mode != "ok":
            self._count(mode)
        with self._lock:
            self._accepted += 1
            self._jobs[job.job_id] = job
        return job

    def reattach(self, job_id: str) -> JobHandle:
        if not self.paid:
            return self.inner.reattach(job_id)
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise BackendError(f"{self.name}: no job {job_id!r} at the provider")
        self._count("reattach")
        return job

    def heal(self, plan: FaultPlan | None = None) -> None:
        """Replace the fault plan (e.g. the provider came back); jobs already submitted keep their mode
        except hung ones, which now finish (a queue that was stuck starts moving)."""
        with self._lock:
            self.plan = plan or FaultPlan()
            self._heal_jobs()

    def _heal_jobs(self) -> None:
        for job in self._jobs.values():
            if job._mode == "hang" and not job.cancelled:
                job._inner = self.inner.submit(*job._request)
                job._mode = "ok"
