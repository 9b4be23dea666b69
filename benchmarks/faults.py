"""Fault campaign on a small Iris study: random-moment SIGKILLs, two writers at once, and storage faults.

Every figure is checked against an uninterrupted reference run with the same
seed (same candidates, objective values and generations):

* ``--kills N``: the CLI search (``noisy`` accuracy on fake_kolkata) is
  SIGKILLed at a uniformly random moment of its run, then resumed; counted:
  kills tried, resumes identical to the reference.
* ``--device-kills N``: the same for an ``accuracy = "device"`` search whose
  jobs run in detached processes (a provider emulator), killed at random;
  counted: resumes identical and the ledger's submissions per job key.
* two writers: two ``hw-eval --resume`` and two ``search --resume`` started
  together on one study (the issue's repros): exit codes and submissions per key.
* storage faults (needs root to mount a tmpfs; skipped otherwise): weights on a
  full file system, weights on a read-only one, the study itself on a full
  one; what each run produced, and whether ``--resume`` then completed a study
  equal to the reference.

    python benchmarks/faults.py --kills 8 --device-kills 3 --out benchmarks/results/faults.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from provenance import git_head, load_before_timing

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
seed = 4
[space]
qubits = [2, 4]
layers = [1, 2]
[supercircuit]
epochs = 2
[search]
pop_size = 6
generations = 3
shots = 256
[hardware]
qubit_budget = 3
[compute]
threads = 1
"""
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "qnas_hw.cli", *args]


def _values(study: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from qnas_hw.search.study import Study

    with Study.open(study) as s:
        cands = {c.arch.canonical(): (c.objectives, c.feasible, c.generation) for c in s.candidates()}
        gens = [(g.index, g.population, g.front) for g in s.generations()]
    return {"candidates": json.loads(json.dumps(cands)), "generations": gens}


def _submissions(study: Path) -> dict[int, int]:
    sys.path.insert(0, str(ROOT))
    from qnas_hw.jobs import JobLedger

    ledger = JobLedger(study)
    try:
        counts = ledger.submission_counts()
    finally:
        ledger.close()
    hist: dict[int, int] = {}
    for n in counts.values():
        hist[n] = hist.get(n, 0) + 1
    return hist


def reference(work: Path, extra: list[str]) -> tuple[Path, float]:
    cfg = work / "config.toml"
    cfg.write_text(CONFIG)
    out = work / f"reference{'-device' if extra else ''}"
    t0 = time.perf_counter()
    subprocess.run(
        _cli("search", "--config", str(cfg), "--out", str(out), "--no-progress", *extra),
        env=ENV,
        check=True,
        capture_output=True,
    )
    return out / "study.sqlite", time.perf_counter() - t0


def kill_trials(work: Path, ref: Path, seconds: float, n: int, rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        out = work / f"kill{i}"
        at = rng.uniform(0.5, seconds)
        victim = subprocess.Popen(
            _cli("search", "--config", str(work / "config.toml"), "--out", str(out), "--no-progress"),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(at)
        finished = victim.poll() is not None
        if not finished:
            os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        study = out / "study.sqlite"
        if not study.exists():  # killed before the study was created: a fresh start is the resume
            resumed = subprocess.run(
                _cli("search", "--config", str(work / "config.toml"), "--out", str(out), "--no-progress"),
                env=ENV,
                capture_output=True,
                text=True,
            )
        else:
            resumed = subprocess.run(
                _cli("search", "--resume", str(study), "--no-progress"), env=ENV, capture_output=True, text=True
            )
        identical = resumed.returncode == 0 and _values(study) == _values(ref)
        rows.append(
            {
                "trial": i,
                "killed_at_s": round(at, 2),
                "finished_before_kill": finished,
                "resume_exit": resumed.returncode,
                "identical": identical,
            }
        )
        print(f"  kill {i}: at {at:.1f} s, resume exit {resumed.returncode}, identical {identical}", flush=True)
    return rows


DEVICE_CHILD = """
import sys, torch
torch.set_num_threads(1)
from qnas_hw.config import load_config, with_overrides
from qnas_hw.jobs.detached import DetachedBackend
from qnas_hw.search.nsga import run_search
cfg = with_overrides(load_config(sys.argv[1]), **{"search.accuracy": "device", "search.device.concurrency": 16})
run_search(cfg, sys.argv[2], progress=False, backend=DetachedBackend("fake_kolkata", sys.argv[3], delay_s=0.5))
"""

DEVICE_RESUME = """
import sys, torch
torch.set_num_threads(1)
from qnas_hw.jobs.detached import DetachedBackend
from qnas_hw.search.nsga import run_search
b = DetachedBackend("fake_kolkata", sys.argv[2])
run_search(None, resume=sys.argv[1], progress=False, backend=b).close()
print("NEW_SUBMISSIONS", len(b.submitted))
"""


def device_kill_trials(work: Path, ref: Path, seconds: float, n: int, rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        out, spool = work / f"dkill{i}", work / f"spool{i}"
        at = rng.uniform(2.0, seconds)
        victim = subprocess.Popen(
            [sys.executable, "-c", DEVICE_CHILD, str(work / "config.toml"), str(out), str(spool)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(at)
        finished = victim.poll() is not None
        if not finished:
            os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        study = out / "study.sqlite"
        if not study.exists():
            rows.append({"trial": i, "killed_at_s": round(at, 2), "note": "killed before the study existed"})
            continue
        resumed = subprocess.run(
            [sys.executable, "-c", DEVICE_RESUME, str(study), str(spool)], env=ENV, capture_output=True, text=True
        )
        identical = resumed.returncode == 0 and _values(study) == _values(ref)
        hist = _submissions(study)
        rows.append(
            {
                "trial": i,
                "killed_at_s": round(at, 2),
                "finished_before_kill": finished,
                "resume_exit": resumed.returncode,
                "identical": identical,
                "submissions_per_key": hist,
            }
        )
        print(f"  device kill {i}: at {at:.1f} s, identical {identical}, submissions per key {hist}", flush=True)
    return rows


def two_writers(work: Path, ref: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    run = work / "two_hw_eval"
    shutil.copytree(ref.parent, run)
    cmd = _cli("hw-eval", str(run / "study.sqlite"), "--backend", "fake_kolkata", "--chunk-rows", "8", "--resume")
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    res = [p.communicate() for p in procs]
    out["hw_eval"] = {
        "exit_codes": sorted(p.returncode for p in procs),
        "refusal": next(
            (e.strip().splitlines()[-1] for (_, e), p in zip(res, procs, strict=True) if p.returncode), None
        ),
        "submissions_per_key": _submissions(run / "study.sqlite"),
    }
    run = work / "two_search"
    shutil.copytree(ref.parent, run)
    # drop the last generation record so both resumes have a generation to commit (the repro)
    import sqlite3

    conn = sqlite3.connect(run / "study.sqlite")
    last = conn.execute("SELECT MAX(idx) FROM generations").fetchone()[0]
    conn.execute("DELETE FROM generations WHERE idx = ?", (last,))
    conn.execute("DELETE FROM algorithm_state WHERE generation = ?", (last,))
    conn.commit()
    conn.close()
    cmd = _cli("search", "--resume", str(run / "study.sqlite"), "--no-progress")
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    res = [p.communicate() for p in procs]
    out["search"] = {
        "exit_codes": sorted(p.returncode for p in procs),
        "messages": [e.strip().splitlines()[-1] if e.strip() else o.strip().splitlines()[-1] for (o, e) in res],
    }
    print(f"  two writers: {out}", flush=True)
    return out


def _mount(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def storage_faults(work: Path, ref: Path) -> list[dict[str, Any]]:
    rows = []
    cases = [
        ("weights on a full file system", "weights", "64k", False),
        ("weights on a read-only file system", "weights", "64k", True),
        ("the study on a full file system", "study", "96k", False),
    ]
    for label, where, size, readonly in cases:
        mnt = work / f"mnt-{where}-{int(readonly)}"
        if not _mount(mnt, size):
            rows.append({"fault": label, "skipped": "cannot mount a tmpfs (needs root)"})
            continue
        try:
            if where == "weights":
                out = work / f"io-{where}-{int(readonly)}"
                out.mkdir()
                (mnt / "filler").write_bytes(b"\0" * (40 * 1024))
                (out / "weights").symlink_to(mnt, target_is_directory=True)
                if readonly:
                    (mnt / "filler").unlink()
                    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
                study = out / "study.sqlite"
            else:
                out = mnt / "run"
                study = out / "study.sqlite"
                (mnt / "filler").write_bytes(b"\0" * (16 * 1024))
            first = subprocess.run(
                _cli("search", "--config", str(work / "config.toml"), "--out", str(out), "--no-progress"),
                env=ENV,
                capture_output=True,
                text=True,
            )
            message = (first.stderr.strip().splitlines() or [""])[-1]
            failed_records = None
            if study.exists():
                sys.path.insert(0, str(ROOT))
                from qnas_hw.search.study import Study

                with Study.open(study) as s:
                    failed_records = sum("error" in c.details for c in s.candidates())
            # give the space back (or make it writable) and resume
            if readonly:
                subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
            if (mnt / "filler").exists():
                (mnt / "filler").unlink()
            subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)  # room for the whole run
            resumed = (
                subprocess.run(
                    _cli("search", "--resume", str(study), "--no-progress"), env=ENV, capture_output=True, text=True
                )
                if study.exists()
                else None
            )
            identical = resumed is not None and resumed.returncode == 0 and _values(study) == _values(ref)
            rows.append(
                {
                    "fault": label,
                    "exit_code": first.returncode,
                    "message": message[:400],
                    "failed_candidates_recorded": failed_records,
                    "resume_exit": None if resumed is None else resumed.returncode,
                    "resume_identical": identical,
                }
            )
            print(f"  {label}: exit {first.returncode}, {message[:160]} | resume identical {identical}", flush=True)
        finally:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=8)
    ap.add_argument("--device-kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="qnas-faults-"))
    t0 = time.perf_counter()
    ref, seconds = reference(work, [])
    print(f"reference search: {seconds:.1f} s", flush=True)
    kills = kill_trials(work, ref, seconds, args.kills, rng)
    dref, dseconds = reference(work, ["--accuracy", "device"])
    print(f"reference device search: {dseconds:.1f} s", flush=True)
    dkills = device_kill_trials(work, dref, dseconds, args.device_kills, rng)
    writers = two_writers(work, ref)
    storage = storage_faults(work, ref)
    total = time.perf_counter() - t0
    summary = {
        "kills_tried": len(kills),
        "resumes_identical": sum(r["identical"] for r in kills),
        "device_kills_tried": len(dkills),
        "device_resumes_identical": sum(bool(r.get("identical")) for r in dkills),
        "device_max_submissions_per_key": max(
            (max(map(int, r["submissions_per_key"])) for r in dkills if r.get("submissions_per_key")), default=None
        ),
    }
    print(json.dumps(summary, indent=1))
    print(f"wall time {total:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        commit = git_head()
        args.out.write_text(
            json.dumps(
                {
                    "command": "python benchmarks/faults.py " + " ".join(sys.argv[1:]),
                    "commit": commit,
                    "load_before_timing": load_before_timing(),
                    "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
                    "seconds": total,
                    "summary": summary,
                    "kills": kills,
                    "device_kills": dkills,
                    "two_writers": writers,
                    "storage_faults": storage,
                },
                indent=1,
                default=str,
            )
            + "\n"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
