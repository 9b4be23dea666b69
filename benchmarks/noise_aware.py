"""Where the quantum part decides: pure-quantum MNIST-4 / Fashion-4, searched ideal vs under the device's noise.

Setting (QuantumNAS's): classes 0-3 of MNIST or Fashion-MNIST, images
average-pooled to 4x4 = 16 features, no classical front-end (the circuit's
``<Z>`` feed a linear head of n_qubits x 4 weights), 4-5 qubits, on a
5-qubit (``fake_quito``) and a 27-qubit heavy-hex (``fake_kolkata``) IBM
snapshot with their real noise models.  Per data set, device and search
seed, four searches at the same seed and evaluation budget:

* ``ideal``: NSGA-II with exact validation accuracy;
* ``noisy``: NSGA-II with accuracy under the device's noise model (placement,
  1024 shots, mthree mitigation);
* ``noisy+nat``: the same with noise-aware training (SuperCircuit and
  fine-tunes under the target's dominant errors on the placed qubits);
* ``random-noisy``: as many distinct random architectures, scored like ``noisy``;
* ``classical`` (once per data set and seed): the classical ablation, the
  circuit replaced by a trainable linear map of its width (16 -> 5 -> 4).

Each search's knee and most-accurate picks are retrained from scratch as the
search would (same data, noise-aware for ``noisy+nat``; epoch chosen on the
validation split) and evaluated ONCE on the test split under the device's
noise model with the same shots (and exactly, for reference).  Nothing is
tuned on test figures.  Rows (``benchmarks/results/noise_aware.json``): mean
and 95% CI (Student t) over the search seeds.

    python benchmarks/noise_aware.py --data-dir ../shared/datasets --seeds 0,1,2 \\
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
from presets import pure_quantum_config
from provenance import git_head, load_before_timing

ROOT = Path(__file__).resolve().parents[1]
MODES = ("ideal", "noisy", "noisy+nat", "random-noisy")


def random_search(config: Any, out: Path) -> Any:
    """As many distinct random architectures as the NSGA-II budget, scored through the same evaluator."""
    from qnas_hw.search.nsga import prepare_search

    run = prepare_search(config, out)
    rng = np.random.default_rng(config.seed + 7777)
    budget = config.search.pop_size * config.search.generations
    seen: dict[str, Any] = {}
    while len(seen) < budget:
        arch = run.space.sample(rng)
        seen.setdefault(arch.canonical(), arch)
    archs = list(seen.values())
    for g in range(config.search.generations):
        chunk = archs[g * config.search.pop_size : (g + 1) * config.search.pop_size]
        run.evaluator.evaluate_many(chunk, g)
    return run.study


def picks(study: Any) -> dict[str, str]:
    """Knee and most-accurate of the study's final front (or of all its records, for random search)."""
    from qnas_hw.reports.data import analyze

    gens = study.generations()
    data = analyze(study.candidates(), gens, study.objective_names, study.config)
    out = {}
    for label, idx in (("knee", data.knee), ("most-accurate", data.most_accurate)):
        if idx is not None:
            out[label] = data.candidates[idx].arch.canonical()
    return out


def retrain_and_test(config: Any, arch_text: str, seed: int, epochs: int) -> dict[str, Any]:
    """The pick from scratch as the search trains (noise-aware if it was), then ONE test under the device noise."""
    from qnas_hw.data import load_dataset
    from qnas_hw.hardware.execution import ProgramBuilder
    from qnas_hw.hardware.noise import NoisySimulator, TrainingNoise
    from qnas_hw.model.hqnn import HQNN
    from qnas_hw.model.space import Architecture
    from qnas_hw.model.training import TrainConfig, train_model
    from qnas_hw.search.building import make_hardware
    from qnas_hw.search.scoring import NoisyScorer

    arch = Architecture.parse(arch_text)
    d = config.data
    splits = load_dataset(
        d.dataset, d.data_dir, val_fraction=d.val_fraction, seed=config.seed, limit_train=d.limit_train
    )
    hw = make_hardware(config)
    simulator = NoisySimulator(hw.backend)
    model = HQNN(arch, tuple(splits.input_shape), splits.n_classes, frontend="none", seed=seed)
    if config.search.noise_aware_finetune:
        model.quantum.set_noise(TrainingNoise(hw.backend, hw.transpiler, simulator, config.hardware.qubit_budget)(arch))
    t0 = time.perf_counter()
    result = train_model(model, splits, TrainConfig(epochs=epochs, batch_size=64, lr=0.05, seed=seed))
    train_s = time.perf_counter() - t0
    model.quantum.set_noise(None)
    model.eval()
    X, y = splits.test.tensors
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
        "val_acc_best": result.best_val_acc,
        "n_qubits": arch.n_qubits,
        "n_2q": rec.n_2q,
        "layout": details["layout"],
        "esp": details["esp"],
        "retrain_seconds": train_s,
    }


def classical_ablation(config: Any, seed: int, epochs: int, width: int = 5) -> dict[str, Any]:
    """The same inputs and head with the circuit replaced by a trainable linear map of the circuit's width.

    16 pooled features -> linear ``width`` -> linear 4 classes, trained like the
    picks (same data, epochs, optimiser, epoch chosen on validation) and
    tested once.  If this matches the quantum picks, the quantum part does not
    decide the headline figure.
    """
    from qnas_hw.data import load_dataset
    from qnas_hw.model.hqnn import HQNN
    from qnas_hw.model.space import Architecture
    from qnas_hw.model.training import TrainConfig, train_model

    d = config.data
    splits = load_dataset(
        d.dataset, d.data_dir, val_fraction=d.val_fraction, seed=config.seed, limit_train=d.limit_train
    )
    arch = Architecture.parse(f"4x4-ryzxy|q{width}|l1|ry|none|z")
    model = HQNN(arch, tuple(splits.input_shape), splits.n_classes, frontend="linear", quantum="identity", seed=seed)
    t0 = time.perf_counter()
    result = train_model(model, splits, TrainConfig(epochs=epochs, batch_size=64, lr=0.05, seed=seed))
    model.eval()
    X, y = splits.test.tensors
    with torch.no_grad():
        acc = float((model(X).argmax(-1) == y).float().mean())
    return {
        "test_acc_noisy": acc,  # no circuit, so no device noise: the same figure both ways
        "test_acc_ideal": acc,
        "val_acc_best": result.best_val_acc,
        "n_qubits": 0,
        "n_2q": 0,
        "layout": None,
        "esp": None,
        "retrain_seconds": time.perf_counter() - t0,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def ci95(values: list[float]) -> float:
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
                "qubits": [r["n_qubits"] for r in sel],
                "n_2q": [r["n_2q"] for r in sel],
                "layouts": [r["layout"] for r in sel],
                "esp": [r["esp"] for r in sel],
                "search_seconds": float(np.mean([r["search_seconds"] for r in sel])),
            }
        )
    return rows


def write(out: Path, argv: list[str], runs: list[dict[str, Any]], seconds: float, complete: bool) -> None:
    """Rewrite the result file after every run, so a long campaign that is stopped keeps what it measured."""
    import qiskit
    import qiskit_aer

    commit = git_head()
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": "python benchmarks/noise_aware.py " + " ".join(argv),
        "commit": commit,
        "load_before_timing": load_before_timing(),
        "complete": complete,
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "qiskit": qiskit.__version__,
            "qiskit_aer": qiskit_aer.__version__,
        },
        "seconds": seconds,
        "rows": summarize(runs),
        "runs": runs,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(out)


def search_and_pick(config: Any, mode: str, out: Path) -> tuple[dict[str, str], float]:
    t0 = time.perf_counter()
    study = random_search(config, out) if mode == "random-noisy" else run_search_quiet(config, out)
    search_s = time.perf_counter() - t0
    chosen = picks(study)
    study.close()
    shutil.rmtree(out, ignore_errors=True)
    return chosen, search_s


def run_search_quiet(config: Any, out: Path) -> Any:
    from qnas_hw.search.nsga import run_search

    return run_search(config, out, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--datasets", default="mnist4,fashion4")
    ap.add_argument("--backends", default="fake_quito,fake_kolkata")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--modes", default=",".join(MODES + ("classical",)))
    ap.add_argument("--retrain-epochs", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="tiny settings (a smoke test, not a result)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    argv = sys.argv[1:]
    work = Path(tempfile.mkdtemp(prefix="qnas-noise-aware-"))
    runs: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    epochs = 2 if args.quick else args.retrain_epochs
    for dataset in args.datasets.split(","):
        for backend in args.backends.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for mode in args.modes.split(","):
                    config = pure_quantum_config(
                        dataset, backend, "ideal" if mode == "classical" else mode, seed, args.data_dir, args.quick
                    )
                    if mode == "classical":
                        if any(r["dataset"] == dataset and r["mode"] == mode and r["seed"] == seed for r in runs):
                            continue  # backend-independent: once per data set and seed
                        chosen, search_s, backend_label = {"no-circuit": "linear-16-5-4"}, 0.0, "-"
                    else:
                        chosen, search_s = search_and_pick(config, mode, work / f"{dataset}-{backend}-{mode}-{seed}")
                        backend_label = backend
                    for pick, arch in chosen.items():
                        r = (
                            classical_ablation(config, seed, epochs)
                            if mode == "classical"
                            else retrain_and_test(config, arch, seed, epochs)
                        )
                        runs.append(
                            {
                                "dataset": dataset,
                                "backend": backend_label,
                                "mode": mode,
                                "seed": seed,
                                "pick": pick,
                                "architecture": arch,
                                "search_seconds": search_s,
                                **r,
                            }
                        )
                        print(
                            f"{dataset} {backend_label} {mode:<13} seed {seed} {pick:<13} {arch:<36} test noisy "
                            f"{r['test_acc_noisy']:.3f} ideal {r['test_acc_ideal']:.3f} search {search_s:.0f}s",
                            flush=True,
                        )
                        if args.out is not None:
                            write(args.out, argv, runs, time.perf_counter() - t_all, complete=False)
    total = time.perf_counter() - t_all
    print(
        f"{'dataset':<9} {'backend':<13} {'mode':<13} {'pick':<13} {'test acc under noise':>22} {'ideal':>7} "
        f"{'search s':>8}"
    )
    for r in summarize(runs):
        print(
            f"{r['dataset']:<9} {r['backend']:<13} {r['mode']:<13} {r['pick']:<13} "
            f"{100 * r['test_acc_noisy_mean']:>12.1f} +- {100 * r['test_acc_noisy_ci95']:>5.1f} "
            f"{100 * r['test_acc_ideal_mean']:>7.1f} {r['search_seconds']:>8.0f}"
        )
    print(f"wall time {total / 60:.1f} min")
    if args.out is not None:
        write(args.out, argv, runs, total, complete=True)


if __name__ == "__main__":
    main()
