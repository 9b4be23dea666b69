"""Proxy validity: does the search's cheap accuracy estimate rank architectures like full training does?

The search never trains a candidate from scratch; it scores it with weights
inherited from the SuperCircuit plus a k-epoch fine-tune.  That is only
sound if the proxy *ranks* architectures the way independent training does,
so this benchmark scores N architectures spread over the space both ways and
prints Kendall's tau and Spearman's rho (scipy.stats) with their p-values.

Both scores are validation accuracies; the proxy never reads the test split and
the test accuracy that ``train_model`` reports at its end is ignored here.

    python benchmarks/rank_correlation.py --dataset iris
    python benchmarks/rank_correlation.py --dataset mnist --limit-train 2000 --epochs 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from presets import PRESETS, rank_preset
from provenance import git_head
from scipy import stats

from qnas_hw.config import DEFAULT_LR
from qnas_hw.model.space import Architecture, SearchSpace


def _balanced(values: Sequence, n: int, rng: np.random.Generator) -> list:
    """``n`` values covering ``values`` as evenly as possible, in shuffled order."""
    reps = -(-n // len(values))
    seq = [values[i] for _ in range(reps) for i in rng.permutation(len(values))][:n]
    return [seq[i] for i in rng.permutation(n)]


def stratified_architectures(space: SearchSpace, n: int, rng: np.random.Generator) -> list[Architecture]:
    """``n`` distinct architectures whose embeddings, qubits, layers and entanglers each cover their range evenly.

    Each of those four genes gets its own balanced, shuffled column (every
    value appears about ``n / len(values)`` times); rotations are uniform.  A
    duplicate is replaced by a uniform sample.  Plain uniform sampling could
    leave corners of the space empty, which is where a proxy is most likely
    to mis-rank.
    """
    if n > space.size:
        raise ValueError(f"asked for {n} distinct architectures but the space only has {space.size}; lower --n-archs")
    columns = [
        _balanced(list(space.embeddings), n, rng),
        _balanced(list(range(space.qubits[0], space.qubits[1] + 1)), n, rng),
        _balanced(list(range(space.layers[0], space.layers[1] + 1)), n, rng),
        _balanced(list(space.entanglers), n, rng),
    ]
    seen: set[str] = set()
    out: list[Architecture] = []
    for emb, q, lay, ent in zip(*columns, strict=True):
        arch = Architecture(emb, int(q), int(lay), space.rotations[int(rng.integers(len(space.rotations)))], ent)
        for _ in itertools.count():
            if arch.canonical() not in seen:
                break
            arch = space.sample(rng)
        seen.add(arch.canonical())
        out.append(arch)
    return out


def correlations(proxy: Sequence[float], full: Sequence[float]) -> dict[str, float]:
    """Kendall's tau-b (tie-aware: validation accuracies tie often) and Spearman's rho, with p-values."""
    tau = stats.kendalltau(proxy, full)
    rho = stats.spearmanr(proxy, full)
    return {
        "kendall_tau": float(tau.statistic),
        "kendall_p": float(tau.pvalue),
        "spearman_rho": float(rho.statistic),
        "spearman_p": float(rho.pvalue),
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", choices=sorted(PRESETS), default="iris")
    p.add_argument("--data-dir", default=None, help="folder with the IDX files (default: the data module's lookup)")
    p.add_argument("--n-archs", type=int, default=20, help="architectures scored both ways (>= 20 for the report)")
    p.add_argument("--epochs", type=int, default=None, help="full from-scratch training epochs (default per dataset)")
    p.add_argument("--sc-epochs", type=int, default=None, help="SuperCircuit training epochs (default per dataset)")
    p.add_argument(
        "--sampling", default="sandwich", help="comma-separated SuperCircuit sampling modes to compare (one SC each)"
    )
    p.add_argument("--finetune", default="0,1", help="comma-separated proxy fine-tune epochs k to compare")
    p.add_argument("--limit-train", type=int, default=None, help="training samples (default per dataset)")
    p.add_argument("--limit-val", type=int, default=None, help="validation samples (default per dataset)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default per dataset (CNN front-ends need ~3e-3)")
    p.add_argument("--frontend", default=None, help="front-end family (default per dataset)")
    p.add_argument("--qubits", type=int, nargs=2, default=None, metavar=("LO", "HI"))
    p.add_argument("--layers", type=int, nargs=2, default=None, metavar=("LO", "HI"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the box is shared)")
    p.add_argument("--json", default=None, help="also write all figures to this JSON file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    from qnas_hw.data import load_dataset
    from qnas_hw.model.hqnn import HQNN
    from qnas_hw.model.supercircuit import SuperCircuit, SuperTrainConfig, train_supercircuit
    from qnas_hw.model.training import TrainConfig, train_model
    from qnas_hw.search.evaluation import ValidationErrorObjective

    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    d = rank_preset(args.dataset)
    frontend = args.frontend or d["frontend"]
    epochs = args.epochs or d["epochs"]
    sc_epochs = args.sc_epochs if args.sc_epochs is not None else d["sc_epochs"]
    limit_train = args.limit_train if args.limit_train is not None else d["limit_train"]
    limit_val = args.limit_val if args.limit_val is not None else d["limit_val"]
    args.lr = args.lr or d["lr"] or DEFAULT_LR[frontend]
    ks = [int(k) for k in args.finetune.split(",")]
    samplings = [m.strip() for m in args.sampling.split(",")]
    space = SearchSpace(qubits=tuple(args.qubits or d["qubits"]), layers=tuple(args.layers or d["layers"]))

    splits = load_dataset(
        args.dataset,
        args.data_dir,
        val_fraction=args.val_fraction,
        seed=args.seed,
        limit_train=limit_train,
        limit_val=limit_val,
    )
    print(
        f"dataset {args.dataset}: {splits.sizes()} (test not used), front-end {frontend}, lr {args.lr:g}, "
        f"space {space.to_dict()}"
    )
    archs = stratified_architectures(space, args.n_archs, np.random.default_rng(args.seed))

    proxy: dict[str, list[float]] = {}
    proxy_seconds: dict[str, float] = {}
    sc_seconds: dict[str, float] = {}
    for mode in samplings:
        t0 = time.perf_counter()
        sc = SuperCircuit(space, splits.input_shape, splits.n_classes, frontend=frontend, seed=args.seed)
        sc_cfg = SuperTrainConfig(
            epochs=sc_epochs, batch_size=args.batch_size, lr=args.lr, sampling=mode, seed=args.seed
        )
        train_supercircuit(sc, splits, sc_cfg)
        sc_seconds[mode] = time.perf_counter() - t0
        print(f"SuperCircuit: {sc_epochs} epochs of {mode} sampling in {sc_seconds[mode]:.1f} s", flush=True)
        for k in ks:
            obj = ValidationErrorObjective(sc, splits, finetune_epochs=k, lr=args.lr, batch_size=args.batch_size)
            t0 = time.perf_counter()
            proxy[f"{mode} k={k}"] = [1.0 - obj.evaluate(a).value for a in archs]
            proxy_seconds[f"{mode} k={k}"] = time.perf_counter() - t0

    full: list[float] = []
    t0 = time.perf_counter()
    tc = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    for i, arch in enumerate(archs):
        model = HQNN(arch, splits.input_shape, splits.n_classes, frontend=frontend, seed=args.seed)
        full.append(train_model(model, splits, tc).best_val_acc)
        print(f"  full training {i + 1}/{len(archs)} {arch}: val {full[-1]:.4f}", flush=True)
    full_seconds = time.perf_counter() - t0

    print()
    cols = list(proxy)
    width = max(14, *(len(c) + 2 for c in cols))
    print("architecture".ljust(34) + "".join(c.rjust(width) for c in cols) + "full".rjust(10))
    for i, arch in enumerate(archs):
        print(arch.canonical().ljust(34) + "".join(f"{proxy[c][i]:{width}.4f}" for c in cols) + f"{full[i]:10.4f}")
    print()
    results = {}
    for col in cols:
        c = correlations(proxy[col], full)
        results[col] = {**c, "seconds": proxy_seconds[col], "mean_proxy_acc": float(np.mean(proxy[col]))}
        print(
            f"{col:<{width}}: Kendall tau {c['kendall_tau']:+.3f} (p={c['kendall_p']:.3g})  "
            f"Spearman rho {c['spearman_rho']:+.3f} (p={c['spearman_p']:.3g})  "
            f"mean proxy acc {results[col]['mean_proxy_acc']:.3f}  {proxy_seconds[col]:.1f} s for {len(archs)} archs"
        )
    sc_text = ", ".join(f"{m} {t:.1f} s" for m, t in sc_seconds.items())
    print(
        f"cost: SuperCircuit training ({sc_text}) once + proxies above, vs full training {full_seconds:.1f} s "
        f"({epochs} epochs x {len(archs)} archs, mean val acc {np.mean(full):.3f}); shared 2-core CPU, timings noisy"
    )
    report = {
        "dataset": args.dataset,
        "sizes": splits.sizes(),
        "space": space.to_dict(),
        "frontend": frontend,
        "sc_epochs": sc_epochs,
        "samplings": samplings,
        "full_epochs": epochs,
        "architectures": [a.canonical() for a in archs],
        "proxy": proxy,
        "full": full,
        "correlations": results,
        "sc_seconds": sc_seconds,
        "full_seconds": full_seconds,
    }
    if args.json:
        Path(args.json).write_text(json.dumps({**_provenance(), **report}, indent=2))
    return report


def _provenance() -> dict[str, object]:
    """Command, commit and machine, so a results file says what made it."""
    import os
    import platform
    import sys

    import qiskit

    return {
        "command": "python benchmarks/rank_correlation.py " + " ".join(sys.argv[1:]),
        "commit": git_head(),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "qiskit": qiskit.__version__,
            "threads": torch.get_num_threads(),
        },
    }


if __name__ == "__main__":
    main()
