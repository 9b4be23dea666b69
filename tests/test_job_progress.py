"""A batch of jobs reports where it stands, and a stop request winds it down without losing or repeating a job.

The backend holds its jobs "running" until the test opens a gate, like a QPU
queue, so a stop request lands while jobs are in flight on every machine; the
jobs themselves run on Aer (seeded), so a resumed batch's counts are compared
exactly with an uninterrupted one's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from qnas_hw.hardware.backends import SamplerPub, get_backend
from qnas_hw.hardware.backends.base import DelegatingBackend, JobHandle, JobState, JobTiming
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.jobs import AsyncExecutor, JobLedger, JobProgress, JobsInterrupted, JobSpec, LedgerState, StopRequest
from qnas_hw.jobs.executor import RetryPolicy
from qnas_hw.model.circuits import parameter_values
from qnas_hw.model.space import Architecture

ARCH = Architecture("angle-y", 2, 1, "ry", "linear")
FAST = RetryPolicy(backoff_s=0.01, backoff_max_s=0.05, poll_interval_s=0.01, timeout_s=60.0)


class _GatedHandle(JobHandle):
    """A real job that reports RUNNING until the gate opens."""

    def __init__(self, inner: JobHandle, gate: threading.Event) -> None:
        self.inner = inner
        self.gate = gate

    @property
    def job_id(self) -> str:
        return self.inner.job_id

    def state(self) -> JobState:
        return self.inner.state() if self.gate.is_set() else JobState.RUNNING

    def counts(self) -> list[list[dict[str, int]]]:
        return self.inner.counts()

    def timing(self) -> JobTiming:
        return self.inner.timing()


class GatedBackend(DelegatingBackend):
    """Aer behind a gate, keeping its jobs by id like a provider (so a resume re-attaches)."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__(get_backend("aer_ideal"))
        self.gate = gate
        self.jobs: dict[str, JobHandle] = {}
        self.submitted = 0

    @property
    def supports_reattach(self) -> bool:
        return True

    def submit(self, pubs: Sequence[SamplerPub], shots: int, seed: int | None = None) -> JobHandle:
        handle = self.inner.submit(pubs, shots, seed)
        self.jobs[handle.job_id] = handle
        self.submitted += 1
        return _GatedHandle(handle, self.gate)

    def reattach(self, job_id: str) -> JobHandle:
        return _GatedHandle(self.jobs[job_id], self.gate)


def _specs(backend: Any, n: int) -> list[JobSpec]:
    circuit = Transpiler(backend, seed=0).transpile(ARCH).circuit
    rng = np.random.default_rng(5)
    weights = rng.uniform(0, 2 * np.pi, ARCH.n_weights)
    out = []
    for i in range(n):
        values = parameter_values(circuit, ARCH, rng.uniform(0, np.pi, (3, ARCH.n_inputs)), weights)
        arch = f"cand{i // 2}"  # two jobs per candidate, like a chunked candidate
        out.append(JobSpec((SamplerPub(circuit, values),), 32, seed=100 + i, label=f"job{i}", meta={"arch": arch}))
    return out


@pytest.fixture()
def gate() -> threading.Event:
    return threading.Event()


def test_progress_reports_waiting_running_done_per_candidate(tmp_path, gate) -> None:
    backend = GatedBackend(gate)
    seen: list[JobProgress] = []

    def on_progress(p: JobProgress) -> None:
        seen.append(p)
        if p.running == 2:
            gate.set()  # both slots busy: let the jobs finish

    ledger = JobLedger(tmp_path / "ledger.sqlite")
    try:
        executor = AsyncExecutor(backend, ledger, concurrency=2, policy=FAST, on_progress=on_progress)
        outcomes = executor.run_sync(_specs(backend, 6))
    finally:
        ledger.close()
    assert len(outcomes) == 6
    first, last = seen[0], seen[-1]
    assert (first.total, first.waiting, first.done, first.candidates, first.candidates_done) == (6, 6, 0, 3, 0)
    assert any(p.running == 2 and p.waiting == 4 for p in seen)  # concurrency bounds what is in flight
    assert last.finished and (last.done, last.waiting, last.running, last.candidates_done) == (6, 0, 0, 3)
    assert "candidates 3/3 done" in last.status()


def test_first_stop_request_lets_jobs_in_flight_finish_and_submits_nothing_more(tmp_path, gate) -> None:
    backend = GatedBackend(gate)
    stop = StopRequest()
    specs = _specs(backend, 5)

    def on_progress(p: JobProgress) -> None:
        if p.running == 2 and not stop.stopping:
            stop.request()  # the first Ctrl-C, with two jobs in flight and three waiting
            gate.set()

    path = tmp_path / "ledger.sqlite"
    ledger = JobLedger(path)
    try:
        executor = AsyncExecutor(backend, ledger, concurrency=2, policy=FAST, on_progress=on_progress, stop=stop)
        with pytest.raises(JobsInterrupted) as info:
            executor.run_sync(specs)
        assert isinstance(info.value, KeyboardInterrupt) and info.value.left == 3 and not info.value.now
        rows = {r.label: r for r in ledger.jobs()}
        assert [rows[s.label].state for s in specs].count(LedgerState.DONE) == 2  # in flight: finished, recorded
        assert all(r.submissions == 0 for r in rows.values() if r.state is not LedgerState.DONE)  # never sent
        assert backend.submitted == 2

        resumed = AsyncExecutor(backend, ledger, concurrency=2, policy=FAST).run_sync(specs)
    finally:
        ledger.close()
    assert sum(o.reused for o in resumed) == 2 and backend.submitted == 5  # nothing paid twice
    assert _counts(resumed) == _reference(tmp_path, specs)


def test_second_stop_request_stops_waiting_and_the_resume_reattaches(tmp_path, gate) -> None:
    backend = GatedBackend(gate)
    stop = StopRequest()
    specs = _specs(backend, 5)

    def on_progress(p: JobProgress) -> None:
        if p.running == 2 and not stop.stopping:
            stop.request()
            stop.request()  # Ctrl-C twice: do not wait for the jobs in flight (the gate stays shut)

    ledger = JobLedger(tmp_path / "ledger.sqlite")
    try:
        executor = AsyncExecutor(backend, ledger, concurrency=2, policy=FAST, on_progress=on_progress, stop=stop)
        with pytest.raises(JobsInterrupted) as info:
            executor.run_sync(specs)
        assert info.value.now and info.value.left == 5
        rows = ledger.jobs()
        in_flight = [r for r in rows if r.state is LedgerState.SUBMITTED]
        assert len(in_flight) == 2 and all(r.provider_job_id for r in in_flight)  # recorded for the resume
        assert not any(r.state in (LedgerState.DONE, LedgerState.SUBMITTING) for r in rows)  # nothing half-written

        gate.set()  # the provider finished them meanwhile
        resumed = AsyncExecutor(backend, ledger, concurrency=2, policy=FAST).run_sync(specs)
    finally:
        ledger.close()
    assert backend.submitted == 5  # the two in flight were re-attached, not submitted again
    assert _counts(resumed) == _reference(tmp_path, specs)


def _counts(outcomes: Sequence[Any]) -> list[Any]:
    return [o.counts for o in outcomes]


def _reference(tmp_path: Any, specs: list[JobSpec]) -> list[Any]:
    """The same batch, uninterrupted."""
    gate = threading.Event()
    gate.set()
    ledger = JobLedger(tmp_path / "reference.sqlite")
    try:
        return _counts(AsyncExecutor(GatedBackend(gate), ledger, concurrency=2, policy=FAST).run_sync(specs))
    finally:
        ledger.close()
