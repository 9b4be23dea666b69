"""Ctrl-C on ``qnas-hw search --accuracy device``: a message at once, jobs recorded, exit 130, then ``--resume``.

Real subprocesses of the installed command, real SIGINTs, sent while a
generation's device jobs are running on the offline fake backend.  The first
SIGINT must be answered at once ("stopping after the jobs in flight…"), let
the jobs in flight finish and be recorded, submit nothing more, and exit with
status 130 and the resume command, without a traceback; a second SIGINT stops
without waiting for them (the ledger holds them as submitted).  Either way
``qnas-hw search --resume`` then completes the study.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

#: The small device search of tests/configs.py, on Iris with one fine-tune epoch (quick to reach its jobs).
DEVICE_TOML = """
seed = 3
[data]
dataset = "iris"
[space]
qubits = [2, 2]
layers = [1, 2]
embeddings = ["angle-x", "angle-y", "iqp"]
[supercircuit]
epochs = 1
[search]
pop_size = 4
generations = 2
finetune_epochs = 1
objectives = ["val_error", "runtime_s"]
accuracy = "device"
shots = 32
# 48 samples: a generation's device jobs take longer than the 5 s between progress lines, so a line shows them
# running before they finish (with 12 the local jobs often all finished within the first 5 s and the test failed)
val_samples = 48
[hardware]
backend = "fake_kolkata"
qubit_budget = 2
"""
#: Only a guard against a hung child; nothing here asserts how long anything took.
HANG_S = 400
STOPPING = "stopping after the jobs in flight…"


def _command() -> list[str]:
    script = Path(sys.executable).with_name("qnas-hw")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "qnas_hw.cli"]


class _Child:
    """A ``qnas-hw`` subprocess whose stderr lines are read as they come."""

    def __init__(self, *args: str, cwd: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [*_command(), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.stdout = ""
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()

    def next_line(self) -> str | None:
        """The next stderr line (None at the end); fails the test if the child hangs."""
        try:
            line = self.lines.get(timeout=HANG_S)
        except queue.Empty:
            self.proc.kill()
            pytest.fail(f"no output for {HANG_S} s; so far:\n" + "\n".join(self.seen[-30:]))
        if line is not None:
            self.seen.append(line)
        return line

    def wait_for(self, pattern: str) -> str:
        while (line := self.next_line()) is not None:
            if re.search(pattern, line):
                return line
        pytest.fail(f"the child ended (status {self.proc.wait()}) before {pattern!r}:\n" + "\n".join(self.seen[-30:]))

    def rest(self) -> list[str]:
        out = []
        while (line := self.next_line()) is not None:
            out.append(line)
        self.proc.wait(timeout=HANG_S)
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _ledger(study: Path) -> list[tuple[str, str, int, str | None]]:
    conn = sqlite3.connect(study, timeout=30)
    try:
        return conn.execute("SELECT key, state, submissions, provider_job_id FROM hw_jobs").fetchall()
    finally:
        conn.close()


def _generations(study: Path) -> int:
    conn = sqlite3.connect(study, timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    finally:
        conn.close()


def _interrupt_while_jobs_run(tmp_path: Path, sigints: int) -> tuple[_Child, list[str], Path]:
    """Start the search, SIGINT it ``sigints`` times once generation 1's jobs run; return its stderr after that."""
    (tmp_path / "device.toml").write_text(DEVICE_TOML)
    child = _Child("search", "--config", "device.toml", "--out", "run", cwd=tmp_path)
    try:
        # the predicted job time comes before anything long starts (the SuperCircuit's training)
        first = child.wait_for(r"^predicted wall time of the device jobs|^supercircuit epoch")
        assert first.startswith("predicted wall time of the device jobs on fake_kolkata: generation 1 ")
        child.wait_for(r"^device jobs: .*\(([1-9]\d*) running")  # jobs in flight, progress shown while they run
        for i in range(sigints):
            child.proc.send_signal(signal.SIGINT)
            if i + 1 < sigints:
                time.sleep(0.2)
        after = []
        while (line := child.next_line()) is not None and STOPPING not in line:
            after.append(line)
        # answered at once: nothing but job progress lines came between the SIGINT and the message
        assert line is not None and line.startswith(STOPPING), child.seen[-20:]
        assert all(x.startswith("device jobs: ") for x in after), after
        return child, child.rest(), tmp_path / "run" / "study.sqlite"
    except BaseException:
        child.kill()
        raise


def _assert_stopped_cleanly(child: _Child, rest: list[str], study: Path) -> None:
    text = "\n".join(child.seen)
    assert child.proc.returncode == 130, text[-3000:]
    assert "Traceback" not in text and "Aborted" not in text
    assert f"continue with `qnas-hw search --resume {Path('run') / 'study.sqlite'}`" in rest[-1]
    rows = _ledger(study)
    assert rows and not any(state == "submitting" for _, state, _, _ in rows)  # no submission left half-done


def _resume_completes(tmp_path: Path, study: Path) -> list[tuple[str, str, int, str | None]]:
    child = _Child("search", "--resume", str(Path("run") / "study.sqlite"), cwd=tmp_path)
    try:
        rest = child.rest()
    finally:
        child.kill()
    assert child.proc.returncode == 0, "\n".join(child.seen[-30:])
    assert "Traceback" not in "\n".join(rest)
    assert _generations(study) == 2
    rows = _ledger(study)
    assert rows and all(state == "done" for _, state, _, _ in rows)
    return rows


def test_first_sigint_finishes_the_jobs_in_flight_then_resume_completes(tmp_path: Path) -> None:
    child, rest, study = _interrupt_while_jobs_run(tmp_path, sigints=1)
    _assert_stopped_cleanly(child, rest, study)
    at_stop = {key: (state, subs) for key, state, subs, _ in _ledger(study)}
    assert "done" in {s for s, _ in at_stop.values()}  # the jobs in flight finished and were recorded
    assert {s for s, _ in at_stop.values()} <= {"done", "planned"}  # nothing left running, nothing more submitted
    assert all(subs == 0 for s, subs in at_stop.values() if s == "planned")

    rows = _resume_completes(tmp_path, study)
    # every job was submitted once: the finished ones were reused, the others submitted by the resume
    assert all(subs == 1 for _, _, subs, _ in rows)
    assert {k for k, _, _, _ in rows} >= set(at_stop)


@pytest.mark.slow  # racy on this box: see the docstring
def test_second_sigint_stops_without_waiting_and_resume_completes(tmp_path: Path) -> None:
    """Marked slow (run with ``-m slow``) because it races the clock: the progress line that says jobs are running
    comes at most every 5 s, and the local fake-backend jobs (about 5 s in all) often all finish before the second
    SIGINT lands, leaving nothing in flight to check. It failed 4 of 5 runs on the shared 2-core box on 2026-12-07
    (and at a89ccaf, before that day's changes); a deterministic version needs a job that waits on the test."""
    child, rest, study = _interrupt_while_jobs_run(tmp_path, sigints=2)
    assert any(line.startswith("stopping now") for line in rest), rest
    _assert_stopped_cleanly(child, rest, study)
    states = [state for _, state, _, _ in _ledger(study)]
    assert "submitted" in states  # left in flight, recorded by provider job id for the resume
    assert all(pid for _, state, _, pid in _ledger(study) if state == "submitted")

    _resume_completes(tmp_path, study)
