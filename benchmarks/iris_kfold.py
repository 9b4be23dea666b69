"""The Iris pick against its classical ablation under repeated stratified k-fold, not one 30-flower test split.

The paper table scores the Iris pick on one fixed 30-flower test split, where
one flower is 3.3 points and the 95% interval is about +-15 points: it cannot
tell the hybrid from its ablation.  Here every flower is a test flower once per
repeat: ``RepeatedStratifiedKFold`` (``--folds`` x ``--repeats``, seeded by
``--seed``) over the 150 flowers.  In each fold:

* the test fold (30 flowers) is never used to choose anything and is read once
  per trained model;
* the validation split (``--val-fraction`` of the training fold, stratified,
  seeded by the fold) is carved from the training fold only; it picks the epoch
  (early stopping, accuracy then loss), exactly as the paper table's retrain;
* the inputs are standardised with the statistics of the fold's training part only;
* the hybrid (the Iris pick of ``benchmarks/results/paper_table.json``) and its
  classical ablation (``HQNN(..., quantum="identity")``, the paper table's
  ablation: same front-end and head, same initialisation and batch order) are
  trained with the paper table's Iris retrain settings (read from that file's
  recorded ``train_config``), model seed = fold number.

Figures: mean test accuracy of each model over the folds, and the mean of the
paired per-fold difference (hybrid - ablation) with two 95% intervals: the
plain Student-t over the folds, and the Nadeau-Bengio corrected one, which
widens the variance by ``1/k + n_test/n_train`` because the folds' training sets
overlap and their differences are not independent (the plain interval is too
narrow).  The verdict uses the corrected interval.

The results file is rewritten after every fold with ``"complete": false``
until the end; ``benchmarks/readme_tables.py`` renders the README table from it.

    python benchmarks/iris_kfold.py --folds 5 --repeats 5 --threads 1 --out benchmarks/results/iris_kfold.json
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from paper_table import MODELS, _machine, fit, t_interval
from provenance import git_head, uncommitted_files

ROOT = Path(__file__).resolve().parents[1]
PAPER_TABLE = ROOT / "benchmarks" / "results" / "paper_table.json"


def iris_pick(path: Path) -> dict[str, Any]:
    """The Iris pick of the paper table: its architecture, front-end and recorded retrain settings."""
    doc = json.loads(path.read_text())
    ds = next(d for d in doc["datasets"] if d["dataset"] == "iris")
    pick = ds["picks"][0]
    return {
        "arch": pick["arch"],
        "labels": pick["labels"],
        "frontend": ds["config"]["model"]["frontend"],
        "train_config": pick["train_config"],
        "val_fraction": ds["config"]["data"]["val_fraction"],
        "paper_table_commit": doc["commit"],
    }


def fold_splits(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, val_fraction: float, seed: int):
    """Train / validation (carved from the training fold) / test (the fold), standardised on the train part."""
    from sklearn.model_selection import train_test_split
    from torch.utils.data import TensorDataset

    from qnas_hw.data import DatasetSplits

    tr, va = train_test_split(train, test_size=val_fraction, stratify=y[train], random_state=seed)
    mean, std = x[tr].mean(axis=0), x[tr].std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std

    def ds(idx: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy(z[idx].astype(np.float32)), torch.from_numpy(y[idx].astype(np.int64)))

    return DatasetSplits(
        name="iris",
        train=ds(tr),
        val=ds(va),
        test=ds(test),
        n_classes=3,
        input_shape=(x.shape[1],),
        indices={"train": np.sort(tr), "val": np.sort(va), "test": np.sort(test)},
    )


def corrected_interval(diffs: Sequence[float], test_over_train: float) -> float | None:
    """Nadeau-Bengio 95% half-width: the t interval with variance scaled by 1/k + n_test/n_train."""
    from scipy import stats

    k = len(diffs)
    if k < 2:
        return None
    mean = sum(diffs) / k
    var = sum((d - mean) ** 2 for d in diffs) / (k - 1)
    return float(stats.t.ppf(0.975, k - 1) * math.sqrt((1 / k + test_over_train) * var))


def summarize(folds: list[dict[str, Any]], test_over_train: float) -> dict[str, Any]:
    """Per-model means and the paired difference's plain and corrected intervals, over the finished folds."""
    done = [f for f in folds if all(m in f for m in MODELS)]
    if not done:
        return {"folds_done": 0}
    out: dict[str, Any] = {"folds_done": len(done)}
    for m in MODELS:
        out[f"{m}_test_mean"], out[f"{m}_test_ci95"] = t_interval([f[m]["test_acc"] for f in done])
    diffs = [f["hybrid"]["test_acc"] - f["ablation"]["test_acc"] for f in done]
    out["diff_test_mean"], out["diff_test_ci95"] = t_interval(diffs)
    out["diff_test_ci95_corrected"] = corrected_interval(diffs, test_over_train)
    out["folds_hybrid_better"] = sum(1 for d in diffs if d > 0)
    out["folds_ablation_better"] = sum(1 for d in diffs if d < 0)
    out["folds_tied"] = sum(1 for d in diffs if d == 0)
    half = out["diff_test_ci95_corrected"]
    if half is None:
        out["vs_ablation"] = "n/a"
    elif out["diff_test_mean"] - half > 0:
        out["vs_ablation"] = "hybrid better"
    elif out["diff_test_mean"] + half < 0:
        out["vs_ablation"] = "ablation better"
    else:
        out["vs_ablation"] = "no difference"
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="RepeatedStratifiedKFold's random_state")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--paper-table", type=Path, default=PAPER_TABLE, help="where the Iris pick and settings come from")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from sklearn.datasets import load_iris
    from sklearn.model_selection import RepeatedStratifiedKFold

    from qnas_hw.atomic_write import atomic_write_text
    from qnas_hw.model.space import Architecture
    from qnas_hw.model.training import TrainConfig

    pick = iris_pick(args.paper_table)
    arch = Architecture.parse(pick["arch"])
    bunch = load_iris()
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    n_test = len(y) // args.folds
    test_over_train = n_test / (len(y) - n_test)
    t0 = time.perf_counter()
    doc: dict[str, Any] = {
        "benchmark": "iris_kfold",
        "command": "python benchmarks/iris_kfold.py " + shlex.join(argv),
        "commit": git_head(),
        "uncommitted_changes": uncommitted_files(),
        "machine": _machine(args.threads),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "pick": pick,
        "folds": args.folds,
        "repeats": args.repeats,
        "cv_seed": args.seed,
        "test_over_train": test_over_train,
        "seconds": 0.0,
        "complete": False,
        "runs": [],
        "summary": {"folds_done": 0},
    }

    def write(complete: bool = False) -> None:
        doc["seconds"] = time.perf_counter() - t0
        doc["complete"] = complete
        doc["summary"] = summarize(doc["runs"], test_over_train)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")

    cv = RepeatedStratifiedKFold(n_splits=args.folds, n_repeats=args.repeats, random_state=args.seed)
    for i, (train, test) in enumerate(cv.split(x, y)):
        splits = fold_splits(x, y, train, test, pick["val_fraction"], seed=i)
        tc = TrainConfig(**{**pick["train_config"], "seed": i})
        run: dict[str, Any] = {"fold": i, "repeat": i // args.folds, "sizes": splits.sizes()}
        doc["runs"].append(run)
        for name, quantum in MODELS.items():
            run[name] = fit(arch, splits, pick["frontend"], quantum, tc)
        print(
            f"fold {i:>2}: hybrid {run['hybrid']['test_acc']:.3f} ablation {run['ablation']['test_acc']:.3f} "
            f"(epochs {run['hybrid']['best_epoch']}/{run['ablation']['best_epoch']})",
            flush=True,
        )
        write()
    write(complete=True)
    s = doc["summary"]
    print(
        f"{arch.canonical()}: hybrid {100 * s['hybrid_test_mean']:.2f}, ablation {100 * s['ablation_test_mean']:.2f}, "
        f"difference {100 * s['diff_test_mean']:+.2f} ± {100 * s['diff_test_ci95']:.2f} (t) / "
        f"± {100 * s['diff_test_ci95_corrected']:.2f} (corrected) points: {s['vs_ablation']}"
    )
    return doc


if __name__ == "__main__":
    main()
