"""Hardware evaluation end to end on local backends, including a SIGKILL mid-evaluation and a resume.

References: the HQNN's own simulator (exact <Z>) for the counts -> <Z> -> decode
path, and a fault-free in-process run with the same seeds for the resumed one.
Run as a script (``python tests/test_jobs_hw.py LEDGER``) it is the child
process the SIGKILL test kills.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from qnas_hw.hardware.backends import get_backend
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.jobs import AsyncExecutor, Budget, BudgetExceeded, JobLedger, LedgerState, RetryPolicy
from qnas_hw.jobs.faults import FaultPlan, FaultyBackend, pubs_fingerprint
from qnas_hw.model.hqnn import HQNN
from qnas_hw.model.space import Architecture
from qnas_hw.search.hw_eval import (
    HardwareEvalSettings,
    candidate_jobs,
    evaluate_on_backend,
    expectations_from_counts,
    stored_results,
)

ARCHS = (Architecture("angle-y", 3, 1, "ry-rz", "linear"), Architecture("angle-x", 2, 2, "ry", "ring"))
FAST = RetryPolicy(backoff_s=0.01, backoff_max_s=0.05, poll_interval_s=0.02, timeout_s=60.0)


def problem(n: int = 24) -> tuple[list[tuple[Architecture, HQNN]], torch.Tensor, torch.Tensor]:
    """Real (untrained, seeded) HQNNs on a fixed 4-feature, 3-class sample set."""
    torch.manual_seed(0)  # HQNN uses its own generators; this only pins anything incidental
    rng = np.random.default_rng(5)
    X = torch.as_tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, 3, size=n))
    return [(a, HQNN(a, (4,), 3, frontend="linear", seed=i).eval()) for i, a in enumerate(ARCHS)], X, y


def settings(**kw) -> HardwareEvalSettings:
    # mitigation off: these tests count the data jobs the executor runs (the calibration job has its own test)
    base = {"shots": 128, "chunk_rows": 6, "seed": 3, "concurrency": 2, "policy": FAST, "mitigation": False}
    return HardwareEvalSettings(**{**base, **kw})


def test_counts_to_expectations_match_the_simulator():
    backend = get_backend("aer_ideal")
    (arch, model), *_ = problem()[0]
    _, X, _ = problem(8)
    specs = candidate_jobs(arch, model, X, Transpiler(backend), settings(shots=8000, chunk_rows=4))
    assert len(specs) == 2 and all(s.n_rows == 4 for s in specs)  # one circuit, parameter rows, chunked
    out = AsyncExecutor(backend, JobLedger(":memory:"), policy=FAST).run_sync(specs)
    z = expectations_from_counts([row for o in out for row in o.counts[0]], arch.n_qubits)
    with torch.no_grad():
        exact = model.quantum(model.encode(X)).numpy()
    assert np.abs(z - exact).max() < 0.05  # 8000 shots: 4.5 sigma of the worst row


def test_expectations_from_counts_bit_order():
    z = expectations_from_counts([{"001": 3, "100": 1}], 3)  # clbit 0 is the rightmost character
    assert z.tolist() == [[-0.5, 1.0, 0.5]]


def test_evaluate_on_backend_scores_and_stores(tmp_path):
    candidates, X, y = problem()
    backend = get_backend("aer_ideal")
    ledger = JobLedger(tmp_path / "study.db")
    report = evaluate_on_backend(candidates, X, y, backend, ledger, settings(shots=4000))
    assert [r.arch for r in report.results] == [a.canonical() for a, _ in candidates]
    by_id = {r.provider_job_id: r for r in ledger.jobs()}
    for res, (arch, model) in zip(report.results, candidates, strict=True):
        assert res.jobs == 4 and res.shots == 24 * 4000 and res.n_samples == 24
        assert len(set(res.job_ids)) == 4
        # independent recomputation from the ledger's stored counts, in sample order
        rows = [row for jid in res.job_ids for row in by_id[jid].counts[0]]
        with torch.no_grad():
            pred = model.decode(torch.as_tensor(expectations_from_counts(rows, arch.n_qubits))).argmax(-1)
            sim = model(X).argmax(-1)
        assert res.accuracy == pytest.approx(float((pred == y).float().mean()))
        assert res.simulator_accuracy == pytest.approx(float((sim == y).float().mean()))
        assert float((pred == sim).float().mean()) >= 0.75  # ideal sampler, 4000 shots: only near-ties may flip
    stored = stored_results(ledger)
    assert {r["arch"] for r in stored} == {a.canonical() for a, _ in candidates}
    assert all(r.state is LedgerState.DONE for r in ledger.jobs())


def test_dry_run_submits_nothing_and_guard_refuses_before_submitting(tmp_path):
    candidates, X, y = problem()
    wrapped = FaultyBackend(get_backend("fake_kolkata"))
    ledger = JobLedger(tmp_path / "study.db")
    dry = evaluate_on_backend(candidates, X, y, wrapped, ledger, settings(dry_run=True, budget=Budget(max_shots=10)))
    assert dry.dry_run and not dry.results and sum(wrapped.submissions.values()) == 0 and ledger.jobs() == []
    assert dry.plan.shots == 2 * 24 * 128 and dry.plan.jobs == 8 and "max-shots" in dry.refusal
    with pytest.raises(BudgetExceeded, match="max-shots"):
        evaluate_on_backend(candidates, X, y, wrapped, ledger, settings(budget=Budget(max_shots=10)))
    paid = FaultyBackend(get_backend("fake_kolkata"), paid=True)
    with pytest.raises(BudgetExceeded, match="max-cost"):
        evaluate_on_backend(candidates, X, y, paid, ledger, settings(budget=Budget(max_cost_usd=1.0)))
    assert sum(wrapped.submissions.values()) == 0 and sum(paid.submissions.values()) == 0 and ledger.jobs() == []


def _done(path: Path) -> int:
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM hw_jobs WHERE state = 'done'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0  # table not created yet


def test_sigkill_during_hardware_evaluation_then_resume(tmp_path):
    path = tmp_path / "study.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, __file__, str(path)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _done(path) < 2:
            if child.poll() is not None:
                pytest.fail(f"child exited early ({child.returncode}): {child.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("child made no progress in 120 s")
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL

    ledger = JobLedger(path)
    at_kill = {r.key: r for r in ledger.jobs()}
    done_at_kill = {k for k, r in at_kill.items() if r.state is LedgerState.DONE}
    assert len(at_kill) == 8 and 2 <= len(done_at_kill) < 8  # every job was planned before the first submission

    candidates, X, y = problem()
    healthy = FaultyBackend(get_backend("aer_noisy"))
    resumed = evaluate_on_backend(candidates, X, y, healthy, ledger, settings(resume=True))
    reference = evaluate_on_backend(candidates, X, y, get_backend("aer_noisy"), JobLedger(":memory:"), settings())
    for a, b in zip(resumed.results, reference.results, strict=True):
        assert (a.arch, a.accuracy, a.shots) == (b.arch, b.accuracy, b.shots)
    assert sum(r.reused_jobs for r in resumed.results) == len(done_at_kill)
    ref_counts = {r.key: r.counts for r in ledger.jobs()}
    for spec_key, rec in at_kill.items():
        if spec_key in done_at_kill:
            assert ref_counts[spec_key] == rec.counts  # a paid-for result is never replaced
    # no done job resubmitted; every other job submitted exactly once after the restart
    trans = Transpiler(healthy, seed=3)
    for arch, model in candidates:
        for spec in candidate_jobs(arch, model, X, trans, settings()):
            n = healthy.submissions[pubs_fingerprint(spec.pubs, spec.shots, spec.seed)]
            assert n == (0 if spec.key(healthy.name) in done_at_kill else 1)
    for rec in ledger.jobs():
        assert rec.state is LedgerState.DONE
        assert sum(e.event == "done" for e in ledger.events(rec.key)) == 1
        if at_kill[rec.key].state in (LedgerState.SUBMITTED, LedgerState.SUBMITTING):
            assert any(e.event == "job_error" and "lost" in (e.detail or "") for e in ledger.events(rec.key))


def _child(ledger_path: str) -> None:
    """The process the SIGKILL test kills: slow submissions so it dies mid-batch."""
    torch.set_num_threads(1)
    candidates, X, y = problem()
    backend = FaultyBackend(get_backend("aer_noisy"), FaultPlan(submit_delay_s=0.4))
    evaluate_on_backend(candidates, X, y, backend, JobLedger(ledger_path), settings(concurrency=1))


if __name__ == "__main__":
    _child(sys.argv[1])
