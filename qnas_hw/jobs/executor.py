"""Asynchronous, retrying, ledger-backed job execution on any :class:`Backend`.

Why asyncio with threads: provider clients (qiskit runtime, boto3, Aer) are
blocking libraries that hold sockets, thread pools and C++ simulators; forking
them is unsafe, so every blocking call runs in a worker thread via
``asyncio.to_thread`` while the event loop keeps many jobs in flight.  A
per-backend ``asyncio.Semaphore`` bounds how many jobs are outstanding (queue
slots on a QPU, cores on a laptop).

Three retry levels, never mixed up:

1. a *provider call* (status poll, result fetch, re-attach) that fails
   transiently is retried on the *same job*;
2. a *submission* that raises transiently (throttling, 5xx, connection) is
   retried with exponential backoff and jitter (tenacity);
3. a *job* that ends without a result (failed at the provider, hung past the
   timeout on a local simulator, lost with a dead process) is resubmitted as a
   new attempt, recorded in the ledger; a job on a paid backend that is merely
   slow is never resubmitted (it would be paid twice): the run stops and
   ``--resume`` re-attaches to it later.

Permanent errors (bad circuit, authentication, validation) fail fast with the
provider's message and what to do about it.

A batch reports where it stands (:class:`JobProgress`: waiting, queued at the
provider, running, done) to an ``on_progress`` callback whenever a job changes
state, and once a second besides, so the CLI can show a generation's jobs
instead of minutes of silence; the library itself prints nothing.  A
:class:`StopRequest` (the CLI's Ctrl-C) is read between provider calls: at the
first request nothing more is submitted and the jobs in flight finish and are
recorded; at the second the executor stops waiting for them (the ledger holds
them as submitted, by provider job id, for ``--resume``).  Either way
:class:`JobsInterrupted` is raised once nothing is half-done.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
    wait_random_exponential,
)

from qnas_hw.hardware.backends.base import Backend, BackendError, JobHandle, JobState, JobTiming, SamplerPub
from qnas_hw.jobs.ledger import JobLedger, JobRecord, LedgerError, LedgerState, idempotency_key
from qnas_hw.jobs.usage import reported_cost

log = logging.getLogger(__name__)

T = TypeVar("T")


# ------------------------------------------------------------------ errors
class FaultKind(enum.StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class JobExecutionError(RuntimeError):
    """A job could not produce a result; the message says which job and what to do."""


class PermanentJobError(JobExecutionError):
    """Retrying cannot help (bad circuit, authentication, validation, attempts exhausted)."""


class JobFailedAtProvider(JobExecutionError):
    """The provider reports the job ended without a result (state FAILED/CANCELLED)."""

    def __init__(self, message: str, kind: FaultKind) -> None:
        super().__init__(message)
        self.kind = kind


class JobTimedOut(JobExecutionError, TimeoutError):
    """A job stayed unfinished past ``timeout_s`` (transient on a free backend: it is resubmitted)."""


class JobStillRunning(PermanentJobError):
    """A paid job outlived the timeout; it is left ``submitted`` in the ledger for ``--resume``."""


class UnsafeResubmission(PermanentJobError):
    """Resubmitting would risk paying twice for one job; the user must check the provider console."""


class JobsInterrupted(KeyboardInterrupt):
    """The user stopped a batch (:class:`StopRequest`); everything finished is in the ledger.

    A ``KeyboardInterrupt``, so every layer above unwinds (closing the study
    and ledger) as it does for Ctrl-C, and nothing catches it as a job
    failure.  ``left`` jobs had not finished: never submitted, or (``now``, a
    second request) still running at the provider, recorded as submitted so a
    resume re-attaches to them.
    """

    def __init__(self, left: int, now: bool) -> None:
        super().__init__(f"stopped with {left} job(s) unfinished" + (" (in flight ones left running)" if now else ""))
        self.left = left
        self.now = now


class StopRequest:
    """A request to stop, made outside the executor (the CLI's SIGINT handler) and read between provider calls.

    :meth:`request` only sets a counter, so it is safe in a signal handler:
    level 1 (``stopping``) submits nothing more and lets the jobs in flight
    finish and be recorded; level 2 (``stop_now``) stops waiting for them.
    ``jobs_running`` tells the handler whether a batch is there to wind down
    (when none is, the CLI stops at once).
    """

    def __init__(self) -> None:
        self.level = 0
        self._batches = 0

    def request(self) -> int:
        """One more request (one more Ctrl-C); returns the new level."""
        self.level += 1
        return self.level

    @property
    def stopping(self) -> bool:
        return self.level >= 1

    @property
    def stop_now(self) -> bool:
        return self.level >= 2

    @property
    def jobs_running(self) -> bool:
        return self._batches > 0


@dataclass(frozen=True)
class JobProgress:
    """Where one batch of jobs stands (what ``on_progress`` receives).

    ``waiting``: not submitted yet (a concurrency slot, or a retry's
    backoff); ``queued``: accepted by the provider, not running yet;
    ``running``; ``done`` (``reused`` of them answered by the ledger);
    ``failed``.  Candidates are the jobs' ``meta["arch"]`` (none for jobs
    that carry no architecture): a candidate is done when all its jobs are.
    """

    batch: str
    total: int
    waiting: int
    queued: int
    running: int
    done: int
    reused: int
    failed: int
    candidates: int
    candidates_done: int
    elapsed_s: float
    stopping: bool = False
    finished: bool = False  # the batch's last report: every job ended, or the batch stopped

    def status(self) -> str:
        """``4 running, 2 queued, 6 waiting; candidates 1/4 done`` (what a bar shows beside done/total)."""
        parts = [f"{self.running} running", f"{self.queued} queued", f"{self.waiting} waiting"]
        if self.reused:
            parts.append(f"{self.reused} from the ledger")
        if self.failed:
            parts.append(f"{self.failed} failed")
        text = ", ".join(parts)
        if self.candidates:
            text += f"; candidates {self.candidates_done}/{self.candidates} done"
        return text + ("; stopping after the jobs in flight" if self.stopping else "")


#: How often a running batch reports even when no job changed (a bar's clock, a log's heartbeat).
PROGRESS_TICK_S = 1.0


#: AWS error codes that mean "slow down / try again" (botocore ClientError ``Error.Code``).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "ServiceQuotaExceededException",  # Braket: too many queued tasks for this device
        "InternalServiceException",
        "InternalServerException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "DeviceOfflineException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_TRANSIENT_TEXT = re.compile(
    r"\b(429|500|502|503|504)\b|too many requests|throttl|rate limit|service unavailable|temporar|"
    r"timed? ?out|connection (reset|aborted|refused)|internal (server )?error|try again",
    re.IGNORECASE,
)


def _http_kind(status: int) -> FaultKind | None:
    if status == 429 or status == 408 or 500 <= status <= 599:
        return FaultKind.TRANSIENT
    if 400 <= status <= 499:
        return FaultKind.PERMANENT
    return None


def classify_error(exc: BaseException) -> FaultKind:
    """Map a provider exception to transient (retry with backoff) or permanent (fail fast).

    Ordered from most to least specific: our own errors, timeouts and
    connection failures, IBM runtime API errors (HTTP status), botocore
    client errors (AWS error code / HTTP status), then any exception carrying
    an HTTP status.  Unknown errors are permanent: retrying an unknown error on
    a paid backend could spend money for nothing.
    """
    if isinstance(exc, JobFailedAtProvider):
        return exc.kind
    if isinstance(exc, PermanentJobError | BackendError | LedgerError | ValueError | TypeError | KeyError):
        return FaultKind.PERMANENT
    if isinstance(exc, TimeoutError | ConnectionError):  # JobTimedOut, asyncio.TimeoutError, socket errors
        return FaultKind.TRANSIENT
    kind = _provider_kind(exc)
    if kind is not None:
        return kind
    status = _status_code(exc)
    if status is not None and (kind := _http_kind(status)) is not None:
        return kind
    return FaultKind.PERMANENT


def _provider_kind(exc: BaseException) -> FaultKind | None:
    """Provider-specific classes, imported lazily so a missing SDK never breaks classification."""
    try:
        import requests

        if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return FaultKind.TRANSIENT
    except ImportError:  # pragma: no cover - requests ships with both SDKs
        pass
    try:
        from qiskit.providers import JobTimeoutError
        from qiskit_ibm_runtime.api.exceptions import RequestsApiError
        from qiskit_ibm_runtime.exceptions import (
            IBMAccountError,
            IBMInputValueError,
            IBMNotAuthorizedError,
            RuntimeJobFailureError,
        )

        if isinstance(exc, JobTimeoutError):
            return FaultKind.TRANSIENT
        if isinstance(exc, IBMNotAuthorizedError | IBMAccountError | IBMInputValueError):
            return FaultKind.PERMANENT
        if isinstance(exc, RequestsApiError):
            code = int(getattr(exc, "status_code", -1))
            return _http_kind(code) or FaultKind.TRANSIENT  # -1: no response at all (network)
        if isinstance(exc, RuntimeJobFailureError):
            return FaultKind.TRANSIENT if _TRANSIENT_TEXT.search(str(exc)) else FaultKind.PERMANENT
    except ImportError:  # pragma: no cover
        pass
    try:
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return FaultKind.PERMANENT
        if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError | BotoConnectionError):
            return FaultKind.TRANSIENT
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
            if err.get("Code") in THROTTLING_CODES:
                return FaultKind.TRANSIENT
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return _http_kind(int(status)) if status else FaultKind.PERMANENT
    except ImportError:  # pragma: no cover
        pass
    return None


def _status_code(exc: BaseException) -> int | None:
    for attr in ("status_code", "status", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------ specs and outcomes
@dataclass(frozen=True)
class JobSpec:
    """One job: PUBs (one transpiled circuit + parameter array each), shots, seed, a human label."""

    pubs: tuple[SamplerPub, ...]
    shots: int
    seed: int | None = None
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.pubs:
            raise ValueError(f"job {self.label!r} has no PUBs; give at least one SamplerPub")
        if isinstance(self.shots, bool) or not isinstance(self.shots, int) or self.shots <= 0:
            raise ValueError(f"job {self.label!r}: shots must be a positive integer, got {self.shots!r}")

    @property
    def n_rows(self) -> int:
        return sum(pub.rows for pub in self.pubs)

    def key(self, backend_name: str) -> str:
        return idempotency_key(backend_name, self.pubs, self.shots, self.seed)


@dataclass(frozen=True)
class JobOutcome:
    """A finished job: counts per PUB then per parameter row, provider timing, how it was obtained."""

    key: str
    label: str
    counts: list[list[dict[str, int]]]
    provider_job_id: str | None
    submissions: int
    reused: bool
    quantum_seconds: float | None = None
    wall_seconds: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff and timeout settings; defaults suit local simulators, :meth:`for_backend` widens them for clouds."""

    max_attempts: int = 5  # submissions per job per run (job-level and submit-call retries together)
    call_attempts: int = 5  # retries of one status/result/re-attach call on the same job
    backoff_s: float = 0.5  # exponential backoff multiplier (random jitter on top)
    backoff_max_s: float = 30.0
    poll_interval_s: float = 0.05
    timeout_s: float = 600.0  # per job, from submission (or re-attach) to result
    call_timeout_s: float = 120.0  # one blocking provider call
    usage_wait_s: float = 120.0  # a paid job's usage still "pending" at the provider: ask again for this long

    def __post_init__(self) -> None:
        for name in ("max_attempts", "call_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"RetryPolicy.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("backoff_s", "backoff_max_s", "poll_interval_s", "timeout_s", "call_timeout_s", "usage_wait_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def for_backend(cls, backend: Backend, **overrides: Any) -> RetryPolicy:
        """Cloud queues take minutes to hours: poll every 5 s and wait up to a day unless told otherwise."""
        base: dict[str, Any] = {} if backend.is_simulator else {"poll_interval_s": 5.0, "timeout_s": 86400.0}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


# ------------------------------------------------------------------ executor
class AsyncExecutor:
    """Runs :class:`JobSpec` s on one backend with bounded concurrency, retries and a ledger.

    ``run(specs)`` plans every job in the ledger first (so a crash at any
    later point leaves a complete picture), then executes them concurrently;
    results come back in the order of ``specs``.  With ``resume=False`` a batch
    that already has rows in the ledger is refused, so a second run cannot
    silently mix old and new results; ``resume=True`` reuses ``done`` results
    and re-attaches ``submitted`` jobs.
    """

    def __init__(
        self,
        backend: Backend,
        ledger: JobLedger,
        *,
        concurrency: int = 4,
        policy: RetryPolicy | None = None,
        batch: str = "default",
        resume: bool = True,
        on_progress: Callable[[JobProgress], None] | None = None,
        stop: StopRequest | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
        self.backend = backend
        self.ledger = ledger
        self.concurrency = concurrency
        self.policy = policy or RetryPolicy.for_backend(backend)
        self.batch = batch
        self.resume = resume
        self.on_progress = on_progress
        self.stop = stop
        self._states: dict[str, str] = {}  # key -> waiting | queued | running | done | failed (what progress counts)
        self._reused: set[str] = set()
        self._groups: dict[str, list[str]] = {}
        self._started = time.monotonic()

    # ---------------------------------------------------------------- public
    def run_sync(self, specs: Sequence[JobSpec]) -> list[JobOutcome]:
        """``run`` in a fresh event loop whose worker pool has a thread per concurrent job."""

        async def main() -> list[JobOutcome]:
            loop = asyncio.get_running_loop()
            loop.set_default_executor(
                ThreadPoolExecutor(max_workers=2 * self.concurrency + 2, thread_name_prefix="qnas-jobs")
            )
            return await self.run(specs)

        return asyncio.run(main())

    async def run(self, specs: Sequence[JobSpec]) -> list[JobOutcome]:
        keys = self.plan(specs)
        self._track(specs, keys)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(spec: JobSpec, key: str) -> JobOutcome | None:
            async with sem:
                return await self._run_job(spec, key)

        tasks = [
            asyncio.create_task(one(s, k), name=f"job-{s.label or k[:12]}") for s, k in zip(specs, keys, strict=True)
        ]
        monitor = asyncio.create_task(self._monitor(tasks)) if self.on_progress or self.stop else None
        if self.stop is not None:
            self.stop._batches += 1
        self._emit()
        try:
            results = list(await asyncio.gather(*tasks))
        except BaseException as exc:
            for t in tasks:  # one permanent failure stops the batch; finished results are already in the ledger
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(exc, asyncio.CancelledError) and self.stop is not None and self.stop.stop_now:
                raise JobsInterrupted(self._unfinished(), now=True) from None
            raise
        finally:
            if monitor is not None:
                monitor.cancel()
                await asyncio.gather(monitor, return_exceptions=True)
            if self.stop is not None:
                self.stop._batches -= 1
            self._emit(finished=True)
        if any(r is None for r in results):  # a stop request: these were never submitted
            raise JobsInterrupted(self._unfinished(), now=False)
        return [r for r in results if r is not None]

    # ---------------------------------------------------------------- progress and stop
    def _track(self, specs: Sequence[JobSpec], keys: Sequence[str]) -> None:
        """Every job of the batch as waiting (or done, when the ledger already holds its result)."""
        self._started = time.monotonic()
        self._states, self._reused, self._groups = {}, set(), {}
        for spec, key in zip(specs, keys, strict=True):
            rec = self.ledger.get(key)
            done = rec is not None and rec.state is LedgerState.DONE
            self._states[key] = "done" if done else "waiting"
            if done:
                self._reused.add(key)
            if spec.meta.get("arch"):  # a candidate's job (readout calibrations are shared, not a candidate's)
                self._groups.setdefault(str(spec.meta["arch"]), []).append(key)

    def _set(self, key: str, state: str) -> None:
        if self._states.get(key) != state:
            self._states[key] = state
            self._emit()

    def _unfinished(self) -> int:
        return sum(state not in ("done", "failed") for state in self._states.values())

    def progress(self, finished: bool = False) -> JobProgress:
        """The batch's counts now."""
        states = list(self._states.values())
        done_groups = sum(all(self._states.get(k) == "done" for k in keys) for keys in self._groups.values())
        return JobProgress(
            batch=self.batch,
            total=len(states),
            waiting=states.count("waiting"),
            queued=states.count("queued"),
            running=states.count("running"),
            done=states.count("done"),
            reused=len(self._reused),
            failed=states.count("failed"),
            candidates=len(self._groups),
            candidates_done=done_groups,
            elapsed_s=time.monotonic() - self._started,
            stopping=self.stop is not None and self.stop.stopping,
            finished=finished,
        )

    def _emit(self, finished: bool = False) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(self.progress(finished))
        except Exception as exc:  # a display that fails must not stop (or fail) the jobs it shows
            log.warning("progress callback failed: %s", describe_error(exc))

    def _stopping(self) -> bool:
        return self.stop is not None and self.stop.stopping

    async def _monitor(self, tasks: Sequence[asyncio.Task[Any]]) -> None:
        """Report once a second; on a second stop request, stop waiting for the jobs (cancel their tasks)."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            if self.stop is not None and self.stop.stop_now:
                for t in tasks:
                    t.cancel()
                return
            if time.monotonic() - last >= PROGRESS_TICK_S:
                last = time.monotonic()
                self._emit()

    def plan(self, specs: Sequence[JobSpec]) -> list[str]:
        """Write a ``planned`` row per job (idempotent); returns the keys in order."""
        keys = [s.key(self.backend.name) for s in specs]
        if len(set(keys)) != len(keys):
            dupes = sorted({s.label for s, k in zip(specs, keys, strict=True) if keys.count(k) > 1})
            raise ValueError(f"identical jobs in one batch (same circuits, values, shots, seed): {dupes}")
        if not self.resume:
            existing = [k for k in keys if self.ledger.get(k) is not None]
            if existing:
                raise LedgerError(
                    f"{len(existing)} of these jobs are already in the ledger (batch {self.batch!r}); "
                    "pass resume=True (CLI: --resume) to reuse their results instead of running them again"
                )
        for spec, key in zip(specs, keys, strict=True):
            self.ledger.plan(
                key,
                batch=self.batch,
                label=spec.label,
                backend=self.backend.name,
                shots=spec.shots,
                n_pubs=len(spec.pubs),
                n_rows=spec.n_rows,
                meta=spec.meta,
            )
        return keys

    # ---------------------------------------------------------------- one job
    async def _run_job(self, spec: JobSpec, key: str) -> JobOutcome | None:
        """The job's outcome, or None when a stop request came before it was submitted (or re-attached)."""
        rec = self.ledger.get(key)
        assert rec is not None, "planned above"
        if rec.state is LedgerState.DONE:
            log.info("job %s (%s): reusing the ledger's result", key[:12], spec.label)
            self._set(key, "done")
            return _outcome_from_record(rec, reused=True)
        if self._stopping():
            return None
        handle = await self._recover(spec, rec)
        if handle is not None:
            self._set(key, "queued")
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_attempts),
            wait=wait_random_exponential(multiplier=self.policy.backoff_s, max=self.policy.backoff_max_s),
            retry=retry_if_exception(lambda e: classify_error(e) is FaultKind.TRANSIENT),
            before_sleep=self._log_retry(spec, key),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if handle is None:
                        if self._stopping():  # a resubmission after a failure waits for the resume too
                            self._set(key, "waiting")
                            return None
                        handle = await self._submit(spec, key)
                        self._set(key, "queued")
                    current, handle = handle, None  # a failed job is never polled again
                    outcome = await self._finish(spec, key, current)
                    self._set(key, "done")
                    return outcome
        except asyncio.CancelledError:
            raise
        except JobStillRunning:
            raise
        except Exception as exc:
            kind = classify_error(exc)
            rec = self.ledger.get(key)
            n = rec.submissions if rec else "?"
            why = "retrying cannot fix it" if kind is FaultKind.PERMANENT else f"gave up after {n} submissions"
            message = f"job {spec.label or key[:12]} on {self.backend.name} failed ({why}): {describe_error(exc)}"
            self.ledger.mark_failed(key, message)
            self._set(key, "failed")
            raise PermanentJobError(message + _hint(exc)) from exc
        raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover

    async def _recover(self, spec: JobSpec, rec: JobRecord) -> JobHandle | None:
        """What the ledger says about a previous run: re-attach, or decide whether resubmitting is safe."""
        if rec.state is LedgerState.SUBMITTED and rec.provider_job_id:
            if self.backend.supports_reattach:
                handle = await self._call(self.backend.reattach, rec.provider_job_id, what="re-attach")
                handle = _complete_reattached(handle, spec)
                self.ledger.record_event(rec.key, "reattached", rec.provider_job_id, rec.submissions)
                log.info("job %s: re-attached to provider job %s", rec.key[:12], rec.provider_job_id)
                return handle
            return self._lost(rec, f"provider job {rec.provider_job_id} ran in a process that is gone")
        if rec.state is LedgerState.SUBMITTING:
            return self._lost(rec, "the process died during the submit call; the provider may or may not have it")
        return None

    def _lost(self, rec: JobRecord, why: str) -> None:
        if self.backend.is_simulator:
            self.ledger.mark_job_error(rec.key, rec.submissions, rec.provider_job_id, f"lost: {why}")
            log.info("job %s: %s; resubmitting on free backend %s", rec.key[:12], why, self.backend.name)
            return None
        raise UnsafeResubmission(
            f"job {rec.label or rec.key[:12]} (ledger key {rec.key}) on paid backend {self.backend.name}: {why}. "
            f"It was last updated {rec.updated_at}; check the provider console for a job of that time. If it "
            "exists, wait for it and re-attach; if it does not, clear it with JobLedger.forget_submission(key) "
            "and resume. Not resubmitting automatically: that could pay twice for one job."
        )

    async def _submit(self, spec: JobSpec, key: str) -> JobHandle:
        n = self.ledger.mark_submitting(key)  # committed BEFORE the provider sees anything
        call = asyncio.ensure_future(asyncio.to_thread(self.backend.submit, list(spec.pubs), spec.shots, spec.seed))
        try:
            handle = await asyncio.wait_for(asyncio.shield(call), timeout=self.policy.call_timeout_s or None)
        except TimeoutError:
            # the provider call is still running: whether it accepted the job is unknown
            if not self.backend.is_simulator:
                raise UnsafeResubmission(
                    f"submit call for job {spec.label or key[:12]} to paid backend {self.backend.name} did not "
                    f"return within {self.policy.call_timeout_s:g} s; it may have been accepted. Check the provider "
                    "console; the ledger keeps the job as 'submitting' (see JobLedger.forget_submission)."
                ) from None
            self.ledger.mark_submit_error(key, n, "submit call timed out")
            raise JobTimedOut(f"submit call for job {spec.label or key[:12]} timed out") from None
        except asyncio.CancelledError:
            # the batch is stopping; still record what the provider accepted so a resume can re-attach
            try:
                handle = await call
            except Exception as exc:
                self.ledger.mark_submit_error(key, n, describe_error(exc))
                raise asyncio.CancelledError() from exc
            self.ledger.mark_submitted(key, handle.job_id, n)
            raise
        except Exception as exc:
            self.ledger.mark_submit_error(key, n, describe_error(exc))
            raise
        job_id = await self._call(lambda: handle.job_id, what="job id")
        self.ledger.mark_submitted(key, job_id, n)
        log.debug("job %s (%s): submission %d is provider job %s", key[:12], spec.label, n, job_id)
        return handle

    async def _finish(self, spec: JobSpec, key: str, handle: JobHandle) -> JobOutcome:
        job_id = handle.job_id
        try:
            await self._wait(handle, spec, key)
            counts = await self._call(handle.counts, what="result")
            timing = await self._final_usage(handle, await self._call(handle.timing, what="timing"))
        except (JobFailedAtProvider, JobTimedOut) as exc:
            rec = self.ledger.get(key)
            self.ledger.mark_job_error(key, rec.submissions if rec else 0, job_id, describe_error(exc))
            if isinstance(exc, JobTimedOut):
                await self._cancel(handle)
            raise
        except JobExecutionError:
            raise
        except Exception as exc:
            if classify_error(exc) is FaultKind.PERMANENT:
                raise
            # polls kept failing: the job itself may be fine. Free: run it again. Paid: never resubmit.
            if not self.backend.is_simulator:
                raise JobStillRunning(
                    f"lost contact with provider job {job_id} on {self.backend.name} ({describe_error(exc)}); "
                    "it stays 'submitted' in the ledger: resume later (CLI: --resume) to re-attach to it"
                ) from exc
            rec = self.ledger.get(key)
            self.ledger.mark_job_error(key, rec.submissions if rec else 0, job_id, describe_error(exc))
            raise
        _check_counts(counts, spec, job_id)
        rec = self.ledger.get(key)
        submissions = rec.submissions if rec else 0
        result = {
            "counts": counts,
            "timing": _timing_dict(timing),
            "provider_job_id": job_id,
            # the provider's own figure, marked with what it is, beside the prediction in the row's meta
            "reported": reported_cost(timing, simulator=self.backend.is_simulator),
        }
        self.ledger.mark_done(key, result)
        return JobOutcome(
            key=key,
            label=spec.label,
            counts=counts,
            provider_job_id=job_id,
            submissions=submissions,
            reused=False,
            quantum_seconds=timing.quantum_seconds,
            wall_seconds=timing.wall_seconds,
        )

    async def _final_usage(self, handle: JobHandle, timing: JobTiming) -> JobTiming:
        """A paid job's timing once the provider's usage is final: IBM computes it after the job ends (``pending``).

        Asked again every poll interval for at most ``usage_wait_s``, so the
        ledger keeps the figure the job is billed at rather than none; past
        that the row is stored without it (the counts are never held back).
        """
        deadline = time.monotonic() + self.policy.usage_wait_s
        while (
            not self.backend.is_simulator
            and timing.quantum_seconds is None
            and timing.extra.get("usage_source") == "pending"
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(self.policy.poll_interval_s)
            timing = await self._call(handle.timing, what="timing")
        return timing

    async def _wait(self, handle: JobHandle, spec: JobSpec, key: str | None = None) -> None:
        """Poll until the job is final; a timeout on a paid backend leaves the job to ``--resume``."""
        deadline = time.monotonic() + self.policy.timeout_s
        while True:
            state = await self._call(handle.state, what="status")
            if state is JobState.DONE:
                return
            if key is not None and state in (JobState.QUEUED, JobState.RUNNING):
                self._set(key, "running" if state is JobState.RUNNING else "queued")
            if state in (JobState.FAILED, JobState.CANCELLED):
                raise JobFailedAtProvider(
                    f"provider job {handle.job_id} ended {state.value}: {await self._failure_reason(handle)}",
                    self._job_failure_kind(handle),
                )
            if time.monotonic() >= deadline:
                msg = f"job {spec.label or handle.job_id} not finished after {self.policy.timeout_s:g} s"
                if not self.backend.is_simulator:
                    raise JobStillRunning(
                        f"{msg} on paid backend {self.backend.name} (provider job {handle.job_id}); it is still "
                        "queued or running there and stays 'submitted' in the ledger. Resume later (CLI: "
                        "--resume) to re-attach to it; it will not be submitted again."
                    )
                raise JobTimedOut(msg)
            await asyncio.sleep(self.policy.poll_interval_s)

    async def _failure_reason(self, handle: JobHandle) -> str:
        try:
            await asyncio.wait_for(asyncio.to_thread(handle.counts), timeout=self.policy.call_timeout_s or None)
        except Exception as exc:
            handle._qnas_failure = exc  # type: ignore[attr-defined]  # kept for _job_failure_kind
            return describe_error(exc)
        return "no error message"

    def _job_failure_kind(self, handle: JobHandle) -> FaultKind:
        """A failed job is retried when its error is transient (internal error) or the backend is free."""
        exc = getattr(handle, "_qnas_failure", None)
        if exc is not None and classify_error(exc) is FaultKind.PERMANENT and not _TRANSIENT_TEXT.search(str(exc)):
            return FaultKind.PERMANENT
        return FaultKind.TRANSIENT

    async def _cancel(self, handle: JobHandle) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(handle.cancel), timeout=10)
        except BaseException as exc:  # best effort: a hung local job is abandoned either way
            log.debug("cancel of %s failed: %s", handle.job_id, exc)

    async def _call(self, fn: Callable[..., T], *args: Any, what: str) -> T:
        """One blocking provider call in a thread, retried on transient errors (never resubmits)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.call_attempts),
            wait=wait_exponential_jitter(multiplier=self.policy.backoff_s, max=self.policy.backoff_max_s),
            retry=retry_if_exception(
                lambda e: classify_error(e) is FaultKind.TRANSIENT and not isinstance(e, JobExecutionError)
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout=self.policy.call_timeout_s or None)
        raise AssertionError("unreachable")  # pragma: no cover

    def _log_retry(self, spec: JobSpec, key: str) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            self._set(key, "waiting")  # until it is submitted again
            exc = state.outcome.exception() if state.outcome else None
            self.ledger.record_event(key, "retry", describe_error(exc) if exc else None, state.attempt_number)
            log.warning(
                "job %s attempt %d failed transiently (%s); retrying in %.2f s",
                spec.label or key[:12],
                state.attempt_number,
                describe_error(exc) if exc else "?",
                state.next_action.sleep if state.next_action else 0.0,
            )

        return before_sleep


# ------------------------------------------------------------------ helpers
def _outcome_from_record(rec: JobRecord, reused: bool) -> JobOutcome:
    timing = (rec.result or {}).get("timing", {})
    return JobOutcome(
        key=rec.key,
        label=rec.label,
        counts=rec.counts,
        provider_job_id=rec.provider_job_id,
        submissions=rec.submissions,
        reused=reused,
        quantum_seconds=timing.get("quantum_seconds"),
        wall_seconds=timing.get("wall_seconds"),
    )


def _timing_dict(timing: JobTiming) -> dict[str, Any]:
    return {"quantum_seconds": timing.quantum_seconds, "wall_seconds": timing.wall_seconds, "extra": timing.extra}


def _check_counts(counts: list[list[dict[str, int]]], spec: JobSpec, job_id: str) -> None:
    """A result with the wrong number of PUBs/rows must never be stored as if it were this job's."""
    if len(counts) != len(spec.pubs):
        raise PermanentJobError(f"provider job {job_id} returned {len(counts)} PUB results for {len(spec.pubs)} PUBs")
    rows = sum(len(c) for c in counts)
    if rows != spec.n_rows:
        raise PermanentJobError(f"provider job {job_id} returned {rows} parameter rows, expected {spec.n_rows}")


def _complete_reattached(handle: JobHandle, spec: JobSpec) -> JobHandle:
    """A re-attached Braket cloud job needs the submitted circuits to map bits back to qiskit clbits."""
    from qnas_hw.hardware.backends.braket import BraketCloudJob, to_braket

    if isinstance(handle, BraketCloudJob) and getattr(handle, "_programs", None) is None:
        return BraketCloudJob(list(handle._tasks), [to_braket(p.circuit) for p in spec.pubs])
    return handle


def _hint(exc: BaseException) -> str:
    text = str(exc).lower()
    if "unreachable" in text:
        return ""  # a network problem: the message already says so, credentials are not the cause
    if any(w in text for w in ("auth", "credential", "token", "401", "403", "forbidden")):
        return " -- check the provider credentials (IBM: QiskitRuntimeService.save_account; AWS: aws configure)"
    if any(w in text for w in ("parameter", "circuit", "qubit", "validation", "invalid")):
        return " -- the circuit or its parameters were rejected; re-transpile for this backend"
    return ""
