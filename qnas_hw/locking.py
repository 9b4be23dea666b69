"""One writer per study (or calibration file): an exclusive OS file lock, held while a process writes.

Two processes writing one study would both submit its device jobs (paying
twice) and both append generations.  So every writer - ``search``,
``hw-eval``, ``calibrate`` - takes an exclusive ``flock`` on ``<file>.lock``
before its first write and keeps it until it exits.  The kernel releases a
``flock`` when its process dies, however it dies, so a lock left behind by a
SIGKILLed run is never stale: the next writer simply gets it.  The lock file
also records who holds it (pid, host, command, since), so a refused second
process can say whom it waits for.

Also here: :class:`ThreadLockPickling`, for in-process locks of objects a distributed search pickles.

Re-entrant within a process (the search's own hardware evaluation opens the
study again): a per-process table counts holders of each path.  Local file
systems only: ``flock`` over NFS is not reliable, and a study on NFS should
not be written from two hosts.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class LockedError(RuntimeError):
    """Another live process holds the writer lock; the message names it."""


@dataclass
class _Held:
    fd: int
    count: int = 1


@dataclass
class _Registry:
    """The locks this process holds, by resolved path (re-entrant acquisition)."""

    held: dict[Path, _Held] = field(default_factory=dict)
    mutex: threading.Lock = field(default_factory=threading.Lock)


_PROCESS = _Registry()


def lock_path(target: Path | str) -> Path:
    target = Path(target)
    return target.with_name(target.name + ".lock")


def holder(target: Path | str) -> dict[str, Any] | None:
    """Who last took the lock of ``target`` (None when never taken or unreadable)."""
    try:
        return json.loads(lock_path(target).read_text())
    except (OSError, ValueError):
        return None


def is_held(target: Path | str) -> bool:
    """Whether a live process holds the writer lock of ``target`` (asked without creating or taking anything).

    A reader uses it to tell a study nobody is writing (which it may read as
    an immutable file, leaving no WAL side files behind) from one being written.
    """
    path = lock_path(target)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock taken just above
    return False


class WriterLock:
    """``with WriterLock(path, "qnas-hw search"):`` - exclusive, re-entrant in-process, released on exit or death."""

    def __init__(self, target: Path | str, purpose: str) -> None:
        self.target = Path(target).resolve()
        self.purpose = purpose
        self._acquired = False

    def acquire(self) -> WriterLock:
        with _PROCESS.mutex:
            held = _PROCESS.held.get(self.target)
            if held is not None:
                held.count += 1
                self._acquired = True
                return self
            path = lock_path(self.target)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockedError(self._refusal()) from None
            except OSError:
                os.close(fd)
                raise
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "purpose": self.purpose,
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
                "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            _PROCESS.held[self.target] = _Held(fd)
            self._acquired = True
        return self

    def _refusal(self) -> str:
        info = holder(self.target) or {}
        who = (
            f"{info.get('purpose', 'another qnas-hw process')} (pid {info.get('pid', '?')} on "
            f"{info.get('host', '?')}, since {info.get('since', '?')}: {info.get('command', '?')})"
        )
        return (
            f"{self.target} is being written by {who}; only one process may write a study at a time (two would both "
            "submit its jobs). Wait for it to finish, or stop it; its lock is released when it exits, even if killed"
        )

    def release(self) -> None:
        if not self._acquired:
            return
        self._acquired = False
        with _PROCESS.mutex:
            held = _PROCESS.held.get(self.target)
            if held is None:
                return
            held.count -= 1
            if held.count == 0:
                del _PROCESS.held[self.target]
                fcntl.flock(held.fd, fcntl.LOCK_UN)
                os.close(held.fd)

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class ThreadLockPickling:
    """Mixin for objects holding ``self._lock = threading.Lock()`` that must still pickle.

    A distributed search ships such objects (noise simulators, program
    builders) to its workers: the lock stays behind and each copy gets a fresh
    one, while the rest of the state (warm caches included) travels.
    """

    _lock: threading.Lock

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
