"""Job ledger, executor, guard and fault injection against a real local backend (Aer with fake_kolkata noise).

The reference for every faulty run is a fault-free run (or direct
``backend.submit``) with the same seeds: Aer's ``seed_simulator`` makes counts
identical, so "results equal" is an exact comparison.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from qnas_hw.hardware.backends import BackendError, SamplerPub, get_backend
from qnas_hw.hardware.cost import estimate_job_cost
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.jobs import (
    AsyncExecutor,
    Budget,
    BudgetExceeded,
    FaultKind,
    JobLedger,
    JobSpec,
    JobStillRunning,
    LedgerError,
    LedgerState,
    PermanentJobError,
    RetryPolicy,
    UnsafeResubmission,
    check_budget,
    classify_error,
    plan_spend,
)
from qnas_hw.jobs.faults import FaultPlan, FaultyBackend, pubs_fingerprint
from qnas_hw.model.circuits import parameter_values
from qnas_hw.model.space import Architecture

ARCH = Architecture("angle-y", 3, 1, "ry-rz", "linear")
FAST = RetryPolicy(backoff_s=0.01, backoff_max_s=0.05, poll_interval_s=0.02, timeout_s=20.0)


@pytest.fixture(scope="module")
def backend():
    return get_backend("aer_noisy")


@pytest.fixture(scope="module")
def specs(backend):
    return make_specs(backend, n_jobs=6)


def make_specs(backend, n_jobs: int, rows: int = 4, shots: int = 64) -> list[JobSpec]:
    circuit = Transpiler(backend, seed=0).transpile(ARCH).circuit
    rng = np.random.default_rng(11)
    weights = rng.uniform(0, 2 * np.pi, ARCH.n_weights)
    out = []
    for i in range(n_jobs):
        values = parameter_values(circuit, ARCH, rng.uniform(0, np.pi, (rows, ARCH.n_inputs)), weights)
        out.append(JobSpec((SamplerPub(circuit, values),), shots, seed=1000 + i, label=f"job{i}"))
    return out


@pytest.fixture(scope="module")
def reference(backend, specs):
    """Fault-free counts, straight from backend.submit (no executor involved)."""
    return [backend.submit(list(s.pubs), s.shots, s.seed).counts() for s in specs]


def _counts(outcomes):
    return [o.counts for o in outcomes]


def _one_result_per_job(ledger: JobLedger, specs, backend_name: str) -> None:
    rows = {r.key: r for r in ledger.jobs()}
    keys = [s.key(backend_name) for s in specs]
    assert set(keys) <= set(rows)
    assert all(rows[k].state is LedgerState.DONE for k in keys)
    for k in keys:  # exactly one "done" event per key
        assert sum(e.event == "done" for e in ledger.events(k)) == 1


# ---------------------------------------------------------------- ledger
def test_idempotency_key_tracks_exactly_what_runs(backend, specs):
    s = specs[0]
    assert s.key(backend.name) == make_specs(backend, 1)[0].key(backend.name)  # rebuilt from scratch: same key
    variants = [
        JobSpec(s.pubs, s.shots + 1, s.seed),
        JobSpec(s.pubs, s.shots, s.seed + 1),
        JobSpec((SamplerPub(s.pubs[0].circuit, s.pubs[0].parameter_values + 1e-12),), s.shots, s.seed),
    ]
    keys = {s.key(backend.name), s.key("fake_kolkata"), *(v.key(backend.name) for v in variants)}
    assert len(keys) == 5


def test_ledger_states_survive_reopen_and_are_wal(tmp_path, backend, specs):
    path = tmp_path / "study.db"
    ledger = JobLedger(path)
    key = specs[0].key(backend.name)
    ledger.plan(key, batch="b", label="job0", backend=backend.name, shots=64, n_pubs=1, n_rows=4)
    n = ledger.mark_submitting(key)
    ledger.mark_submitted(key, "prov-1", n)
    ledger.close()
    conn = sqlite3.connect(path)  # an independent reader sees the committed state
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT state, provider_job_id, submissions FROM hw_jobs").fetchone() == (
        "submitted",
        "prov-1",
        1,
    )
    conn.close()
    again = JobLedger(lambda: sqlite3.connect(path))  # connection-factory form
    rec = again.get(key)
    assert rec.state is LedgerState.SUBMITTED and rec.provider_job_id == "prov-1"
    assert [e.event for e in again.events(key)] == ["planned", "submitting", "submitted"]
    with pytest.raises(LedgerError, match="no counts"):
        _ = rec.counts
    with pytest.raises(LedgerError, match="does not exist"):
        JobLedger(tmp_path / "missing" / "x.db")


# ---------------------------------------------------------------- executor
def test_executor_matches_direct_submission(tmp_path, backend, specs, reference):
    ledger = JobLedger(tmp_path / "l.db")
    out = AsyncExecutor(backend, ledger, concurrency=3, policy=FAST).run_sync(specs)
    assert _counts(out) == reference
    assert [o.label for o in out] == [s.label for s in specs]
    _one_result_per_job(ledger, specs, backend.name)
    assert set(ledger.submission_counts().values()) == {1}
    # a second run reuses every result and submits nothing
    faulty = FaultyBackend(backend)
    again = AsyncExecutor(faulty, ledger, concurrency=3, policy=FAST).run_sync(specs)
    assert _counts(again) == reference and all(o.reused for o in again)
    assert sum(faulty.submissions.values()) == 0
    with pytest.raises(LedgerError, match="--resume"):
        AsyncExecutor(backend, ledger, resume=False).run_sync(specs)


def test_faults_every_job_one_result_equal_to_fault_free(tmp_path, backend, specs, reference):
    plan = FaultPlan(
        submit_error_rate=0.2, throttle_rate=0.2, job_failure_rate=0.2, poll_error_rate=0.5, max_faults_per_job=2
    )
    faulty = FaultyBackend(backend, plan)
    ledger = JobLedger(tmp_path / "l.db")
    out = AsyncExecutor(faulty, ledger, concurrency=4, policy=FAST).run_sync(specs)
    assert _counts(out) == reference
    _one_result_per_job(ledger, specs, backend.name)
    assert all(faulty.injected[k] > 0 for k in ("submit_error", "throttle", "fail", "poll_errors"))
    subs = ledger.submission_counts()
    for spec in specs:
        key = spec.key(backend.name)
        events = [e.event for e in ledger.events(key)]
        faults = events.count("submit_error") + events.count("job_error")
        assert subs[key] == 1 + faults == faulty.submissions[pubs_fingerprint(spec.pubs, spec.shots, spec.seed)]
        assert faults <= plan.max_faults_per_job
    assert max(subs.values()) > 1  # some job really was retried


def test_hung_jobs_time_out_and_are_resubmitted_on_a_free_backend(tmp_path, backend, specs, reference):
    faulty = FaultyBackend(backend, FaultPlan(hang_rate=1.0, max_faults_per_job=1))
    ledger = JobLedger(tmp_path / "l.db")
    # the timeout must exceed a real job's time on a loaded box, or the healthy resubmission times out too
    policy = RetryPolicy(backoff_s=0.01, backoff_max_s=0.02, poll_interval_s=0.02, timeout_s=6.0)
    out = AsyncExecutor(faulty, ledger, concurrency=2, policy=policy).run_sync(specs[:2])
    assert _counts(out) == reference[:2]
    assert set(ledger.submission_counts().values()) == {2}
    assert faulty.injected["cancels"] == 2  # each hung job was cancelled before its replacement


def test_paid_backend_never_resubmits_a_slow_job_and_resume_reattaches(tmp_path, backend, specs, reference):
    jobs = specs[:3]
    paid = FaultyBackend(backend, FaultPlan(hang_rate=1.0, max_faults_per_job=1), paid=True)
    ledger = JobLedger(tmp_path / "l.db")
    policy = RetryPolicy(backoff_s=0.01, poll_interval_s=0.02, timeout_s=1.0)  # only hung jobs reach it
    with pytest.raises(JobStillRunning, match="--resume"):
        AsyncExecutor(paid, ledger, concurrency=3, policy=policy).run_sync(jobs)
    submitted = [r for r in ledger.jobs() if r.state is LedgerState.SUBMITTED]
    assert submitted and all(r.provider_job_id for r in submitted)
    assert set(paid.submissions.values()) == {1}
    paid.heal()  # the provider's queue moves again; same provider-side jobs
    out = AsyncExecutor(paid, ledger, concurrency=3, policy=FAST).run_sync(jobs)
    assert _counts(out) == reference[:3]
    assert set(paid.submissions.values()) == {1}  # nothing submitted twice
    assert paid.injected["reattach"] == len(submitted)
    _one_result_per_job(ledger, jobs, backend.name)


def test_lost_submission_is_an_error_on_paid_and_a_new_attempt_on_free(tmp_path, backend, specs, reference):
    spec = specs[0]
    key = spec.key(backend.name)
    for paid in (True, False):
        ledger = JobLedger(tmp_path / f"l{paid}.db")
        ledger.plan(key, batch="b", label="job0", backend=backend.name, shots=spec.shots, n_pubs=1, n_rows=4)
        ledger.mark_submitting(key)  # what a crash inside backend.submit leaves behind
        wrapped = FaultyBackend(backend, paid=paid)
        ex = AsyncExecutor(wrapped, ledger, policy=FAST, batch="b")
        if paid:
            with pytest.raises(UnsafeResubmission, match="provider console"):
                ex.run_sync([spec])
            assert sum(wrapped.submissions.values()) == 0
        else:
            assert _counts(ex.run_sync([spec])) == reference[:1]
            assert ledger.get(key).submissions == 2  # recorded as a new attempt
            assert "lost" in next(e.detail or "" for e in ledger.events(key) if e.event == "job_error")


def test_backend_dying_mid_batch_then_resume(tmp_path, backend, specs, reference):
    dying = FaultyBackend(backend, FaultPlan(die_after=3))
    ledger = JobLedger(tmp_path / "l.db")
    with pytest.raises(PermanentJobError, match="went away"):
        AsyncExecutor(dying, ledger, concurrency=1, policy=FAST).run_sync(specs)
    done = {r.key for r in ledger.jobs() if r.state is LedgerState.DONE}
    assert len(done) == 3
    healthy = FaultyBackend(backend)
    out = AsyncExecutor(healthy, ledger, concurrency=2, policy=FAST).run_sync(specs)
    assert _counts(out) == reference
    for spec, o in zip(specs, out, strict=True):
        resubmitted = healthy.submissions[pubs_fingerprint(spec.pubs, spec.shots, spec.seed)]
        assert resubmitted == (0 if o.key in done else 1)
        assert o.reused == (o.key in done)
    _one_result_per_job(ledger, specs, backend.name)


def test_permanent_error_fails_fast_with_clear_message(tmp_path, backend, specs):
    good = specs[0].pubs[0]
    bad = JobSpec((SamplerPub(good.circuit, good.parameter_values[:, :-1]),), 64, seed=1, label="bad")
    ledger = JobLedger(tmp_path / "l.db")
    with pytest.raises(PermanentJobError, match=r"retrying cannot fix it.*parameter"):
        AsyncExecutor(backend, ledger, policy=FAST).run_sync([bad])
    rec = ledger.jobs()[0]
    assert rec.state is LedgerState.FAILED and rec.submissions == 1 and "parameter" in rec.error


def test_classifier_on_real_provider_exceptions():
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
    from qiskit_ibm_runtime.api.exceptions import RequestsApiError
    from qiskit_ibm_runtime.exceptions import IBMNotAuthorizedError, RuntimeJobFailureError

    def client(code: str, status: int) -> ClientError:
        return ClientError(
            {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "CreateQuantumTask"
        )

    transient = [
        RequestsApiError("x", status_code=503),
        RequestsApiError("x", status_code=429),
        RequestsApiError("no response"),
        client("ThrottlingException", 400),
        client("InternalServiceException", 500),
        EndpointConnectionError(endpoint_url="https://braket"),
        ConnectionResetError(),
        TimeoutError(),
        RuntimeJobFailureError("Job failed: Internal error, try again"),
    ]
    permanent = [
        RequestsApiError("x", status_code=401),
        RequestsApiError("x", status_code=400),
        client("ValidationException", 400),
        client("AccessDeniedException", 403),
        NoCredentialsError(),
        IBMNotAuthorizedError("bad token"),
        RuntimeJobFailureError("Job failed: circuit exceeds the device's qubit count"),
        BackendError("bad circuit"),
        ValueError("shape"),
        RuntimeError("unknown"),
    ]
    assert [classify_error(e) for e in transient] == [FaultKind.TRANSIENT] * len(transient)
    assert [classify_error(e) for e in permanent] == [FaultKind.PERMANENT] * len(permanent)


# ---------------------------------------------------------------- guard
def test_guard_prices_with_the_cost_model_and_refuses_over_budget(backend, specs):
    kolkata = get_backend("fake_kolkata")
    ks = make_specs(kolkata, n_jobs=4)
    plan = plan_spend(kolkata, {"a": ks[:2], "b": ks[2:]})
    expected = sum(estimate_job_cost(kolkata, list(s.pubs), s.shots).seconds for s in ks)
    assert plan.seconds == pytest.approx(expected) and plan.shots == 4 * 4 * 64 and plan.jobs_to_run == 4
    assert plan.billed_usd == 0.0 and plan.device_usd == pytest.approx(expected * 1.6)  # IBM list price per QPU s
    check_budget(plan, Budget(max_cost_usd=0.01))  # a free local run is not billed
    with pytest.raises(BudgetExceeded, match=r"1024 shots > --max-shots 1000.*Nothing was submitted"):
        check_budget(plan, Budget(max_shots=1000))
    with pytest.raises(BudgetExceeded, match="QPU seconds"):
        check_budget(plan, Budget(max_qpu_seconds=expected / 2))
    paid = FaultyBackend(kolkata, paid=True)
    paid_plan = plan_spend(paid, {"a": ks}, done_keys={ks[0].key(kolkata.name)})
    assert paid_plan.jobs_to_run == 3 and paid_plan.shots == 3 * 4 * 64  # finished jobs cost nothing
    assert paid_plan.billed_usd == pytest.approx(paid_plan.seconds * 1.6)
    with pytest.raises(BudgetExceeded, match="max-cost"):
        check_budget(paid_plan, Budget(max_cost_usd=paid_plan.billed_usd * 0.9))
    assert any("TOTAL" in line for line in paid_plan.lines_text())
