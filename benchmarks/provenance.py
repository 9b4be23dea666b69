"""Which code made a results file: the one git lookup every benchmark records.

Results files in ``benchmarks/results/`` name the commit that produced them so
a reviewer can check out that code; this module is the single place that asks
git, always in this checkout (whatever the caller's working directory).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def git_head(missing: str = "unknown") -> str:
    """The checked-out commit, or ``missing`` outside a git checkout (or without git)."""
    try:
        return _git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        return missing


def uncommitted_files(untracked: bool = False) -> list[str]:
    """Files that differ from the commit (a run made from them is not exactly that commit); new files too if asked."""
    try:
        status = _git("status", "--porcelain", "--untracked-files=" + ("normal" if untracked else "no"))
    except (OSError, subprocess.CalledProcessError):
        return []
    return [line[3:] for line in status.splitlines() if line]


def load_before_timing() -> dict[str, object]:
    """The machine's load just before a benchmark times anything: ``{"load_average": [1, 5, 15 min], "cores": n}``.

    A timing taken while other work used the cores measures the contention, not the code; ``readme_tables.py``
    labels every table whose results file records a load above its core count, so each file records this.
    """
    return {"load_average": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count()}
