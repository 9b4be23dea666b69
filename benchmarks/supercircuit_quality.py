"""Does the SuperCircuit learn, and do its inherited weights rank architectures?  One row per training variant.

For each variant (sharing x sampling x epochs, and a space narrowed to one gene varying at a time) the
SuperCircuit is trained as the search trains it, then:

* ``final_loss`` against ``chance_loss`` = ln C (the loss of a uniform guess): learning at all;
* the largest subcircuit's inherited (exact) validation accuracy against the same architecture trained alone for
  the same epochs: does sharing cost the largest candidate its accuracy;
* with ``--ranking``: Kendall tau of ``inherited`` and ``inherited+1`` (noisy score, the search's scorer) against
  the trained noisy ground truth stored in ``benchmarks/results/proxy_quality.json`` for the same set and
  architectures (the proxy benchmark's own records, so the two files rank against one truth).

Nothing reads the test split.  Rows are written as they finish.

    python benchmarks/supercircuit_quality.py --set digits4 --out benchmarks/results/supercircuit_quality.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from provenance import git_head, uncommitted_files
from proxy_quality import Workbench, set_config
from scipy import stats

#: one gene varying at a time from angle-y|q4|l2|ry|none|z (the issue's ablation), then the whole space
NARROW: dict[str, dict[str, Any]] = {
    "nothing": {
        "embeddings": ["angle-y"],
        "qubits": [4, 4],
        "layers": [2, 2],
        "rotations": ["ry"],
        "entanglers": ["none"],
    },
    "qubits": {
        "embeddings": ["angle-y"],
        "qubits": [2, 5],
        "layers": [2, 2],
        "rotations": ["ry"],
        "entanglers": ["none"],
    },
    "layers": {
        "embeddings": ["angle-y"],
        "qubits": [4, 4],
        "layers": [1, 3],
        "rotations": ["ry"],
        "entanglers": ["none"],
    },
    "rotations": {"embeddings": ["angle-y"], "qubits": [4, 4], "layers": [2, 2], "entanglers": ["none"]},
    "entanglers": {"embeddings": ["angle-y"], "qubits": [4, 4], "layers": [2, 2], "rotations": ["ry"]},
    "embeddings": {"qubits": [4, 4], "layers": [2, 2], "rotations": ["ry"], "entanglers": ["none"]},
    "everything": {},
}


def _space(cfg: Any, narrow: dict[str, Any]) -> Any:
    from qnas_hw.model.space import SearchSpace

    base = cfg.space.model_dump()
    base.update(narrow)
    return SearchSpace(
        embeddings=tuple(base["embeddings"]),
        qubits=tuple(base["qubits"]),
        layers=tuple(base["layers"]),
        rotations=tuple(base["rotations"]),
        entanglers=tuple(base["entanglers"]),
    )


def _inside(space: Any, text: str) -> bool:
    from qnas_hw.model.space import Architecture, SpaceError

    try:
        space.check(Architecture.parse(text))
    except SpaceError:
        return False
    return True


def train_variant(
    wb: Workbench,
    space: Any,
    sharing: str,
    sampling: str,
    epochs: int,
    lr: float,
    noise_aware: bool = False,
    distill: bool = False,
) -> tuple[Any, Any]:
    """Train one SuperCircuit variant as the search would (``noise_aware``: under the target's dominant noise on each
    sampled architecture's placement, QuantumNAS's noise-adaptive training)."""
    from qnas_hw.model.supercircuit import SuperCircuit, SuperTrainConfig, train_supercircuit
    from qnas_hw.search.building import training_noise

    sc = SuperCircuit(
        space,
        tuple(wb.splits.input_shape),
        wb.splits.n_classes,
        frontend=wb.frontend,
        seed=wb.cfg.seed,
        sharing=sharing,
    )
    noise = None
    if noise_aware:
        from qnas_hw.config import with_overrides

        noise = training_noise(with_overrides(wb.cfg, **{"supercircuit.noise_aware": True}), wb.hw)
    cfg = SuperTrainConfig(
        epochs=epochs,
        batch_size=wb.batch,
        lr=lr,
        sampling=sampling,
        seed=wb.cfg.seed,
        noise=noise,
        noise_key=noise.key() if noise is not None else "",
        distill=distill,
    )
    return sc, train_supercircuit(sc, wb.splits, cfg)


def alone(wb: Workbench, arch: Any, epochs: int, lr: float) -> float:
    """Exact validation accuracy of ``arch`` trained by itself for ``epochs`` (last epoch, no selection)."""
    from qnas_hw.model.training import StagedTrainer, evaluate_accuracy

    model = wb.model(arch, wb.cfg.seed)
    StagedTrainer(model, wb.splits.train, lr, wb.batch, wb.cfg.seed).advance(epochs)
    return float(evaluate_accuracy(model, wb.splits.val))


def ranking(wb: Workbench, sc: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    from qnas_hw.model.space import Architecture
    from qnas_hw.search.evaluation import derive_seed, finetune

    truth = np.array([np.mean([g["noisy"] for g in r["gt"].values()]) for r in records])
    inh, inh1 = [], []
    for r in records:
        arch = Architecture.parse(r["arch"])
        model = sc.extract(arch)
        model.eval()
        inh.append(wb.noisy(arch, model, wb.proxy_idx)[0])
        gen = torch.Generator().manual_seed(derive_seed(wb.cfg.seed, arch))
        finetune(model, wb.splits.train, 1, wb.lr, wb.batch, gen)
        inh1.append(wb.noisy(arch, model, wb.proxy_idx)[0])
    return {
        "inherited_tau": float(stats.kendalltau(inh, truth).statistic),
        "inherited+1_tau": float(stats.kendalltau(inh1, truth).statistic),
        "inherited_mean_acc": float(np.mean(inh)),
        "n_architectures": len(records),
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", default="digits4", help="a set of proxy_quality.py (its space, data and target)")
    p.add_argument(
        "--variants",
        default="prefix:sandwich,experts:sandwich,experts:uniform",
        help="comma-separated SHARING:SAMPLING (SAMPLING+noise: noise-aware training; sandwich+distill: in-place "
        "distillation from the largest subnet)",
    )
    p.add_argument("--narrow", default="everything", help=f"comma-separated, of {', '.join(NARROW)}")
    p.add_argument("--epochs", type=int, default=None, help="SuperCircuit epochs (default: the set's config)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument(
        "--batch-size", type=int, default=None, help="SuperCircuit batch (default: the set's); more steps per epoch"
    )
    p.add_argument("--ranking", action="store_true", help="also rank proxy_quality.json's architectures")
    p.add_argument("--truth", default="benchmarks/results/proxy_quality.json")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="benchmarks/results/supercircuit_quality.json")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    import torch

    from qnas_hw.model.training import evaluate_accuracy

    torch.set_num_threads(1)
    out = Path(args.out)
    data: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    command = "python benchmarks/supercircuit_quality.py " + " ".join(argv)
    runs = [c for c in data.get("command", "").split(" && ") if c and c != command] + [command]
    data.update(
        {
            "command": " && ".join(runs),  # every run whose rows the file holds
            "commit": git_head(),
            "uncommitted_changes": uncommitted_files(),
            "load_at_start": os.getloadavg()[0],
        }
    )
    cfg = set_config(args.set, 2000, args.data_dir)
    wb = Workbench(args.set, cfg, 1000)
    epochs = args.epochs if args.epochs is not None else cfg.supercircuit.epochs
    lr = args.lr if args.lr is not None else float(cfg.supercircuit.lr)
    if args.batch_size is not None:
        wb.batch = int(args.batch_size)  # the SuperCircuit's, the alone baseline's and inherited+1's fine-tune
    records = json.loads(Path(args.truth).read_text())["sets"][args.set]["records"] if args.ranking else []
    for narrow in args.narrow.split(","):
        space = _space(cfg, NARROW[narrow])
        for variant in args.variants.split(","):
            sharing, _, sampling = variant.rpartition(":")
            distill = sampling.endswith("+distill")
            sampling = sampling.removesuffix("+distill")
            noise_aware = sampling.endswith("+noise")
            sampling = sampling.removesuffix("+noise")
            t0 = time.perf_counter()
            sc, result = train_variant(wb, space, sharing, sampling, epochs, lr, noise_aware, distill)
            largest = space.largest()
            row: dict[str, Any] = {
                "set": args.set,
                "varies": narrow,
                "sharing": sharing,
                "sampling": sampling + ("+noise" if noise_aware else "") + ("+distill" if distill else ""),
                "epochs": epochs,
                "lr": lr,
                "batch_size": wb.batch,
                "steps": result.steps,
                "final_loss": result.history[-1]["loss"],
                "chance_loss": math.log(wb.splits.n_classes),
                "largest": largest.canonical(),
                "largest_inherited_acc": float(evaluate_accuracy(sc.extract(largest), wb.splits.val)),
                "largest_alone_acc": alone(wb, largest, epochs, lr),
                "train_seconds": result.train_seconds,
            }
            if records and narrow == "everything":
                row.update(ranking(wb, sc, [r for r in records if _inside(space, r["arch"])]))
            row["seconds"] = time.perf_counter() - t0
            row["loss_ratio"] = row["final_loss"] / row["chance_loss"]
            data["rows"].append(row)
            print(json.dumps(row), flush=True)
            out.write_text(json.dumps(data, indent=1))
    return data


if __name__ == "__main__":
    main()
