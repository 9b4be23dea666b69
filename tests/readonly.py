"""A read-only view of a directory, for tests of studies in read-only places.

A read-only directory is made with ``chmod`` for an ordinary user and with a
read-only bind mount for root (root ignores file modes); where neither is
possible the calling test is skipped, saying why.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def read_only_view(src: Path, mnt: Path) -> Iterator[Path]:
    """``src`` made read-only (as itself, or as a read-only bind mount at ``mnt`` when running as root)."""
    if os.geteuid() != 0:
        src.chmod(0o555)
        try:
            yield src
        finally:
            src.chmod(0o755)
        return
    mnt.mkdir()
    bind = subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"running as root without mount rights, so no read-only directory can be made: {bind.stderr!r}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only: {ro.stderr!r}")
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
