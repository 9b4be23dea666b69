"""``accuracy = "device"``: every generation's candidates as ledger jobs on the backend, guarded, resumable.

References: a fault-free, uninterrupted in-process search with the same seed
(its study is what every faulty or killed run must reproduce), and the
ledger's own counters (submissions per key).  The killed search runs its
jobs through :class:`~qnas_hw.jobs.detached.DetachedBackend`, whose jobs
live in their own processes like a cloud provider's, so the resume must
re-attach to them instead of submitting again.

Run as a script (``python tests/test_device_mode.py OUT SPOOL``) it is the
child process the SIGKILL test kills.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from configs import DEVICE_BACKEND, device_search_config

from qnas_hw.config import RunConfig, config_from_dict
from qnas_hw.hardware.backends import get_backend
from qnas_hw.jobs import BudgetExceeded, JobLedger, LedgerState
from qnas_hw.jobs.detached import DetachedBackend
from qnas_hw.jobs.faults import FaultPlan, FaultyBackend
from qnas_hw.search.nsga import run_search
from qnas_hw.search.study import Study

BACKEND = DEVICE_BACKEND


def _config(**search: object) -> RunConfig:
    """The shared small device-mode search (tests/configs.py), with these search settings."""
    return device_search_config(**search)


#: how long transpiling and cut planning took: measured, so never equal between two runs
_CLOCK_KEYS = frozenset({"transpile_seconds", "plan_seconds"})


def _stable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _CLOCK_KEYS}
    return value


def _records(study: Study) -> dict[str, tuple[dict[str, float], object, bool, int]]:
    return {
        c.arch.canonical(): (c.objectives, _stable(c.details), c.feasible, c.generation) for c in study.candidates()
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fault-free, uninterrupted device search every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    run_search(_config(), out, progress=False).close()
    return out / "study.sqlite"


def test_device_search_runs_every_candidate_through_the_ledger(reference: Path) -> None:
    with Study.open(reference) as study:
        cands = study.candidates()
        assert study.config["search"]["accuracy"] == "device"
    ledger = JobLedger(reference)
    try:
        jobs = ledger.jobs()
    finally:
        ledger.close()
    data = [j for j in jobs if j.meta.get("kind") == "candidate"]
    assert {j.meta["arch"] for j in data} == {c.arch.canonical() for c in cands}
    assert all(j.state is LedgerState.DONE and j.submissions == 1 for j in jobs)
    assert any(j.meta.get("kind") == "readout-calibration" for j in jobs)  # mthree calibrations are jobs too
    for c in cands:
        acc = c.details["val_error"]["accuracy"]
        assert acc["accuracy_mode"] == "device" and acc["mitigation"] == "mthree" and acc["samples"] == 12
        assert c.objectives["val_error"] == pytest.approx(1 - c.details["val_error"]["val_acc"])


def test_injected_faults_give_the_fault_free_study(reference: Path, tmp_path: Path) -> None:
    plan = FaultPlan(submit_error_rate=0.25, throttle_rate=0.15, job_failure_rate=0.15, poll_error_rate=0.2, seed=5)
    faulty = FaultyBackend(get_backend(BACKEND), plan)
    cfg = _config()
    study = run_search(cfg, tmp_path / "faulty", progress=False, backend=faulty)
    try:
        with Study.open(reference) as ref:
            assert _records(study) == _records(ref)
            assert [g.front for g in study.generations()] == [g.front for g in ref.generations()]
    finally:
        study.close()
    assert sum(faulty.injected[k] for k in ("submit_error", "throttle", "fail")) > 0  # faults really happened
    ledger = JobLedger(tmp_path / "faulty" / "study.sqlite")
    try:
        assert all(j.state is LedgerState.DONE for j in ledger.jobs())
        assert max(j.submissions for j in ledger.jobs()) > 1  # retried jobs were submitted again (free backend)
    finally:
        ledger.close()


def test_guard_refuses_a_generation_before_submitting_when_the_budget_is_too_small(tmp_path: Path) -> None:
    paid = FaultyBackend(get_backend(BACKEND), paid=True)
    # no budget at all: refused before the SuperCircuit trains, with the predicted cost; nothing is created
    with pytest.raises(BudgetExceeded, match=r"no budget: its first generation is predicted at \$\d"):
        run_search(_config(), tmp_path / "none", progress=False, backend=paid)
    assert not (tmp_path / "none" / "study.sqlite").exists()
    # a budget below generation 0's price: the guard refuses after training, before any submission
    with pytest.raises(BudgetExceeded, match="max-cost"):
        run_search(_config(device={"max_cost_usd": 0.01}), tmp_path / "small", progress=False, backend=paid)
    assert sum(paid.submissions.values()) == 0
    ledger = JobLedger(tmp_path / "small" / "study.sqlite")
    try:
        assert all(j.submissions == 0 for j in ledger.jobs())
    finally:
        ledger.close()


# ------------------------------------------------------------------ SIGKILL mid-generation
def _ledger_states(path: Path) -> list[tuple[str, str, int]]:
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            return conn.execute("SELECT key, state, submissions FROM hw_jobs").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return []


def _generations(path: Path) -> int:
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_generation_reattaches_and_pays_for_no_job_twice(reference: Path, tmp_path: Path) -> None:
    """Kill the search while generation 1's jobs are in flight; resume: same study, one submission per job."""
    out, spool = tmp_path / "victim", tmp_path / "spool"
    study_path = out / "study.sqlite"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, __file__, str(out), str(spool)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        gen0_keys: set[str] | None = None
        while True:
            if child.poll() is not None:
                pytest.fail(f"child exited early ({child.returncode}): {child.stderr.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the child never reached generation 1 with jobs in flight")
            rows = _ledger_states(study_path)
            if gen0_keys is None and _generations(study_path) >= 1:
                gen0_keys = {k for k, _, _ in rows}
            if gen0_keys is not None:
                new = [(k, s) for k, s, _ in rows if k not in gen0_keys]
                states = {s for _, s in new}
                # in the middle of generation 1: some of its jobs done, the others submitted, none mid-submit
                if new and "done" in states and "submitted" in states and states <= {"done", "submitted"}:
                    break
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    at_kill = {k: s for k, s, _ in _ledger_states(study_path)}
    assert "submitted" in at_kill.values()

    backend = DetachedBackend(BACKEND, spool)
    study = run_search(None, resume=study_path, progress=False, backend=backend)
    try:
        with Study.open(reference) as ref:
            assert _records(study) == _records(ref)  # every candidate, with the uninterrupted run's values
            assert [g.front for g in study.generations()] == [g.front for g in ref.generations()]
    finally:
        study.close()
    assert backend.submitted == []  # nothing needed submitting again: every in-flight job was re-attached
    rows = _ledger_states(study_path)
    assert rows and all(state == "done" and subs == 1 for _, state, subs in rows), rows


def _child(out: str, spool: str) -> None:
    """The process the SIGKILL test kills: device search whose jobs run (slowly) in detached workers."""
    import torch

    torch.set_num_threads(1)
    backend = DetachedBackend(BACKEND, spool, delay_s=1.0)
    cfg = _config(device={"concurrency": 16})
    run_search(cfg, Path(out), progress=False, backend=backend)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])


def test_search_dry_run_prices_the_whole_search_and_creates_nothing(tmp_path: Path, tiny_search_toml: str) -> None:
    from typer.testing import CliRunner

    from qnas_hw.cli import app

    cfg = tmp_path / "tiny.toml"
    cfg.write_text(tiny_search_toml)
    out = tmp_path / "never"
    res = CliRunner().invoke(
        app, ["search", "--config", str(cfg), "--accuracy", "device", "--dry-run", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "generation 1 (" in res.output and "whole search: at most 8 evaluations" in res.output
    assert "dry run: nothing was trained or submitted" in res.output and not out.exists()


def test_bad_accuracy_settings_are_refused_before_training(tmp_path: Path) -> None:
    from qnas_hw.search.problem import SearchError

    # fixed cut shots spread over QPD terms: a plan the constraints admit may have more terms than shots
    cfg = _config(accuracy="noisy", cut_shots="fixed", shots=64)
    cfg = config_from_dict({**cfg.resolved(), "space": {**cfg.resolved()["space"], "qubits": [2, 3]}})
    with pytest.raises(SearchError, match=r"shots=64 is too few for cut_shots='fixed'.*use shots >= 46656"):
        run_search(cfg, tmp_path / "fixed", progress=False)
    assert not (tmp_path / "fixed").exists()
