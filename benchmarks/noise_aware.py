"""Does the device in the loop find better circuits? NSGA-II under noise against the cheap alternatives.

Setting (QuantumNAS's): classes 0-3 of MNIST or Fashion-MNIST, images average-pooled to 4x4 = 16 features, no
classical front-end (the circuit's ``<Z>`` feed a linear head), both 4x4 encoders, 1-4 layers, every rotation and
entangler.  Three benchmarks (:data:`BENCHMARKS`): MNIST-4 and Fashion-4 on ``fake_kolkata`` (4-8 qubits) and
MNIST-4 on ``fake_quito`` (4-5 qubits), each with the IBM snapshot's real noise model.  Per benchmark and search
seed, four searches with the same objectives (val_error, runtime_s), the package's default proxy and the **same
budget**: ``--search-seconds`` of CPU time (what wall-clock is on a quiet machine; CPU time keeps a shared
machine's load from shifting the budget between methods), and at most ``--space-fraction`` of the space's
architectures, so that there is something left to find:

* ``noisy``: NSGA-II (``qnas-hw search``), val_error scored under the device's noise model;
* ``random-noisy``: distinct random architectures, scored the same way;
* ``optuna-noisy``: Optuna's ``NSGAIISampler`` driving the same evaluator;
* ``ideal``: NSGA-II with noise-free val_error (the device out of the loop);
* ``classical`` (once per data set and seed): the circuit replaced by a trainable linear map of width 5.

Each search's knee, most-accurate and best entangling pick (the most accurate candidate with at least one
two-qubit gate: the pick ``min_two_qubit_gates = 1`` would force) are retrained from scratch (``--retrain-epochs``
on the search's training images, epoch chosen on validation) and tested ONCE on a stratified ``--test-samples``
subset of the test split under the device's noise (and exactly, for reference).  Nothing is chosen on test
figures.  ``comparisons``: ``noisy`` minus each other method in noisy test accuracy, paired by seed, with a 95% t
interval.  Rows are written as each search's picks finish, and a rerun with the same ``--out`` continues.

    python benchmarks/noise_aware.py --data-dir ../shared/datasets --seeds 0,1,2,3,4 \\
        --out benchmarks/results/noise_aware.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from presets import search_proof_config
from provenance import git_head, load_before_timing, uncommitted_files
from search_quality import CpuDeadline, measure, run_nsga2_until, run_optuna, run_random

ROOT = Path(__file__).resolve().parents[1]
#: name -> data set, target, qubit range (the space's other genes are :func:`presets.search_proof_config`'s)
BENCHMARKS: dict[str, dict[str, Any]] = {
    "mnist4-kolkata": {"dataset": "mnist4", "backend": "fake_kolkata", "qubits": [4, 8]},
    "fashion4-kolkata": {"dataset": "fashion4", "backend": "fake_kolkata", "qubits": [4, 8]},
    "mnist4-quito": {"dataset": "mnist4", "backend": "fake_quito", "qubits": [4, 5]},
}
METHODS = ("noisy", "random-noisy", "optuna-noisy", "ideal")
RUNNERS = {"noisy": run_nsga2_until, "random-noisy": run_random, "optuna-noisy": run_optuna, "ideal": run_nsga2_until}
COMPARED = ("random-noisy", "optuna-noisy", "ideal")


def picks(study: Any) -> dict[str, str]:
    """Knee and most-accurate of the study's front (of all its records, for random search), and the most accurate
    entangling candidate (at least one two-qubit gate), each a candidate scored at the proxy's top rung."""
    from qnas_hw.model.circuits import entangling_gates
    from qnas_hw.reports.data import analyze

    records = study.candidates()
    data = analyze(records, study.generations(), study.objective_names, study.config)
    out = {}
    for label, idx in (("knee", data.knee), ("most-accurate", data.most_accurate)):
        if idx is not None:
            out[label] = data.candidates[idx].arch.canonical()
    entangling = [r for r in data.candidates if entangling_gates(r.arch) >= 1 and r.usable]
    if entangling:
        best = min(entangling, key=lambda r: (r.objectives["val_error"], r.objectives.get("runtime_s", 0.0)))
        out["best-entangling"] = best.arch.canonical()
    return out


def _test_subset(splits: Any, samples: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stratified subset of the test split (the same for every method of a seed: a paired comparison)."""
    from qnas_hw.data import stratified_subset

    X, y = splits.test.tensors
    idx = torch.as_tensor(stratified_subset(y.numpy(), samples, seed))
    return X[idx], y[idx]


def retrain_and_test(config: Any, arch_text: str, seed: int, epochs: int, test_samples: int | None) -> dict[str, Any]:
    """The pick from scratch as the search trains it, then ONE test under the device noise (and exactly)."""
    from qnas_hw.hardware.execution import ProgramBuilder
    from qnas_hw.hardware.noise import NoisySimulator
    from qnas_hw.model.circuits import entangling_gates
    from qnas_hw.model.hqnn import HQNN
    from qnas_hw.model.space import Architecture
    from qnas_hw.model.training import TrainConfig, train_model
    from qnas_hw.search.building import load_splits, make_hardware
    from qnas_hw.search.scoring import NoisyScorer

    arch = Architecture.parse(arch_text)
    splits = load_splits(config)
    hw = make_hardware(config)
    simulator = NoisySimulator(hw.backend)
    model = HQNN(arch, tuple(splits.input_shape), splits.n_classes, frontend="none", seed=seed)
    t0 = time.perf_counter()
    result = train_model(model, splits, TrainConfig(epochs=epochs, batch_size=64, lr=0.05, seed=seed))
    train_s = time.perf_counter() - t0
    model.eval()
    X, y = _test_subset(splits, test_samples, config.seed)
    with torch.no_grad():
        ideal = float((model(X).argmax(-1) == y).float().mean())
    scorer = NoisyScorer(
        ProgramBuilder(hw.backend, hw.transpiler, None, config.search.shots),
        simulator,
        mitigation=True,
        seed=seed + 100_000,
    )
    noisy, details = scorer.score(arch, model, X, y)
    rec = hw.transpiler.transpile(arch)
    return {
        "test_acc_noisy": noisy,
        "test_acc_ideal": ideal,
        "test_samples": len(y),
        "val_acc_best": result.best_val_acc,
        "n_qubits": arch.n_qubits,
        "n_2q": rec.n_2q,
        "product_state": entangling_gates(arch) == 0,
        "layout": details["layout"],
        "esp": details["esp"],
        "retrain_seconds": train_s,
    }


def classical_ablation(config: Any, seed: int, epochs: int, test_samples: int | None, width: int = 5) -> dict[str, Any]:
    """The same inputs and head with the circuit replaced by a trainable linear map of the circuit's width.

    16 pooled features -> linear ``width`` -> linear 4 classes, trained like the picks (same data, epochs,
    optimiser, epoch chosen on validation) and tested once on the same test samples.  If this matches the quantum
    picks, the quantum part does not decide the headline figure.
    """
    from qnas_hw.model.hqnn import HQNN
    from qnas_hw.model.space import Architecture
    from qnas_hw.model.training import TrainConfig, train_model
    from qnas_hw.search.building import load_splits

    splits = load_splits(config)
    arch = Architecture.parse(f"4x4-ryzxy|q{width}|l1|ry|none|z")
    model = HQNN(arch, tuple(splits.input_shape), splits.n_classes, frontend="linear", quantum="identity", seed=seed)
    t0 = time.perf_counter()
    result = train_model(model, splits, TrainConfig(epochs=epochs, batch_size=64, lr=0.05, seed=seed))
    model.eval()
    X, y = _test_subset(splits, test_samples, config.seed)
    with torch.no_grad():
        acc = float((model(X).argmax(-1) == y).float().mean())
    return {
        "test_acc_noisy": acc,  # no circuit, so no device noise: the same figure both ways
        "test_acc_ideal": acc,
        "test_samples": len(y),
        "val_acc_best": result.best_val_acc,
        "n_qubits": 0,
        "n_2q": 0,
        "product_state": None,
        "layout": None,
        "esp": None,
        "retrain_seconds": time.perf_counter() - t0,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def ci95(values: list[float]) -> float:
    """Half-width of the 95% Student-t interval of the mean (NaN below two values)."""
    from scipy import stats

    if len(values) < 2:
        return math.nan
    return float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and 95% CI over search seeds per (data set, device, mode, pick)."""
    rows = []
    keys = sorted({(r["dataset"], r["backend"], r["mode"], r["pick"]) for r in runs})
    for dataset, backend, mode, pick in keys:
        sel = [r for r in runs if (r["dataset"], r["backend"], r["mode"], r["pick"]) == (dataset, backend, mode, pick)]
        noisy = [r["test_acc_noisy"] for r in sel]
        ideal = [r["test_acc_ideal"] for r in sel]
        rows.append(
            {
                "dataset": dataset,
                "backend": backend,
                "mode": mode,
                "pick": pick,
                "architecture": sorted({r["architecture"] for r in sel}),
                "test_acc_noisy_mean": float(np.mean(noisy)),
                "test_acc_noisy_ci95": ci95(noisy),
                "test_acc_ideal_mean": float(np.mean(ideal)),
                "test_acc_ideal_ci95": ci95(ideal),
                "seeds": [r["seed"] for r in sel],
                "per_seed_noisy": noisy,
                "product_states": sum(bool(r.get("product_state")) for r in sel),
                "qubits": [r["n_qubits"] for r in sel],
                "n_2q": [r["n_2q"] for r in sel],
                "layouts": [r["layout"] for r in sel],
                "esp": [r["esp"] for r in sel],
                "search_seconds": float(np.mean([r["search_seconds"] for r in sel])),
                "evaluations": [r.get("evaluations") for r in sel],
            }
        )
    return rows


def comparisons(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``noisy`` minus each other method, in noisy test accuracy, paired by seed (same data, same test samples)."""
    out = []
    keys = sorted({(r["dataset"], r["backend"], r["pick"]) for r in runs if r["mode"] == "noisy"})
    for dataset, backend, pick in keys:
        a = {
            r["seed"]: r["test_acc_noisy"]
            for r in runs
            if (r["dataset"], r["backend"], r["pick"], r["mode"]) == (dataset, backend, pick, "noisy")
        }
        for other in COMPARED:
            b = {
                r["seed"]: r["test_acc_noisy"]
                for r in runs
                if (r["dataset"], r["backend"], r["pick"], r["mode"]) == (dataset, backend, pick, other)
            }
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            diffs = [a[s] - b[s] for s in seeds]
            mean, half = float(np.mean(diffs)), ci95(diffs)
            out.append(
                {
                    "dataset": dataset,
                    "backend": backend,
                    "pick": pick,
                    "a": "noisy",
                    "b": other,
                    "diff_mean": mean,
                    "diff_ci95": None if math.isnan(half) else [mean - half, mean + half],
                    "per_seed": diffs,
                    "seeds": seeds,
                }
            )
    return out


def hypervolumes(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean hypervolume (each study's fixed box) per benchmark and method, over seeds."""
    out = []
    searches = {(r["benchmark"], r["mode"], r["seed"]): r for r in runs if "hypervolume" in r}
    for bench, mode in sorted({(b, m) for b, m, _ in searches}):
        hv = [r["hypervolume"] for (b, m, _), r in searches.items() if (b, m) == (bench, mode)]
        out.append(
            {
                "benchmark": bench,
                "mode": mode,
                "hypervolume_mean": float(np.mean(hv)),
                "hypervolume_ci95": ci95(hv),
                "seeds": len(hv),
            }
        )
    return out


def write(out: Path, argv: list[str], doc: dict[str, Any], runs: list[dict[str, Any]], complete: bool) -> None:
    """Rewrite the result file after every search's picks, so a campaign that is stopped keeps what it measured."""
    import qiskit
    import qiskit_aer

    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/noise_aware.py " + " ".join(argv)
    # every run whose searches the file holds (processes side by side, continued runs)
    commands = doc.setdefault("commands", [doc["command"]] if "command" in doc else [])
    if command not in commands:
        commands.append(command)
    doc.update(
        {
            "command": command,
            "commit": git_head(),
            "uncommitted_changes": uncommitted_files(),
            "complete": complete,
            "machine": {
                "cores": os.cpu_count(),
                "platform": platform.platform(),
                "torch": torch.__version__,
                "qiskit": qiskit.__version__,
                "qiskit_aer": qiskit_aer.__version__,
            },
            "seconds": sum(r.get("search_seconds", 0.0) + r.get("retrain_seconds", 0.0) for r in runs),
            "rows": summarize(runs),
            "comparisons": comparisons(runs),
            "hypervolume": hypervolumes(runs),
            "runs": runs,
        }
    )
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(out)


def search(config: Any, mode: str, out: Path, seconds: float | None, cap: int) -> dict[str, Any]:
    """One budgeted search; its picks, hypervolume, evaluations and its wall and CPU seconds."""
    deadline = CpuDeadline(seconds)
    t0, c0 = time.perf_counter(), time.process_time()
    study = RUNNERS[mode](config, out, deadline=deadline, cap=cap)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    try:
        found = {"picks": picks(study), **measure(study, config)}
    finally:
        study.close()
        shutil.rmtree(out, ignore_errors=True)
    found.pop("best_val_error_curve", None)
    return {**found, "search_seconds": wall, "search_cpu_seconds": cpu}


def merged_runs(docs: list[dict[str, Any]], have: set[tuple[str, str, int]]) -> list[dict[str, Any]]:
    """The searches of other results files (a campaign split over processes by seed) that ``have`` lacks; each row
    keeps the command and commit that measured it."""
    out: list[dict[str, Any]] = []
    for theirs in docs:
        for r in theirs.get("runs", []):
            key = (r["benchmark"], r["mode"], r["seed"])
            if key not in have:
                out.append({**r, "measured_by": {"command": theirs.get("command"), "commit": theirs.get("commit")}})
        have |= {(r["benchmark"], r["mode"], r["seed"]) for r in out}
    return out


def _complete(runs: list[dict[str, Any]], target: set[tuple[str, str, int]]) -> bool:
    """Every (benchmark, method, seed) of the campaign measured (the classical ablation: once per data set)."""
    have = {(r["benchmark"], r["mode"], r["seed"]) for r in runs}
    classical = {(r["dataset"], r["seed"]) for r in runs if r["mode"] == "classical"}
    return all(
        (BENCHMARKS[b]["dataset"], s) in classical if m == "classical" else (b, m, s) in have for b, m, s in target
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="../shared/datasets")
    ap.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--modes", default=",".join(METHODS + ("classical",)))
    ap.add_argument("--search-seconds", type=float, default=240.0, help="CPU seconds per search, every method")
    ap.add_argument("--space-fraction", type=float, default=0.1, help="at most this share of the space per search")
    ap.add_argument("--retrain-epochs", type=int, default=10)
    ap.add_argument("--test-samples", type=int, default=1000, help="stratified test subset (same for every method)")
    ap.add_argument("--quick", action="store_true", help="tiny settings (a smoke test, not a result)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--target-seeds", default="0,1,2,3,4", help="the campaign's seeds: the file is complete when all are measured"
    )
    ap.add_argument("--summarise-only", action="store_true", help="merge and rewrite the file; run nothing")
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="results files of runs side by side (other seeds): their searches are folded into --out, then it goes on",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    argv = sys.argv[1:]
    unknown = [m for m in args.modes.split(",") if m not in (*METHODS, "classical")]
    if unknown or any(b not in BENCHMARKS for b in args.benchmarks.split(",")):
        raise SystemExit(f"modes from {METHODS + ('classical',)}, benchmarks from {tuple(BENCHMARKS)}")
    doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out is not None and args.out.is_file() else {}
    runs: list[dict[str, Any]] = doc.get("runs", [])
    merged = [json.loads(path.read_text()) for path in args.merge]
    runs += merged_runs(merged, {(r["benchmark"], r["mode"], r["seed"]) for r in runs})
    for theirs in merged:  # the merged files' runs are part of this file's provenance
        for command in theirs.get("commands") or [theirs.get("command")]:
            if command and command not in doc.setdefault("commands", []):
                doc["commands"].append(command)
    done = {(r["benchmark"], r["mode"], r["seed"]) for r in runs}
    loads = [doc.get("load_before_timing")] + [theirs.get("load_before_timing") for theirs in merged]
    # a summary times nothing: it keeps the highest load its searches were timed at, so a loaded run stays labelled
    load = max((x for x in loads if x), key=lambda x: x["load_average"][0], default=None)
    if not args.summarise_only or load is None:
        load = load_before_timing()
    doc.update({"load_before_timing": load, "search_seconds": args.search_seconds})
    doc.setdefault("budget", {})
    work = Path(tempfile.mkdtemp(prefix="qnas-noise-aware-"))
    epochs = 2 if args.quick else args.retrain_epochs
    seeds = [] if args.summarise_only else [int(s) for s in args.seeds.split(",")]
    target = {
        (bench, mode, int(seed))
        for bench in args.benchmarks.split(",")
        for mode in (*METHODS, "classical")
        for seed in args.target_seeds.split(",")
    }
    for seed in seeds:
        for bench in args.benchmarks.split(","):
            b = BENCHMARKS[bench]
            for mode in args.modes.split(","):
                if (bench, mode, seed) in done or (
                    mode == "classical"
                    and any(
                        r["mode"] == "classical" and r["dataset"] == b["dataset"] and r["seed"] == seed for r in runs
                    )
                ):
                    continue  # measured by an earlier run (classical: once per data set and seed)
                config = search_proof_config(
                    b["dataset"],
                    b["backend"],
                    b["qubits"],
                    "ideal" if mode == "ideal" else "noisy",
                    seed,
                    args.data_dir,
                    args.quick,
                )
                size = config.search_space().size
                pop = config.search.pop_size  # whole populations, so NSGA-II's generations spend exactly the cap
                cap = pop * max(1, math.floor(args.space_fraction * size / pop))
                doc["budget"][bench] = {"space_size": size, "max_evaluations": cap, "cpu_seconds": args.search_seconds}
                if mode == "classical":
                    found = {"picks": {"no-circuit": "linear-16-5-4"}, "search_seconds": 0.0}
                else:
                    found = search(config, mode, work / f"{bench}-{mode}-{seed}", args.search_seconds, cap)
                base = {k: v for k, v in found.items() if k not in ("picks", "box", "embeddings_on_front")}
                tested: dict[str, dict[str, Any]] = {}  # picks of one search are often one architecture: test it once
                for pick, arch in found["picks"].items():
                    if arch not in tested:
                        tested[arch] = (
                            classical_ablation(config, seed, epochs, args.test_samples)
                            if mode == "classical"
                            else retrain_and_test(config, arch, seed, epochs, args.test_samples)
                        )
                    r = tested[arch]
                    row = {
                        "benchmark": bench,
                        "dataset": b["dataset"],
                        "backend": "-" if mode == "classical" else b["backend"],
                        "mode": mode,
                        "seed": seed,
                        "pick": pick,
                        "architecture": arch,
                        **base,
                        **r,
                    }
                    runs.append(row)
                    print(
                        f"{bench} {mode:<13} seed {seed} {pick:<15} {arch:<36} test noisy {r['test_acc_noisy']:.3f} "
                        f"ideal {r['test_acc_ideal']:.3f} ({base.get('evaluations', 0)} evaluated in "
                        f"{base['search_seconds']:.0f} s)",
                        flush=True,
                    )
                if args.out is not None:
                    write(args.out, argv, doc, runs, complete=False)
    if args.out is not None:
        write(args.out, argv, doc, runs, complete=_complete(runs, target))
    for c in comparisons(runs):
        ci = "n/a" if c["diff_ci95"] is None else f"[{100 * c['diff_ci95'][0]:+.1f}, {100 * c['diff_ci95'][1]:+.1f}]"
        print(f"{c['dataset']} {c['backend']} {c['pick']:<15} noisy - {c['b']:<13} {100 * c['diff_mean']:+.1f} {ci}")


if __name__ == "__main__":
    main()
