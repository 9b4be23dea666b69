"""The README's foundation check: the fixed 8-qubit HQNN of ``examples/mnist_fixed.py`` over seeds, with its ablation.

Per seed, exactly what ``python examples/mnist_fixed.py --seed S`` trains (its
``run_one``, same data split seeded by ``S``, same settings): the hybrid
(``angle-y|q8|l2|ry-rz|sparse|z`` by default) and, paired with it, the
classical ablation (the quantum layer replaced by an identity of width 8, same
initialisation and batch order).  One seed's test accuracy says little about a
0.1-point gap, so the file gives the mean and 95% Student-t interval over
seeds of each model and of the paired difference (hybrid - ablation).

The results file is rewritten after every trained model with
``"complete": false`` until the end, so a stopped run keeps what it measured;
``benchmarks/readme_tables.py`` renders the README table from it.

    python benchmarks/mnist_fixed.py --seeds 0,1,2 --epochs 4 --threads 1 --data-dir ../shared/datasets \
        --out benchmarks/results/mnist_fixed.json

``--limit-train N`` trains on a stratified N-image subset (the README then says so).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from paper_table import _machine, t_interval
from provenance import git_head, uncommitted_files

ROOT = Path(__file__).resolve().parents[1]
#: The two models trained per seed, as ``examples/mnist_fixed.py`` names their quantum layers.
MODELS = {"hybrid": "simulator", "ablation": "identity"}


def _example() -> Any:
    """``examples/mnist_fixed.py`` as a module: the benchmark must train exactly the example's model."""
    spec = importlib.util.spec_from_file_location("mnist_fixed_example", ROOT / "examples" / "mnist_fixed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± 95% CI of each model's test accuracy and of the paired difference, over the finished pairs."""
    pairs = [r for r in runs if all(m in r for m in MODELS)]
    if not pairs:
        return {"seeds_done": 0}
    out: dict[str, Any] = {"seeds_done": len(pairs)}
    for m in MODELS:
        out[f"{m}_test_mean"], out[f"{m}_test_ci95"] = t_interval([r[m]["test_acc"] for r in pairs])
    diffs = [r["hybrid"]["test_acc"] - r["ablation"]["test_acc"] for r in pairs]
    out["diff_test_mean"], out["diff_test_ci95"] = t_interval(diffs)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    ex = _example()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default=ex.DEFAULT_ARCH)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mnist_fixed.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from qnas_hw.atomic_write import atomic_write_text
    from qnas_hw.data import load_dataset
    from qnas_hw.model.space import Architecture
    from qnas_hw.model.training import TrainConfig

    arch = Architecture.parse(args.arch)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    doc: dict[str, Any] = {
        "benchmark": "mnist_fixed",
        "command": "python benchmarks/mnist_fixed.py " + shlex.join(argv),
        "commit": git_head(),
        "uncommitted_changes": uncommitted_files(),
        "machine": _machine(args.threads),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "arch": arch.canonical(),
        "dataset": "mnist",
        "frontend": "cnn",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "limit_train": args.limit_train,
        "seeds": seeds,
        "seconds": 0.0,
        "complete": False,
        "runs": [],
        "summary": {"seeds_done": 0},
    }

    def write(complete: bool = False) -> None:
        doc["seconds"] = time.perf_counter() - t0
        doc["complete"] = complete
        doc["summary"] = summarize(doc["runs"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")

    for seed in seeds:
        splits = load_dataset(
            "mnist", args.data_dir, val_fraction=args.val_fraction, seed=seed, limit_train=args.limit_train
        )
        doc["sizes"] = splits.sizes()
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed)
        run: dict[str, Any] = {"seed": seed}
        doc["runs"].append(run)
        for name, quantum in MODELS.items():
            r = ex.run_one(arch, splits, quantum, cfg, False)
            run[name] = {k: v for k, v in r.items() if k != "model"}
            print(
                f"seed {seed} {name}: val {r['best_val_acc']:.4f} test {r['test_acc']:.4f} ({r['wall_seconds']:.0f} s)",
                flush=True,
            )
            write()
    write(complete=True)
    s = doc["summary"]
    print(
        f"hybrid {100 * s['hybrid_test_mean']:.2f} ± {100 * (s['hybrid_test_ci95'] or 0):.2f}, ablation "
        f"{100 * s['ablation_test_mean']:.2f} ± {100 * (s['ablation_test_ci95'] or 0):.2f}, difference "
        f"{100 * s['diff_test_mean']:+.2f} ± {100 * (s['diff_test_ci95'] or 0):.2f} points; results: {args.out}"
    )
    return doc


if __name__ == "__main__":
    main()
