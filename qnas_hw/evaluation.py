"""The search's accuracy objective: validation error with inherited SuperCircuit weights.

Each candidate starts from the slice of the trained :class:`~qnas_hw.supercircuit.SuperCircuit`
it inherits (:meth:`~qnas_hw.supercircuit.SuperCircuit.extract`), is optionally
fine-tuned for ``k`` epochs on the *training* split, and is scored by its error
on the *validation* split.  The test split is never read here: selection on
test accuracy would make the reported test figure meaningless.

Determinism.  NSGA-II evaluates candidates in an order that depends on the
population, and a resumed search evaluates only what is missing.  So the
value of an architecture must not depend on what was evaluated before it:
the extracted model is a copy (the SuperCircuit is never mutated), and the
fine-tune's shuffling is driven by a ``torch.Generator`` seeded from
``(seed, arch.key())`` alone.

The fine-tuned weights are kept (``weights_dir/<arch.key()>.pt``) because
retraining and hardware evaluation start from them (:func:`load_candidate`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qnas_hw.atomic_write import atomic_write
from qnas_hw.models import HQNN
from qnas_hw.objectives import Objective, ObjectiveResult
from qnas_hw.space import Architecture
from qnas_hw.supercircuit import SuperCircuit
from qnas_hw.training import _train_epoch, evaluate_accuracy

logger = logging.getLogger(__name__)


def derive_seed(seed: int, arch: Architecture) -> int:
    """A 63-bit seed that depends only on ``seed`` and the architecture (not on evaluation order)."""
    digest = hashlib.sha256(f"{int(seed)}:{arch.key()}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _tensor_hash(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def finetune(
    model: nn.Module, train: Any, epochs: int, lr: float, batch_size: int, generator: torch.Generator
) -> float:
    """``epochs`` passes of Adam on ``train``, shuffled by ``generator``; returns the last epoch's mean loss.

    Not :func:`~qnas_hw.training.train_model`: that selects on validation and
    reports test accuracy, and a candidate's fine-tune must read neither.  It
    reuses the same epoch loop, so the fine-tune is the training's first epochs.
    """
    X, y = train.tensors
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss = math.nan
    for epoch in range(1, epochs + 1):
        loss, _ = _train_epoch(model, opt, X, y, batch_size, generator, False, epoch)
    model.eval()
    return loss


class ValidationErrorObjective(Objective):
    """``1 - validation accuracy`` of an architecture with inherited (+ ``finetune_epochs``) weights."""

    name = "val_error"

    def __init__(
        self,
        supercircuit: SuperCircuit,
        splits: Any,
        finetune_epochs: int = 1,
        lr: float = 1e-2,
        batch_size: int = 64,
        seed: int = 0,
        weights_dir: Path | None = None,
    ) -> None:
        if finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(splits.val) == 0:
            raise ValueError(f"dataset {splits.name!r} has an empty validation split; use a larger val_fraction")
        self.supercircuit = supercircuit
        self.splits = splits
        self.finetune_epochs = int(finetune_epochs)
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.weights_dir = None if weights_dir is None else Path(weights_dir)
        self._fingerprint = supercircuit.fingerprint()
        # Only train and val enter the key: the test split is never read by this objective.
        self._data_key = _tensor_hash(*splits.train.tensors, *splits.val.tensors)

    def settings_key(self) -> str:
        return (
            f"sc={self._fingerprint}|data={self.splits.name}:{self._data_key}|ft={self.finetune_epochs}"
            f"|lr={self.lr:g}|bs={self.batch_size}|seed={self.seed}"
        )

    def evaluate(self, arch: Architecture) -> ObjectiveResult:
        if self.supercircuit.fingerprint() != self._fingerprint:
            raise RuntimeError(
                "the SuperCircuit's weights changed after this objective was created, so cached values would be "
                "stale; create a new ValidationErrorObjective after training"
            )
        t0 = time.perf_counter()
        model = self.supercircuit.extract(arch)
        loss = math.nan
        if self.finetune_epochs > 0:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, arch))
            loss = finetune(model, self.splits.train, self.finetune_epochs, self.lr, self.batch_size, gen)
        model.eval()
        finetune_seconds = time.perf_counter() - t0
        val_acc = float(evaluate_accuracy(model, self.splits.val))
        if self.weights_dir is not None:
            _save_weights(model, self.weights_dir / f"{arch.key()}.pt")
        n_params = sum(p.numel() for p in model.parameters())
        return ObjectiveResult(
            value=1.0 - val_acc,
            details={
                "val_acc": val_acc,
                "finetune_seconds": finetune_seconds,
                "finetune_loss": loss,
                "n_params": int(n_params),
            },
        )


def _save_weights(model: nn.Module, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(model.state_dict(), tmp))


def load_candidate(supercircuit: SuperCircuit, arch: Architecture, weights_dir: Path) -> HQNN:
    """The fine-tuned model the objective scored (weights from ``weights_dir/<arch.key()>.pt``)."""
    path = Path(weights_dir) / f"{arch.key()}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no fine-tuned weights for {arch} at {path}; evaluate it with ValidationErrorObjective(weights_dir=...) "
            "first, or use supercircuit.extract(arch) for the inherited weights"
        )
    model = supercircuit.extract(arch)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    return model
