"""The CNN front-end's default learning rate, chosen on validation accuracy only.

Runs ``examples/mnist_fixed.py`` (CNN -> 8-qubit circuit -> head, and its
classical ablation) once per learning rate on a 10,000-image stratified
training subset for 2 epochs, and records the **validation** accuracy of each;
the test figures that script also prints are deliberately not stored, since
this run exists to make a choice.  ``qnas_hw.config.DEFAULT_LR["cnn"]`` cites
the result file.

    python benchmarks/cnn_lr.py --data-dir ../shared/datasets --out benchmarks/results/cnn_lr.json
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

import torch
from provenance import git_head, load_before_timing

ROOT = Path(__file__).resolve().parents[1]


def run_one(lr: float, args: argparse.Namespace, out: Path) -> dict[str, float | int]:
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "mnist_fixed.py"),
        "--epochs", str(args.epochs), "--seed", str(args.seed), "--threads", "1",
        "--limit-train", str(args.limit_train), "--lr", str(lr), "--data-dir", args.data_dir, "--out", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    runs = json.loads((out / "results.json").read_text())["runs"]
    row: dict[str, float | int] = {"lr": lr}
    for name, label in (("simulator", "hybrid"), ("identity", "ablation")):
        row[f"{label}_best_val_acc"] = runs[name]["best_val_acc"]
        row[f"{label}_best_epoch"] = runs[name]["best_epoch"]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--lrs", default="0.02,0.003")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit-train", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for lr in (float(v) for v in args.lrs.split(",")):
            rows.append(run_one(lr, args, Path(tmp) / f"lr{lr}"))
            print(rows[-1], flush=True)
    doc = {
        "command": "python benchmarks/cnn_lr.py " + " ".join(sys.argv[1:]),
        "commit": git_head(),
        "load_before_timing": load_before_timing(),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "seconds": time.perf_counter() - started,
        "split_used_for_the_choice": "validation (10% of the training file, stratified)",
        "rows": rows,
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
