"""``qnas-hw predict`` on 1,000 MNIST-4 test images on fake_quito: how long a user waits, and does it agree?

    python benchmarks/predict.py --data-dir ../shared/datasets --out benchmarks/results/predict.json

Runs a small noise-aware MNIST-4 search on fake_quito (the noise-aware
benchmark's quick preset, no classical front-end; or ``--study`` to reuse
one), exports its knee with ``qnas-hw export``, then times ``qnas-hw predict``
on ``--samples`` test images as a user runs it: a fresh process, wall clock
from start to exit (interpreter, imports, bundle checks, reading the inputs,
the noisy simulation of every image at the bundle's shots, the readout
calibration job, mthree, writing the files), with the process's CPU seconds
beside it.  Two ways of giving the images: a file of preprocessed inputs
(``--data inputs.npz``, how new data arrives) and ``--dataset mnist4 --limit N``
(which loads and pools the whole MNIST training file to rebuild the study's
splits first).  The predictions are compared with the exact (noiseless)
bundle model, ``qnas_hw.load_export``.
Goal: at most 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def _run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of a command in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(args, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{shlex.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _timed_predicts(bundle: Path, inputs: list[str], work: Path, tag: str, repeats: int) -> dict[str, Any]:
    """``repeats`` runs of ``qnas-hw predict BUNDLE <inputs> --backend fake_quito``, each with a fresh ledger."""
    walls, cpus, phases = [], [], []
    for r in range(repeats):
        out = work / f"{tag}-{r}"
        wall, cpu = _run([_cli(), "predict", str(bundle), *inputs, "--backend", BACKEND, "--out", str(out)])
        walls.append(wall)
        cpus.append(cpu)
        phases.append(json.loads((out / "predict.json").read_text())["timings"].get("phases"))
    median = sorted(walls)[len(walls) // 2]
    return {
        "command": shlex.join(["qnas-hw", "predict", "BUNDLE", *inputs, "--backend", BACKEND, "--out", "DIR"]),
        "wall_seconds": walls,
        "wall_seconds_median": median,
        "cpu_seconds": cpus,
        "in_process_phases_seconds": phases,
        "meets_goal": median <= GOAL_SECONDS,
        "summary": json.loads((work / f"{tag}-{repeats - 1}" / "predict.json").read_text()),
        "predictions_csv": work / f"{tag}-{repeats - 1}" / "predictions.csv",
    }


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
    load_at_start = list(os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="qnas-predict-bench-"))
    search_seconds = None
    study = args.study
    if study is None:
        search_seconds = _search(args.data_dir, args.seed, work / "run")
        study = work / "run" / "study.sqlite"
    bundle = work / "bundle"
    export_seconds, _ = _run([_cli(), "export", str(study), "--pick", "knee", "--out", str(bundle)])
    manifest = json.loads((bundle / "manifest.json").read_text())
    # the images as a user hands new data over: a file of preprocessed inputs (the stratified test subset that
    # `--dataset mnist4 --limit N` takes, so both ways classify the same images)
    import numpy as np

    from qnas_hw.deploy.bundle import open_bundle
    from qnas_hw.deploy.predict import dataset_inputs

    X, y = dataset_inputs(open_bundle(bundle), DATASET, "test", args.data_dir, args.samples)
    np.savez(work / "inputs.npz", X=X, y=y)
    load = list(os.getloadavg())
    from_file = _timed_predicts(bundle, ["--data", str(work / "inputs.npz")], work, "file", args.repeats)
    data_args = ["--dataset", DATASET, "--split", "test", "--limit", str(args.samples), "--data-dir", args.data_dir]
    from_dataset = _timed_predicts(bundle, data_args, work, "dataset", args.repeats)
    summary = from_file.pop("summary")
    agreement = _exact_agreement(bundle, args.data_dir, args.samples, from_file.pop("predictions_csv"))
    from_dataset.pop("summary")
    from_dataset.pop("predictions_csv")
    doc = {
        "benchmark": "predict",
        "command": "python benchmarks/predict.py " + shlex.join(sys.argv[1:]),
        "commit": git_head(),
        "uncommitted_changes": uncommitted_files(),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
        },
        "load_average_before_timing": load,
        "measures": (
            "wall seconds of `qnas-hw predict` in a fresh process, start to exit (interpreter, imports, bundle "
            "checks, inputs, the fake_quito noise simulation of every image at the bundle's shots, the readout "
            "calibration job, mthree, writing predictions.csv); cpu_seconds: user + system of that process"
        ),
        "goal_seconds": GOAL_SECONDS,
        "samples": summary["samples"],
        "predict_from_file": from_file,
        "predict_from_dataset": from_dataset,
        "meets_goal": from_file["meets_goal"],
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
    brief = {"file": from_file["wall_seconds"], "dataset": from_dataset["wall_seconds"], "accuracy": doc["accuracy"]}
    print(json.dumps(brief, indent=1))
    if args.out is not None:
        out = args.out if args.out.is_absolute() else Path.cwd() / args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
