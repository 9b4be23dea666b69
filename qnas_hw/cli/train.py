"""``qnas-hw train``: retrain one architecture from scratch and keep its weights and figures.

The test accuracy is the exact (noise-free) simulator's; ``--accuracy noisy``
also scores the trained model under the backend's noise as the search's
``noisy`` mode does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from qnas_hw.cli import common
from qnas_hw.config import RunConfig, with_overrides


@common.app.command()
def train(
    arch: Annotated[str, typer.Option("--arch", help="Canonical architecture, e.g. 'angle-y|q4|l2|ry-rz|ring|z'.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config for data/model settings.")] = None,
    study: Annotated[Path | None, typer.Option("--study", help="Use the configuration stored in this study.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs from scratch.")] = 30,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed (default: the config's).")] = None,
    device: common.DeviceOption = None,
    data_dir: common.DataDirOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write weights (.pt) and figures (.json), named <architecture>-<key>, here; default: trained/ in "
            "the study's run directory (with --study), else runs/trained.",
        ),
    ] = None,
    accuracy: Annotated[
        str,
        typer.Option(
            "--accuracy",
            help="ideal: test accuracy of the exact (noise-free) simulator; noisy: also under the backend's noise "
            "model, scored as the search's noisy mode scores (transpiled, placed, cut to the qubit budget, finite "
            "shots).",
        ),
    ] = "ideal",
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    verbose: common.Verbose = False,
) -> None:
    """Retrain one architecture from scratch; report validation and (evaluated once, at the end) test accuracy.

    With --study, an architecture outside the study's search space is
    trained anyway, with a warning (it was never a candidate of that search).
    The weights and figures are always kept (see --out), since a retrain can
    take hours.
    """
    common._setup_logging(verbose)
    with common._cli_errors(verbose):
        from qnas_hw.atomic_write import atomic_write_text, atomic_write_torch
        from qnas_hw.config import default_accuracy, resolve_device
        from qnas_hw.model.hqnn import HQNN
        from qnas_hw.model.space import Architecture
        from qnas_hw.model.training import TrainConfig, train_model
        from qnas_hw.search.building import load_splits

        cfg = common._resolve_config(
            config,
            study,
            {
                "seed": seed,
                "data.data_dir": str(data_dir) if data_dir is not None else None,
                "compute.device": device,
            },
        )
        where = resolve_device(cfg.compute.device)
        architecture = Architecture.parse(arch)
        if epochs < 1:
            common._fail(f"--epochs={epochs} must be >= 1")
        if accuracy not in ("ideal", "noisy"):
            common._fail(
                f"--accuracy {accuracy!r} is not supported by train; use 'ideal' or 'noisy' (on the device itself: "
                "`qnas-hw hw-eval`)"
            )
        if study is not None:
            _warn_outside_space(architecture, cfg, study)
        target = out if out is not None else (study.parent if study is not None else Path("runs")) / "trained"
        _check_writable(target)  # before training: a retrain's result must not be lost to a read-only directory
        scorer = _noisy_test_scorer(cfg, architecture) if accuracy == "noisy" else None  # refusals before training
        splits = load_splits(cfg)  # the search's own splits: the retrain's validation is the search's
        model = HQNN(
            architecture, tuple(splits.input_shape), splits.n_classes, frontend=cfg.model.frontend, seed=cfg.seed
        ).to(where)
        tc = TrainConfig(epochs=epochs, batch_size=cfg.supercircuit.batch_size, lr=cfg.supercircuit.lr, seed=cfg.seed)
        result = train_model(model, splits, tc, progress=progress)
        model.cpu()  # the weights file loads anywhere (and the noisy scorer reads the model there)
        common.out_console.print(
            f"{architecture.canonical()}: best validation accuracy {100 * result.best_val_acc:.2f}% "
            f"(epoch {result.best_epoch}), test accuracy {100 * result.test_acc:.2f}% (exact: noise-free simulator); "
            f"{result.epochs_run} epochs, {result.train_seconds:.1f} s, dataset {splits.name}",
            highlight=False,
        )
        noisy = _noisy_test_accuracy(scorer, cfg, architecture, model, splits) if scorer is not None else None
        if noisy is not None:
            common.out_console.print(_noisy_line(noisy, result.test_acc), highlight=False)
        elif default_accuracy(cfg.hardware.backend) == "noisy":  # the target has a noise model to score under
            common.out_console.print(
                f"no noise in that test accuracy: `--accuracy noisy` also scores it under {cfg.hardware.backend}'s "
                "noise model",
                highlight=False,
            )
        stem = _arch_file_stem(architecture)
        weights, figures = target / f"{stem}.pt", target / f"{stem}.json"
        replaced = weights.exists() or figures.exists()
        atomic_write_torch(weights, model.state_dict())
        summary = {
            "architecture": architecture.canonical(),
            "dataset": splits.name,
            "best_val_acc": result.best_val_acc,
            "best_epoch": result.best_epoch,
            "test_acc": result.test_acc,
            "test_accuracy_mode": "ideal",  # test_acc: the exact, noise-free simulator
            "noisy_test": noisy,
            "epochs_run": result.epochs_run,
            "train_seconds": result.train_seconds,
            "history": result.history,
            "config": cfg.resolved(),
            "study": None if study is None else str(study),
            "weights": str(weights),
        }
        atomic_write_text(figures, json.dumps(summary, indent=2, default=str) + "\n")
        common.out_console.print(
            f"saved the weights to {weights} and the figures to {figures}"
            + (" (replacing an earlier retrain of this architecture)" if replaced else ""),
            highlight=False,
        )


def _check_writable(directory: Path) -> None:
    """Refuse a result directory that cannot be written, naming the fix, before anything is trained."""
    from qnas_hw.atomic_write import nearest_existing

    existing = nearest_existing(directory)
    if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        common._fail(
            f"cannot write the trained model to {directory} ({existing} is not a writable directory); pass --out DIR "
            "with a writable directory"
        )


def _noisy_test_scorer(cfg: RunConfig, architecture: Any) -> Any:
    """``train --accuracy noisy``: the search's ``noisy`` scorer (:class:`~qnas_hw.search.scoring.NoisyScorer`)
    on the config's backend, built before training so a backend without noise, or a cut plan too large to run,
    is refused in seconds rather than after the retrain."""
    from qnas_hw.config import default_accuracy
    from qnas_hw.hardware.backends import get_backend
    from qnas_hw.search.building import make_hardware, make_scorer

    backend = cfg.hardware.backend
    if default_accuracy(backend) == "ideal":
        common._fail(
            f"--accuracy noisy needs the target's noise model, and backend {backend!r} has none; use a study or "
            "config whose backend has one (any fake_* IBM snapshot, aer_noisy, a braket_* snapshot)"
        )
    noisy = with_overrides(cfg, **{"search.accuracy": "noisy"})
    hw = make_hardware(noisy, get_backend(backend))
    assert hw is not None  # a backend was given
    scorer = make_scorer(noisy, hw.backend, hw.transpiler, hw.planner)
    reason = scorer.builder.unrunnable(architecture)
    if reason is not None:
        common._fail(
            f"{architecture.canonical()} cannot be scored under {backend}'s noise with qubit budget "
            f"{cfg.hardware.qubit_budget}: {reason}; leave out --accuracy noisy for its exact test accuracy"
        )
    return scorer


def _noisy_test_accuracy(scorer: Any, cfg: RunConfig, architecture: Any, model: Any, splits: Any) -> dict[str, Any]:
    """The trained model's test accuracy under the backend's noise, on the stratified ``search.val_samples``
    subset of the test split the search would score (finite shots make every sample cost a simulation)."""
    import torch

    from qnas_hw.data import stratified_subset

    X, y = splits.test.tensors
    idx = torch.as_tensor(stratified_subset(y.numpy(), cfg.search.val_samples, cfg.seed))
    acc, details = scorer.score(architecture, model, X[idx], y[idx])
    details = {k: v for k, v in details.items() if not k.startswith("_")}  # timings are not figures
    return {"test_acc": acc, "backend": cfg.hardware.backend, "test_samples": len(y), **details}


def _noisy_line(noisy: dict[str, Any], exact: float) -> str:
    """``test accuracy under fake_kolkata's noise: 86.67% (...); exact: 90.00%``."""
    cut = noisy.get("cut_experiments")
    how = [
        f"{noisy['samples']} of {noisy['test_samples']} test samples",
        f"{noisy['shots']} shots each",
        "readout-mitigated" if noisy.get("mitigation") not in (None, "none") else "no readout mitigation",
        f"cut: {cut} subexperiment circuits per sample" if cut else "uncut",
        f"on qubits {noisy.get('layout')}",
    ]
    return (
        f"test accuracy under {noisy['backend']}'s noise: {100 * noisy['test_acc']:.2f}% ({', '.join(how)}); "
        f"exact (noise-free simulator): {100 * exact:.2f}%"
    )


def _arch_file_stem(architecture: Any) -> str:
    """``iqp|q2|l1|ry|ring|z`` -> ``iqp_q2_l1_ry_ring_z-<key>``: readable in a listing, unique by the key."""
    safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in architecture.canonical())
    return f"{safe}-{architecture.key()}"


def _warn_outside_space(architecture: Any, cfg: RunConfig, study: Path) -> None:
    """Warn (on stderr) when ``--arch`` lies outside the study's search space: results are not comparable."""
    from qnas_hw.model.space import SpaceError

    try:
        cfg.search_space().check(architecture)
    except SpaceError as exc:
        common.err_console.print(
            f"[yellow]warning:[/yellow] {architecture.canonical()} is outside the search space of {study}: {exc}. "
            "It was never a candidate there; training it anyway.",
            highlight=False,
        )
