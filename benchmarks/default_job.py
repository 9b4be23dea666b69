"""The README's main job, run as a user runs it, and what it produced: front, picks, hypervolume curve, wall time.

    python benchmarks/default_job.py --out benchmarks/results/default_job.json

Runs ``qnas-hw search --out DIR --no-progress`` (the embedded default: no
config, offline) in a subprocess, times it, and records the front the report
shows (ties within resolution collapsed), the exact front, the knee and
most-accurate picks, the per-generation hypervolume in the study's fixed box
and the embedding of every front member.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import git_head, load_before_timing, uncommitted_files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    run = Path(tempfile.mkdtemp(prefix="qnas-default-job-")) / "run"
    cli = Path(sys.executable).with_name("qnas-hw")
    load = load_before_timing()  # before the run, as every benchmark records it
    t0 = time.perf_counter()
    subprocess.run([str(cli), "search", "--out", str(run), "--no-progress"], check=True)
    seconds = time.perf_counter() - t0
    report = json.loads((run / "report" / "report.json").read_text())
    front = [
        {
            "architecture": c["architecture"],
            "objectives": c["objectives"],
            "picks": [
                p for p in ("knee", "most_accurate") if (report.get(p) or {}).get("architecture") == c["architecture"]
            ],
        }
        for c in report["front"]
    ]
    from qnas_hw.search.study import Study

    with Study.open(run / "study.sqlite") as study:
        curve = [[g.index, g.hypervolume] for g in study.generations()]
        n = study.n_candidates()
    doc = {
        "command": "python benchmarks/default_job.py " + " ".join(sys.argv[1:]),
        "runs": "qnas-hw search --out DIR --no-progress",
        "commit": git_head(),
        "uncommitted_changes": uncommitted_files(),
        "load_before_timing": load,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "wall_seconds": seconds,
        "candidates": n,
        "front": front,
        "exact_front": report["exact_front"],
        "knee": (report.get("knee") or {}).get("architecture"),
        "most_accurate": (report.get("most_accurate") or {}).get("architecture"),
        "hypervolume_per_generation": curve,
        "hypervolume_box": report["hypervolume_box"],
        "resolutions": report.get("resolutions"),
    }
    print(
        json.dumps({k: doc[k] for k in ("wall_seconds", "candidates", "front", "hypervolume_per_generation")}, indent=1)
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
