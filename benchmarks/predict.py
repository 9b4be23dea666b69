"""``qnas-hw predict`` on 1,000 MNIST-4 test images on fake_quito: how long a user waits, and does it agree?

    python benchmarks/predict.py --data-dir ../shared/datasets --out benchmarks/results/predict.json

Runs a small noise-aware MNIST-4 search on fake_quito (the noise-aware
benchmark's quick preset, no classical front-end; or ``--study`` to reuse
one), exports its knee with ``qnas-hw export``, then times ``qnas-hw predict``
on the first ``--samples`` test images as a user runs it: a fresh process,
wall clock from start to exit (interpreter, imports, bundle checks, the
noisy simulation of every image at the bundle's shots, the readout
calibration job, mthree, writing the files).  The same predictions are
compared with the exact (noiseless) bundle model, ``qnas_hw.load_export``.
Goal: at most 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import ROOT, git_head, uncommitted_files

BACKEND = "fake_quito"
DATASET = "mnist4"
GOAL_SECONDS = 10.0


def _cli() -> str:
    return str(Path(sys.executable).with_name("qnas-hw"))


def _search(data_dir: str, seed: int, out: Path) -> float:
    from presets import pure_quantum_config

    from qnas_hw.search.nsga import run_search

    config = pure_quantum_config(DATASET, BACKEND, "noisy", seed, data_dir, quick=True)
    t0 = time.perf_counter()
    run_search(config, out, progress=False).close()
    return time.perf_counter() - t0


def _run(args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(args, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{shlex.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return seconds, res.stdout


def _exact_agreement(bundle: Path, data_dir: str, samples: int, predictions_csv: Path) -> dict[str, float]:
    """The bundle's exact (statevector) predictions on the same images, and how often predict agrees."""
    import numpy as np
    import torch

    import qnas_hw
    from qnas_hw.deploy.predict import dataset_inputs

    model = qnas_hw.load_export(bundle)
    X, y = dataset_inputs(model.bundle, DATASET, "test", data_dir, samples)
    t0 = time.perf_counter()
    with torch.no_grad():
        exact = model(torch.as_tensor(X)).argmax(dim=-1).numpy()
    seconds = time.perf_counter() - t0
    rows = np.genfromtxt(predictions_csv, delimiter=",", names=True)
    noisy = rows["prediction"].astype(int)
    return {
        "exact_accuracy": float((exact == y).mean()),
        "agreement_with_exact": float((noisy == exact).mean()),
        "exact_seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="../shared/datasets")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed predict runs (a fresh ledger each)")
    ap.add_argument("--study", type=Path, default=None, help="reuse this study.sqlite instead of searching")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qnas-predict-bench-"))
    search_seconds = None
    study = args.study
    if study is None:
        search_seconds = _search(args.data_dir, args.seed, work / "run")
        study = work / "run" / "study.sqlite"
    bundle = work / "bundle"
    export_seconds, _ = _run([_cli(), "export", str(study), "--pick", "knee", "--out", str(bundle)])
    manifest = json.loads((bundle / "manifest.json").read_text())
    timings, last = [], None
    for r in range(args.repeats):
        out = work / f"predictions-{r}"
        cmd = [
            _cli(),
            "predict",
            str(bundle),
            "--dataset",
            DATASET,
            "--split",
            "test",
            "--limit",
            str(args.samples),
            "--data-dir",
            args.data_dir,
            "--backend",
            BACKEND,
            "--out",
            str(out),
        ]
        seconds, _ = _run(cmd)
        timings.append(seconds)
        last = out
    assert last is not None
    summary = json.loads((last / "predict.json").read_text())
    agreement = _exact_agreement(bundle, args.data_dir, args.samples, last / "predictions.csv")
    doc = {
        "benchmark": "predict",
        "command": "python benchmarks/predict.py " + shlex.join(sys.argv[1:]),
        "commit": git_head(),
        "uncommitted_changes": uncommitted_files(),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg()),
        },
        "measures": (
            "wall seconds of `qnas-hw predict BUNDLE --dataset mnist4 --split test --limit N --data-dir DIR "
            f"--backend {BACKEND} --out DIR` in a fresh process, start to exit"
        ),
        "goal_seconds": GOAL_SECONDS,
        "samples": summary["samples"],
        "predict_seconds": timings,
        "predict_seconds_median": sorted(timings)[len(timings) // 2],
        "meets_goal": sorted(timings)[len(timings) // 2] <= GOAL_SECONDS,
        "accuracy": summary["accuracy"],
        "accuracy_ci95": summary["accuracy_ci95"],
        **agreement,
        "shots": manifest["execution"]["shots"],
        "mitigation": summary.get("mitigation"),
        "architecture": manifest["architecture"],
        "pick": manifest["pick"],
        "placement": manifest["placement"],
        "two_qubit_gates": manifest["circuit"]["two_qubit_gates"],
        "validation_accuracy_in_search": manifest["figures"]["validation"],
        "search_seconds": search_seconds,
        "export_seconds": export_seconds,
        "bundle_files": sorted(manifest["files"]),
        "versions": manifest["versions"],
    }
    print(json.dumps({k: doc[k] for k in ("samples", "predict_seconds", "meets_goal", "accuracy")}, indent=1))
    if args.out is not None:
        out = args.out if args.out.is_absolute() else Path.cwd() / args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
