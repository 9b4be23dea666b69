"""One writer per study, and storage faults that never turn into results.

References: an uninterrupted run with the same seed (what every faulty run
must end up equal to), the ledger's submission counters, SQLite itself
(``quick_check``) and the study's own stored values.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qnas_hw.cli import app
from qnas_hw.config import config_from_dict
from qnas_hw.jobs import JobLedger
from qnas_hw.jobs.ledger import JobClaimedError
from qnas_hw.locking import LockedError, WriterLock, holder
from qnas_hw.search.nsga import run_search
from qnas_hw.search.problem import SearchError
from qnas_hw.search.study import Study, StudyCorrupt, StudyStorageError

runner = CliRunner()

#: Iris, 2-3 qubits, 4 candidates x 2 generations, exact accuracy: fast, every candidate has weights
SMALL = {
    "seed": 2,
    "space": {"qubits": [2, 3], "layers": [1, 1], "embeddings": ["angle-x", "angle-y"]},
    "supercircuit": {"epochs": 1},
    "search": {
        "pop_size": 4,
        "generations": 2,
        "objectives": ["val_error", "subcircuits"],
        "accuracy": "ideal",
        "proxy": "inherited",  # the SuperCircuit is trained and checkpointed: its damage is what is tested here
    },
    "hardware": {"qubit_budget": 3},
}


def _cfg(**search: object):
    return config_from_dict({**SMALL, "search": {**SMALL["search"], **search}})


def _values(path: Path) -> dict[str, tuple[dict[str, float], bool]]:
    with Study.open(path) as s:
        return {c.arch.canonical(): (c.objectives, c.feasible) for c in s.candidates()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    run_search(_cfg(), out, progress=False).close()
    return out


# ------------------------------------------------------------------ one writer
def test_a_second_writer_is_refused_with_the_holders_name(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    study = run / "study.sqlite"
    with Study.open(study, write=True, purpose="qnas-hw search --resume"):
        info = holder(study)
        assert info is not None and info["pid"] == os.getpid()
        with Study.open(study, write=True):  # re-entrant in the process that holds it (search -> its hw-eval)
            pass
        code = (
            "import sys; from qnas_hw.search.study import Study\n"
            "try:\n    Study.open(sys.argv[1], write=True)\n"
            "except Exception as e:\n    print(type(e).__name__, e); sys.exit(3)\n"
        )
        other = subprocess.run([sys.executable, "-c", code, str(study)], capture_output=True, text=True, check=False)
        assert other.returncode == 3, other.stderr
        assert "StudyLocked" in other.stdout and f"pid {os.getpid()}" in other.stdout
        assert "qnas-hw search --resume" in other.stdout
        with Study.open(study) as reader:  # readers (report) never wait for the writer
            assert reader.n_candidates() > 0
    with Study.open(study, write=True):  # released: the next writer gets it
        pass


def test_a_killed_writers_lock_is_taken_over(tmp_path: Path) -> None:
    target = tmp_path / "study.sqlite"
    code = (
        "import sys, time; from qnas_hw.locking import WriterLock\n"
        "WriterLock(sys.argv[1], 'victim').acquire(); print('held', flush=True); time.sleep(60)\n"
    )
    victim = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout is not None and victim.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match="victim"):
            WriterLock(target, "second").acquire()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
    lock = WriterLock(target, "after the kill").acquire()  # the kernel released the dead process's lock
    assert holder(target)["purpose"] == "after the kill"
    lock.release()


def test_two_hw_eval_processes_started_together_submit_each_job_once(reference: Path, tmp_path: Path) -> None:
    """The issue's repro: two `hw-eval --resume` at once used to give every job submissions=2."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    study = run / "study.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "qnas_hw.cli",
        "hw-eval",
        str(study),
        "--backend",
        "fake_kolkata",
        "--shots",
        "64",
        "--chunk-rows",
        "8",
        "--resume",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    refused = next(err for (out, err), p in zip(outs, procs, strict=True) if p.returncode == 1)
    assert "is being written by qnas-hw hw-eval" in refused and "Traceback" not in refused
    ledger = JobLedger(study)
    try:
        counts = ledger.submission_counts()
    finally:
        ledger.close()
    assert counts and set(counts.values()) == {1}


def test_paid_jobs_of_two_processes_racing_on_one_study_are_submitted_once(reference: Path, tmp_path: Path) -> None:
    """A paid fault-injection backend, two processes whose job tasks start together: one is refused outright."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    study = run / "study.sqlite"
    script = (
        "import sys\n"
        "from qnas_hw.hardware.backends import get_backend\n"
        "from qnas_hw.jobs import Budget\n"
        "from qnas_hw.jobs.faults import FaultPlan, FaultyBackend\n"
        "from qnas_hw.search.hw_eval import HardwareEvalSettings, evaluate_study\n"
        "from qnas_hw.search.study import StudyLocked\n"
        "b = FaultyBackend(get_backend('fake_kolkata'), FaultPlan(submit_delay_s=0.2), paid=True)\n"
        "s = HardwareEvalSettings(shots=32, chunk_rows=8, budget=Budget(max_cost_usd=1e6), resume=True)\n"
        "try:\n    evaluate_study(sys.argv[1], b, settings=s)\n"
        "except StudyLocked as e:\n    print('LOCKED', e); sys.exit(4)\n"
        "print('SUBMITTED', sum(b.submissions.values()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(study)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in "ab"
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 4], outs
    ledger = JobLedger(study)
    try:
        counts, jobs = ledger.submission_counts(), ledger.jobs()
    finally:
        ledger.close()
    assert counts and set(counts.values()) == {1}
    assert len({j.provider_job_id for j in jobs}) == len(jobs)  # one provider job per ledger key


def test_claiming_a_submission_is_a_compare_and_set(tmp_path: Path) -> None:
    """Even two ledger handles (two writers the lock would normally stop) cannot both claim one job."""
    path = tmp_path / "ledger.db"
    a, b = JobLedger(path), JobLedger(path)
    try:
        a.plan("k", batch="x", label="job", backend="fake", shots=1, n_pubs=1, n_rows=1)
        wins, errors = [], []

        def claim(ledger: JobLedger) -> None:
            try:
                wins.append(ledger.mark_submitting("k"))
            except JobClaimedError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=claim, args=(ledger,)) for ledger in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wins == [1] and len(errors) == 1 and "not planned" in str(errors[0])
        assert a.get("k").submissions == 1
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------ storage faults
def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


def test_a_full_disk_stops_the_search_and_resume_evaluates_what_was_not_stored(reference: Path, tmp_path: Path) -> None:
    """weights/ on a 64 KiB tmpfs: the first failed save stops the run with a clear message; nothing is recorded as
    a failed candidate; with space again, --resume completes a study equal to the uninterrupted one."""
    small = tmp_path / "small_fs"
    if not _mount_tmpfs(small, "64k"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission); the full-disk path is untested")
    try:
        (small / "filler").write_bytes(b"\0" * (40 * 1024))
        run = tmp_path / "run"
        run.mkdir()
        (run / "weights").symlink_to(small, target_is_directory=True)
        res = runner.invoke(app, ["search", "--config", str(_toml(tmp_path)), "--out", str(run), "--no-progress"])
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert "No space left on device" in res.output and "--resume" in res.output
        with Study.open(run / "study.sqlite") as s:
            stored = s.candidates()
            assert all("error" not in c.details for c in stored)  # the disk's fault is no candidate's result
            n_before = len(stored)
        (small / "filler").unlink()
        res = runner.invoke(app, ["search", "--resume", str(run / "study.sqlite"), "--no-progress"])
        assert res.exit_code == 0, res.output
        assert _values(run / "study.sqlite") == _values(reference / "study.sqlite")
        assert len(_values(run / "study.sqlite")) > n_before
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def _toml(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(
        'seed = 2\n[data]\ndataset = "iris"\nval_fraction = 0.2\n'
        '[space]\nqubits = [2, 3]\nlayers = [1, 1]\nembeddings = ["angle-x", "angle-y"]\n'
        "[supercircuit]\nepochs = 1\n"
        '[search]\npop_size = 4\ngenerations = 2\nfinetune_epochs = 1\nproxy = "inherited"\n'
        'objectives = ["val_error", "subcircuits"]\naccuracy = "ideal"\n'
        "[hardware]\nqubit_budget = 3\n[compute]\nthreads = 1\n"
    )
    return path


def test_storage_errors_of_the_objective_abort_and_are_never_stored(tmp_path: Path) -> None:
    """The evaluator's own rule, on a real failing write: the weights directory is a file, so saving raises."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "weights").write_text("not a directory")  # saving a candidate's weights below it fails (EEXIST)
    with pytest.raises(StudyStorageError, match=r"File exists .*--resume"):
        run_search(_cfg(), out, progress=False)
    with Study.open(out / "study.sqlite") as s:
        assert all("error" not in c.details for c in s.candidates())


# ------------------------------------------------------------------ damaged files
def test_damaged_weights_and_supercircuit_are_rederived_and_checked(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    study = run / "study.sqlite"
    with Study.open(study) as s:
        front = s.generations()[-1].front
        keys = {c.arch.canonical(): c.arch.key() for c in s.candidates()}
    weights = sorted((run / "weights").glob("*.pt"))
    (run / "weights" / f"{keys[front[0]]}.pt").write_bytes(b"truncated")  # damaged
    for w in weights:
        if w.stem != keys[front[0]]:
            w.unlink()  # lost
    sc = run / "supercircuit.pt"
    sc.write_bytes(sc.read_bytes()[:200])  # truncated checkpoint
    (run / ".weights.123.abcd.tmp").write_bytes(b"left by a killed write")
    res = runner.invoke(app, ["hw-eval", str(study), "--backend", "fake_kolkata", "--shots", "32"])
    assert res.exit_code == 0, res.output
    assert not (run / ".weights.123.abcd.tmp").exists()  # leftovers removed on open
    assert (run / "supercircuit.pt.damaged").exists() and sc.is_file()  # set aside, retrained, fingerprint checked
    assert all((run / "weights" / f"{keys[a]}.pt").is_file() for a in front)  # re-derived, checked vs the study


def test_a_resume_that_would_train_another_supercircuit_is_refused(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    study = run / "study.sqlite"
    (run / "supercircuit.pt").unlink()
    with Study.open(study, write=True) as s:  # as if the study had been made on another torch build
        meta = s.meta_json("supercircuit")
        s.set_meta_json("supercircuit", {**meta, "fingerprint": "0" * 16, "torch": "another build"})
        n = s.n_candidates()
    with pytest.raises(SearchError, match=r"is not the one .* candidates were scored with"):
        run_search(None, resume=study, progress=False)
    assert Study.open(study).n_candidates() == n  # nothing was mixed in


def test_damaged_sqlite_is_refused_at_open_and_edited_values_are_detected(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    study = run / "study.sqlite"
    # a value edited in place (not through qnas-hw): the row's checksum no longer matches
    conn = sqlite3.connect(study)
    conn.execute("UPDATE candidates SET objectives = replace(objectives, '0.', '0.9') WHERE id = 1")
    conn.commit()
    conn.close()
    with pytest.raises(StudyCorrupt, match="do not match their checksum"):
        run_search(None, resume=study, progress=False)
    res = runner.invoke(app, ["report", str(study)])
    assert res.exit_code == 1 and "checksum" in res.output and "Traceback" not in res.output

    # random bytes over a page: quick_check refuses the file at open, before any work
    broken = tmp_path / "broken.sqlite"
    shutil.copy(reference / "study.sqlite", broken)
    data = bytearray(broken.read_bytes())
    page = 4096
    data[page * 2 : page * 2 + 512] = os.urandom(512)
    broken.write_bytes(bytes(data))
    started = time.monotonic()
    with pytest.raises(StudyCorrupt, match=r"damaged|not a qnas-hw study"):
        Study.open(broken, write=True)
    assert time.monotonic() - started < 5
