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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """``atomic_write`` for text (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
