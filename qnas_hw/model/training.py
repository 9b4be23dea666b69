"""Seeded supervised training with validation-based model selection.

Selection (early stopping, restoring the best epoch) looks at the validation
split only; the test split is evaluated exactly once, after training, and is
reported, never used to choose anything.

Determinism: batch order comes from a ``torch.Generator`` seeded with
``TrainConfig.seed`` and the model's own init is seeded by its constructor, so
the same seed gives the same result on the same CPU build of torch (whatever
else the process has done with the global RNG).  Nothing here changes global
state: callers who want bit-exact kernels across runs may call
``torch.use_deterministic_algorithms(True)`` themselves; every operation used
here supports it.  Results are not promised to be bit-identical across
different hardware or thread counts (floating-point reduction order differs).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from qnas_hw.data import DatasetSplits
from qnas_hw.progress import track

logger = logging.getLogger(__name__)


class TrainingError(ValueError):
    """A training request that cannot run, with a message saying how to fix it."""


#: Epoch-selection rules of :class:`TrainConfig` (validation split only).
SELECTIONS: tuple[str, ...] = ("accuracy", "accuracy+loss")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule settings; ``patience=None`` trains all ``epochs`` (still restoring the best).

    ``select``: which epoch is kept.  ``accuracy`` keeps the first epoch with
    the best validation accuracy.  ``accuracy+loss`` breaks accuracy ties by
    the lower validation loss: on a small validation split (Iris: 24 samples)
    accuracy saturates within a few epochs, and the first such epoch is an
    under-trained model while the loss still improves.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 0.0
    seed: int = 0
    patience: int | None = None
    select: str = "accuracy"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainingError(f"{name}={value!r} must be a positive integer")
        if not self.lr > 0:
            raise TrainingError(f"lr={self.lr!r} must be > 0 (e.g. 1e-2)")
        if self.weight_decay < 0:
            raise TrainingError(f"weight_decay={self.weight_decay!r} must be >= 0")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise TrainingError(f"patience={self.patience!r} must be a positive integer or None")
        if self.select not in SELECTIONS:
            raise TrainingError(f"select={self.select!r} is not one of {', '.join(SELECTIONS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """``history`` has one row per epoch: epoch, train_loss, train_acc, val_acc, val_loss, seconds."""

    best_val_acc: float
    best_val_loss: float = float("inf")
    history: list[dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0
    test_acc: float = float("nan")
    train_seconds: float = 0.0
    best_epoch: int = 0
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tensors(dataset: TensorDataset, label: str) -> tuple[Tensor, Tensor]:
    if not isinstance(dataset, TensorDataset) or len(dataset.tensors) != 2:
        raise TrainingError(f"{label} split must be a TensorDataset (X, y); got {type(dataset).__name__}")
    return dataset.tensors[0], dataset.tensors[1]


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a model without any): where its batches must go.

    Datasets stay on the CPU and each batch moves to the model's device as it is
    used, so callers choose the device once, with ``model.to(device)``.
    """
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, dataset: TensorDataset, batch_size: int = 512) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on ``dataset`` in eval mode without gradients; restores the previous mode."""
    x, y = _tensors(dataset, "evaluation")
    if len(y) == 0:
        raise TrainingError("cannot evaluate accuracy on an empty split")
    was_training = model.training
    model.eval()
    device = model_device(model)
    try:
        correct, loss = 0, 0.0
        for start in range(0, len(y), batch_size):
            logits = model(x[start : start + batch_size].to(device))
            yb = y[start : start + batch_size].to(device)
            correct += int((logits.argmax(dim=1) == yb).sum())
            loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
    finally:
        model.train(was_training)
    return correct / len(y), loss / len(y)


def evaluate_accuracy(model: nn.Module, dataset: TensorDataset, batch_size: int = 512) -> float:
    """Fraction of ``dataset`` classified correctly (see :func:`evaluate`)."""
    return evaluate(model, dataset, batch_size)[0]


def _improves(cfg: TrainConfig, acc: float, loss: float, result: TrainResult) -> bool:
    if acc > result.best_val_acc:
        return True
    return cfg.select == "accuracy+loss" and acc == result.best_val_acc and loss < result.best_val_loss


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    generator: torch.Generator,
    progress: bool = False,
    epoch: int = 0,
) -> tuple[float, float]:
    """One pass over (x, y) in an order drawn from ``generator``; returns (mean loss, accuracy).

    Public so other trainers (fine-tuning inherited weights) use the very same
    loop, loss and batching as :func:`train_model`.
    """
    model.train()
    order = torch.randperm(len(y), generator=generator)
    device = model_device(model)
    loss_sum, correct, seen = 0.0, 0, 0
    loss_fn = nn.CrossEntropyLoss()
    running = lambda: f"loss={loss_sum / max(seen, 1):.3f} acc={correct / max(seen, 1):.3f}"  # noqa: E731
    batches = range(0, len(y), batch_size)
    # a bar on a terminal, plain lines in a log (qnas_hw.progress decides), with the running loss and accuracy
    for start in track(batches, f"epoch {epoch}", unit="batches", enabled=progress, status=running):
        idx = order[start : start + batch_size]
        xb, yb = x[idx].to(device), y[idx].to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = loss_fn(logits, yb)
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((logits.detach().argmax(dim=1) == yb).sum())
        seen += len(idx)
    return loss_sum / len(y), correct / len(y)


def train_model(model: nn.Module, splits: DatasetSplits, cfg: TrainConfig, progress: bool = False) -> TrainResult:
    """Adam on the training split; keep the weights of the best validation epoch; test once at the end.

    The one training loop of the package: the ``train`` command, the
    benchmarks' retrains and the examples call it (the search's fine-tunes run
    its :func:`train_epoch`).  "Best" follows ``cfg.select``; early stopping
    (``cfg.patience``) stops after that many epochs without a better epoch.
    The model is left holding the best-validation weights.
    """
    x, y = _tensors(splits.train, "train")
    _tensors(splits.val, "validation")
    if len(y) == 0:
        raise TrainingError("the training split is empty; check limit_train / the dataset")
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = TrainResult(best_val_acc=-1.0)
    best_state = _snapshot(model)
    since_best = 0
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        train_loss, train_acc = train_epoch(model, optimizer, x, y, cfg.batch_size, generator, progress, epoch)
        val_acc, val_loss = evaluate(model, splits.val)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_acc": val_acc,
            "val_loss": val_loss,
            "seconds": time.perf_counter() - t_epoch,
        }
        result.history.append(row)
        result.epochs_run = epoch
        logger.info("epoch %d: loss %.4f train %.4f val %.4f", epoch, train_loss, train_acc, val_acc)
        if _improves(cfg, val_acc, val_loss, result):
            result.best_val_acc, result.best_val_loss, result.best_epoch = val_acc, val_loss, epoch
            best_state = _snapshot(model)
            since_best = 0
        else:
            since_best += 1
            if cfg.patience is not None and since_best >= cfg.patience:
                result.stopped_early = epoch < cfg.epochs
                logger.info(
                    "early stop after epoch %d (best val %.4f at epoch %d)",
                    epoch,
                    result.best_val_acc,
                    result.best_epoch,
                )
                break
    result.train_seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    result.test_acc = evaluate_accuracy(model, splits.test)
    return result


class StagedTrainer:
    """Adam training of one model that stops and resumes at fractional epochs (the rungs of successive halving).

    Why not :func:`train_model`: a multi-fidelity proxy scores a candidate after
    a quarter epoch, then again after one and three epochs of *the same* run,
    and drops most candidates in between.  The state that makes "rung r" mean
    "the first r epochs" is kept here: one optimiser, one ``torch.Generator``
    drawing a fresh permutation per epoch, and the position inside the current
    one.  Nothing reads the validation or test split, so every rung is a
    training-only fact.  Batches, loss and optimiser are :func:`train_epoch`'s.
    """

    def __init__(self, model: nn.Module, train: TensorDataset, lr: float, batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise TrainingError(f"batch_size={batch_size!r} must be a positive integer")
        if not lr > 0:
            raise TrainingError(f"lr={lr!r} must be > 0 (e.g. 5e-2)")
        self.model = model
        self.x, self.y = _tensors(train, "train")
        if len(self.y) == 0:
            raise TrainingError("the training split is empty; check limit_train / the dataset")
        self.batch_size = int(batch_size)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.batches_per_epoch = -(-len(self.y) // self.batch_size)
        self.batches_done = 0
        self._order: Tensor | None = None
        self.last_loss = float("nan")

    @property
    def epochs_done(self) -> float:
        return self.batches_done / self.batches_per_epoch

    def batches_for(self, epochs: float) -> int:
        """Batches in the first ``epochs`` epochs (rounded up: a rung never trains less than it says)."""
        if not epochs >= 0:
            raise TrainingError(f"epochs={epochs!r} must be >= 0")
        return math.ceil(round(epochs * self.batches_per_epoch, 9))

    def advance(self, epochs: float) -> float:
        """Train until ``epochs`` epochs are done in total; returns the mean loss of the batches just run."""
        target = self.batches_for(epochs)
        if target < self.batches_done:
            raise TrainingError(f"already trained {self.epochs_done:.3g} epochs; cannot go back to {epochs}")
        self.model.train()
        device = model_device(self.model)
        loss_fn = nn.CrossEntropyLoss()
        total, seen = 0.0, 0
        while self.batches_done < target:
            position = self.batches_done % self.batches_per_epoch
            if position == 0 or self._order is None:
                self._order = torch.randperm(len(self.y), generator=self.generator)
            idx = self._order[position * self.batch_size : (position + 1) * self.batch_size]
            xb, yb = self.x[idx].to(device), self.y[idx].to(device)
            self.optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(self.model(xb), yb)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            self.batches_done += 1
        self.model.eval()
        if seen:
            self.last_loss = total / seen
        return self.last_loss
