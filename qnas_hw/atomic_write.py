"""Write-then-rename for every file a run must not lose half of.

Why one helper: studies' configs, calibration files, cut-plan caches, candidate
weights and SuperCircuit checkpoints are all read back by a later (resumed)
process.  A crash or SIGKILL mid-write must leave the old file, or no file,
never a truncated one; and two processes writing the same cache entry must not
share a temporary file.  The temporary file sits in the target's directory (so
the rename stays on one file system and is atomic) under a name unique to this
writer, and is removed if writing fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path | str, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then rename it onto ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:  # a failed write() names no file: say which one it was
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """``atomic_write`` for text (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class DamagedFileError(ValueError):
    """A file that exists but cannot be read back (truncated, overwritten): the message names it."""


def atomic_write_torch(path: Path | str, obj: object) -> Path:
    """``torch.save`` through memory, then an atomic write: a full disk raises ``OSError`` with its errno.

    (``torch.save`` straight to a file reports a failed write as a generic
    ``RuntimeError`` from its zip writer, which cannot be told apart from a bug.)
    """
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def read_torch(path: Path | str, what: str) -> object:
    """``torch.load`` (CPU, weights only) whose failure on a damaged file names the file and what it holds."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno is not None:
            raise  # a disk problem, not a damaged file
        raise DamagedFileError(f"{what} {path} is damaged and cannot be read ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # the unpickler fails in many ways on garbage (IndexError, KeyError, RuntimeError...)
        raise DamagedFileError(f"{what} {path} is damaged and cannot be read ({type(exc).__name__}: {exc})") from None


def nearest_existing(path: Path | str) -> Path:
    """``path`` or its nearest ancestor that exists: the directory whose permissions decide whether a file can be
    created there (``atomic_write`` creates the missing folders below it).  Checked before expensive work, so a
    read-only place is refused in one line rather than after a training or a fit."""
    place = Path(path)
    while not place.exists() and place != place.parent:
        place = place.parent
    return place
