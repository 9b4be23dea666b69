"""A provider whose jobs outlive the client: each job runs in its own detached OS process, re-attachable by id.

Cloud providers keep running a job after the process that submitted it dies;
a local simulator cannot (its job dies with the process, so a resume must
run it again).  To test the cloud path end to end offline - kill the search
mid-generation, resume, re-attach to every submitted job, pay for none twice
- :class:`DetachedBackend` runs each job of a real backend (a fake IBM
snapshot, Aer...) in a separate process started in a new session, with a
spool directory per job: ``request.pkl`` (the PUBs, shots, seed), then
``result.json`` written atomically by the worker.  ``reattach(job_id)`` reads
that directory, from any process.  Results equal those of the wrapped
backend: the worker calls its own ``submit`` with the same seed.

``python -m qnas_hw.jobs.detached JOB_DIR`` is the worker.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qnas_hw.atomic_write import atomic_write, atomic_write_text
from qnas_hw.hardware.backends.base import BackendError, DelegatingBackend, JobHandle, JobState, JobTiming, SamplerPub


class DetachedJob(JobHandle):
    """A job living in ``spool/<id>``; its state is read from the files the worker writes."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    @property
    def job_id(self) -> str:
        return self.dir.name

    def _pid_alive(self) -> bool:
        try:
            pid = int((self.dir / "pid").read_text())
        except (OSError, ValueError):
            return True  # not started yet: the submitter writes the pid right after spawning
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover - another user's process
            return True
        return True

    def state(self) -> JobState:
        if (self.dir / "result.json").is_file():
            return JobState.DONE
        if (self.dir / "error.txt").is_file():
            return JobState.FAILED
        if not self._pid_alive():
            time.sleep(0.05)  # the worker may have finished its rename a moment ago
            return JobState.DONE if (self.dir / "result.json").is_file() else JobState.FAILED
        return JobState.RUNNING

    def _result(self) -> dict[str, Any]:
        while True:
            state = self.state()
            if state is JobState.DONE:
                return json.loads((self.dir / "result.json").read_text())
            if state is JobState.FAILED:
                why = (self.dir / "error.txt").read_text() if (self.dir / "error.txt").is_file() else "worker died"
                raise BackendError(f"detached job {self.job_id} failed: {why}")
            time.sleep(0.05)

    def counts(self) -> list[list[dict[str, int]]]:
        return self._result()["counts"]

    def timing(self) -> JobTiming:
        t = self._result()["timing"]
        return JobTiming(quantum_seconds=t.get("quantum_seconds"), wall_seconds=t.get("wall_seconds"))


class DetachedBackend(DelegatingBackend):
    """Wraps a registry backend; every job runs in a detached worker process (see the module docstring)."""

    def __init__(self, inner: str, spool: Path | str, *, delay_s: float = 0.0) -> None:
        from qnas_hw.hardware.backends import get_backend

        super().__init__(get_backend(inner))  # same name, so the same ledger keys as the wrapped backend
        self.inner_name = inner
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.delay_s = float(delay_s)
        self.submitted: list[str] = []

    @property
    def supports_reattach(self) -> bool:
        return True  # its jobs live in their own processes and spool directories, like a cloud provider's

    def submit(self, pubs: Sequence[SamplerPub], shots: int, seed: int | None = None) -> JobHandle:
        job_dir = self.spool / uuid.uuid4().hex
        job_dir.mkdir()
        # staggered delays (1x, 2x, 3x) so a test can catch some jobs finished and others still running
        delay = self.delay_s * (len(self.submitted) % 3 + 1)
        request = {"backend": self.inner_name, "pubs": list(pubs), "shots": shots, "seed": seed, "delay": delay}
        atomic_write(job_dir / "request.pkl", lambda tmp: tmp.write_bytes(pickle.dumps(request)))
        log = (job_dir / "worker.log").open("wb")
        worker = subprocess.Popen(  # a new session: a SIGKILL of the submitter does not reach it
            [sys.executable, "-m", "qnas_hw.jobs.detached", str(job_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        log.close()
        atomic_write_text(job_dir / "pid", str(worker.pid))
        self.submitted.append(job_dir.name)
        return DetachedJob(job_dir)

    def reattach(self, job_id: str) -> JobHandle:
        job_dir = self.spool / job_id
        if not (job_dir / "request.pkl").is_file():
            raise BackendError(f"{self.name}: no detached job {job_id!r} in {self.spool}")
        return DetachedJob(job_dir)


def _work(job_dir: Path) -> None:
    from qnas_hw.hardware.backends import get_backend

    request = pickle.loads((job_dir / "request.pkl").read_bytes())
    if request["delay"]:
        time.sleep(float(request["delay"]))
    backend = get_backend(request["backend"])
    started = time.perf_counter()
    try:
        handle = backend.submit(request["pubs"], request["shots"], request["seed"])
        counts = handle.counts()
        timing = handle.timing()
    except Exception as exc:  # reported to the client through the spool, like a provider's failed state
        atomic_write_text(job_dir / "error.txt", f"{type(exc).__name__}: {exc}")
        raise
    result = {
        "counts": counts,
        "timing": {"quantum_seconds": timing.quantum_seconds, "wall_seconds": time.perf_counter() - started},
    }
    atomic_write_text(job_dir / "result.json", json.dumps(result))


if __name__ == "__main__":
    _work(Path(sys.argv[1]))
