"""The search's accuracy objective: validation error of each candidate trained as the study's proxy says.

``[search] proxy`` (:class:`ProxySpec`; why the default is what it is: ``benchmarks/results/proxy_quality.json``):

* ``scratch-K``: a fresh model, initialised from ``(seed, architecture)``, trained ``K`` epochs on the *training*
  split (:class:`~qnas_hw.model.training.StagedTrainer`);
* ``inherited``: the slice of the trained :class:`~qnas_hw.model.supercircuit.SuperCircuit` it inherits
  (:meth:`~qnas_hw.model.supercircuit.SuperCircuit.extract`), fine-tuned for ``finetune_epochs``;
* ``halving``: the from-scratch run stopped at rungs, a generation's best going on
  (:meth:`ValidationErrorObjective._halving`).

The trained model is scored by its error on the *validation* split.  The test split is never read here: selection
on test accuracy would make the reported test figure meaningless.

Determinism.  NSGA-II evaluates candidates in an order that depends on the
population, and a resumed search evaluates only what is missing.  So the
value of an architecture must not depend on what was evaluated before it:
the extracted model is a copy (the SuperCircuit is never mutated), and the
fine-tune's shuffling is driven by a ``torch.Generator`` seeded from
``(seed, arch.key())`` alone.

The fine-tuned weights are kept (``weights_dir/<arch.key()>.pt``) because
retraining and hardware evaluation start from them (:func:`load_candidate`).

Accuracy modes.  Without a ``scorer`` the objective is the exact
(statevector, infinite-shot) validation error: ``accuracy = "ideal"``.  With
a :class:`~qnas_hw.search.scoring.NoisyScorer` or :class:`~qnas_hw.search.scoring.DeviceScorer`
the fine-tuned model is scored on a stratified subset of ``val_samples``
validation samples with its quantum layer run as the target runs it
(``noisy`` / ``device``); the exact accuracy on the whole validation split
and on that subset are kept in the details, so the noise gap is visible.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qnas_hw.atomic_write import atomic_write_torch, read_torch
from qnas_hw.data import stratified_subset
from qnas_hw.model.hqnn import HQNN
from qnas_hw.model.space import Architecture
from qnas_hw.model.supercircuit import SuperCircuit
from qnas_hw.model.training import StagedTrainer, evaluate_accuracy, train_epoch
from qnas_hw.progress import track
from qnas_hw.search.objectives import Objective, ObjectiveResult

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

    Not :func:`~qnas_hw.model.training.train_model`: that selects on validation and
    reports test accuracy, and a candidate's fine-tune must read neither.  It
    reuses the same epoch loop, so the fine-tune is the training's first epochs.
    """
    X, y = train.tensors
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss = math.nan
    for epoch in range(1, epochs + 1):
        loss, _ = train_epoch(model, opt, X, y, batch_size, generator, False, epoch)
    model.eval()
    return loss


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` samples: sqrt(a (1 - a) / n).

    Under ``noisy`` and ``device`` each sample's correctness is itself random (finite shots), and the binomial over
    the scored samples already holds that variance, so this is the whole standard error of the stored score.
    """
    a = min(max(float(accuracy), 0.0), 1.0)
    return math.sqrt(a * (1.0 - a) / max(int(n), 1))


def nested_subset(subset: np.ndarray | None, labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """A stratified ``size``-sample subset *of* ``subset`` (all validation samples when None).

    Halving's cheap lower rungs score on it: nested, so that the samples a candidate was dropped on are among the
    ones a survivor is scored on at the top rung, and a lower rung's noise is only its smaller sample.
    """
    labels = np.asarray(labels).reshape(-1)
    base = np.arange(len(labels)) if subset is None else np.asarray(subset)
    return base[stratified_subset(labels[base], size, seed)]


@dataclass(frozen=True)
class ProxySpec:
    """How a candidate's model is obtained before it is scored (``search.proxy``, see ``config.PROXY_CHOICES``).

    ``inherited``: the SuperCircuit's slice plus ``finetune_epochs``.  ``scratch``: a fresh model seeded by
    ``(seed, architecture)`` trained ``epochs`` epochs.  ``halving``: the same from-scratch run, stopped at the
    rungs ``rungs`` with the best ``keep`` fraction of a generation's candidates going on to the next rung.
    """

    kind: str = "inherited"
    epochs: float = 0.0
    rungs: tuple[float, ...] = ()
    keep: float = 1.0
    #: halving's training-free first stage (``none`` or ``esp``)
    screen: str = "none"
    #: halving's rungs below the top are scored on this many of the scored samples (None: all of them)
    low_samples: int | None = None

    @classmethod
    def from_config(cls, search: Any) -> ProxySpec:
        from qnas_hw.config import scratch_epochs

        if search.proxy == "inherited":
            return cls("inherited")
        if search.proxy == "halving":
            h = search.halving
            rungs = tuple(float(r) for r in h.rungs)
            return cls("halving", rungs[-1], rungs, float(h.keep), h.screen, h.low_rung_samples)
        return cls("scratch", float(scratch_epochs(search.proxy) or 0.0))

    @property
    def name(self) -> str:
        if self.kind == "scratch":
            return f"scratch-{self.epochs:g}"
        if self.kind == "halving":
            first = "" if self.screen == "none" else f"{self.screen}>"
            low = "" if self.low_samples is None else f"@{self.low_samples}"
            rungs = [f"{r:g}{low if i < len(self.rungs) - 1 else ''}" for i, r in enumerate(self.rungs)]
            return f"halving[{first}{','.join(rungs)}:{self.keep:g}]"
        return "inherited"

    @property
    def weight_shared(self) -> bool:
        return self.kind == "inherited"


@dataclass
class _Run:
    """One candidate's model on its way through the proxy's training (kept between halving's rungs)."""

    arch: Architecture
    model: HQNN
    trainer: StagedTrainer | None
    seconds: float = 0.0
    loss: float = math.nan
    epochs: float = 0.0


class ValidationErrorObjective(Objective):
    """``1 - validation accuracy`` of an architecture trained as ``proxy`` says (inherited weights by default here;
    the search passes the configured proxy)."""

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
        scorer: Any | None = None,
        val_samples: int | None = None,
        training_noise: Any | None = None,
        device: str = "cpu",
        progress: bool = False,
        proxy: ProxySpec | None = None,
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
        self.proxy = proxy if proxy is not None else ProxySpec("inherited")
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.weights_dir = None if weights_dir is None else Path(weights_dir)
        self.scorer = scorer
        self.val_samples = val_samples
        self.training_noise = training_noise
        #: where the fine-tune and the exact validation run (a resolved ``compute.device``); the model returned is
        #: on the CPU either way, since the scorers, the weights files and hardware evaluation read it there
        self.device = str(device)
        #: hand the fine-tuned weights back in ``ObjectiveResult.artifacts`` (a worker copy: see :meth:`for_worker`)
        self.ship_weights = False
        #: show a ``device`` generation's candidates being fine-tuned and built before its jobs are submitted (a
        #: bar on a terminal, plain lines in a log: minutes that were silent)
        self.progress = bool(progress)
        self._fingerprint = supercircuit.fingerprint()
        #: how the SuperCircuit trained (``building.supercircuit_summary``), recorded with the study
        self.training_summary: dict[str, Any] = {}
        # Only train and val enter the key: the test split is never read by this objective.
        self._data_key = _tensor_hash(*splits.train.tensors, *splits.val.tensors)
        _X_val, y_val = splits.val.tensors
        self._subset = stratified_subset(y_val.numpy(), val_samples, seed) if scorer is not None else None
        low = self.proxy.low_samples
        self._low_subset = (
            nested_subset(self._subset, y_val.numpy(), low, seed) if scorer is not None and low is not None else None
        )

    @property
    def mode(self) -> str:
        return "ideal" if self.scorer is None else str(self.scorer.mode)

    def settings_key(self) -> str:
        key = (
            f"sc={self._fingerprint}|data={self.splits.name}:{self._data_key}|ft={self.finetune_epochs}"
            f"|lr={self.lr:g}|bs={self.batch_size}|seed={self.seed}"
        )
        if self.scorer is not None:  # ideal keeps the key it always had: its studies stay resumable
            key += f"|acc={self.scorer.settings_key()}|val_samples={self.val_samples}"
        if self.training_noise is not None:
            key += f"|{self.training_noise.key()}"
        if not self.proxy.weight_shared:  # inherited keeps the key it always had: its studies stay resumable
            key += f"|proxy={self.proxy.name}"
        return key

    def scored_split(self, low: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation samples the noisy/device score uses (a stratified subset; never the test split).

        ``low``: halving's cheaper lower rungs, a nested subset of those (``low_rung_samples``) where configured.
        """
        X_val, y_val = self.splits.val.tensors
        subset = self._low_subset if low and self._low_subset is not None else self._subset
        if subset is None:
            return X_val, y_val
        idx = torch.as_tensor(subset)
        return X_val[idx], y_val[idx]

    def _begin(self, arch: Architecture) -> _Run:
        """The candidate's starting model: its inherited slice, or a fresh one seeded by (seed, architecture)."""
        if self.supercircuit.fingerprint() != self._fingerprint:
            raise RuntimeError(
                "the SuperCircuit's weights changed after this objective was created, so cached values would be "
                "stale; create a new ValidationErrorObjective after training"
            )
        seed = derive_seed(self.seed, arch)
        if self.proxy.weight_shared:
            return _Run(arch, self.supercircuit.extract(arch).to(self.device), None)
        model = self.supercircuit.fresh(arch, seed).to(self.device)
        return _Run(arch, model, StagedTrainer(model, self.splits.train, self.lr, self.batch_size, seed))

    def _advance(self, run: _Run, epochs: float) -> None:
        """Train ``run`` to ``epochs`` epochs in all (inherited: its ``finetune_epochs``, once)."""
        t0 = time.perf_counter()
        run.model.to(self.device)  # back from the CPU after a halving rung was scored (the optimiser's tensors stay)
        noise = self.training_noise(run.arch) if self.training_noise is not None else None
        run.model.quantum.set_noise(noise)  # noise-aware training (None: exact)
        try:
            if run.trainer is not None:
                run.loss = run.trainer.advance(epochs)
            elif self.finetune_epochs > 0 and run.epochs == 0:
                gen = torch.Generator().manual_seed(derive_seed(self.seed, run.arch))
                run.loss = finetune(run.model, self.splits.train, self.finetune_epochs, self.lr, self.batch_size, gen)
        finally:
            run.model.quantum.set_noise(None)
        run.model.eval()
        run.epochs = epochs if run.trainer is not None else float(self.finetune_epochs)
        run.seconds += time.perf_counter() - t0

    def _finish(self, run: _Run, low: bool = False) -> tuple[HQNN, dict[str, Any], dict[str, Any]]:
        """The trained model on the CPU, its exact-simulation figures and timings (weights saved)."""
        model = run.model
        val_acc = float(evaluate_accuracy(model, self.splits.val))
        model.to("cpu")
        if self.weights_dir is not None:
            _save_weights(model, self.weights_dir / f"{run.arch.key()}.pt")
        n_params = sum(p.numel() for p in model.parameters())
        details: dict[str, Any] = {
            "val_acc": val_acc,
            "finetune_loss": run.loss,
            "n_params": int(n_params),
            # the samples val_error is measured on: its resolution (standard error) depends on it
            "n_scored": len(self.splits.val) if self.scorer is None else len(self.scored_split(low)[1]),
            "proxy": self.proxy.name,
            "epochs": run.epochs,
        }
        timings: dict[str, Any] = {"finetune_seconds": run.seconds}
        if self.scorer is not None:
            details["ideal_val_acc"] = val_acc
            X, y = self.scored_split(low)
            with torch.no_grad():
                details["ideal_subset_acc"] = float((model(X).argmax(dim=-1) == y).float().mean())
        return model, details, timings

    def _trained(self, arch: Architecture, epochs: float | None = None) -> tuple[HQNN, dict[str, Any], dict[str, Any]]:
        """The candidate trained as the proxy says (to ``epochs``, default its last rung), saved, with figures."""
        run = self._begin(arch)
        self._advance(run, self.proxy.epochs if epochs is None else epochs)
        return self._finish(run)

    def _result(
        self, acc: float, details: dict[str, Any], timings: dict[str, Any], hw: dict[str, Any]
    ) -> ObjectiveResult:
        hw = dict(hw)
        timings = {**timings, **hw.pop("_timings", {})}
        details = {**details, "val_acc": acc, "accuracy": hw, "val_error_se": binomial_se(acc, details["n_scored"])}
        return ObjectiveResult(value=1.0 - acc, details=details, timings=timings)

    def _skipped(self, arch: Architecture, details: dict[str, Any], timings: dict[str, Any]) -> ObjectiveResult | None:
        """A candidate whose cut plan cannot run is stored without an accuracy: NaN, never on a front."""
        reason = self.scorer.builder.unrunnable(arch)
        if reason is None:
            return None
        logger.info("%s not scored under %s: %s", arch.canonical(), self.mode, reason)
        details = {**details, "val_acc": math.nan, "accuracy": {"accuracy_mode": self.mode, "skipped": reason}}
        return ObjectiveResult(value=math.nan, details=details, timings=timings)

    def for_worker(self) -> ValidationErrorObjective | None:
        """A copy that writes no file and returns its fine-tuned weights instead (the search's process writes them:
        a worker may run on another machine).  None under ``device``: its jobs go through the study's job ledger,
        which only the search's process writes, so that objective stays there; so does ``halving``, whose rungs
        compare the whole generation."""
        if self.mode == "device" or self.proxy.kind == "halving":  # halving ranks a generation's candidates together
            return None
        worker = copy.copy(self)
        worker.weights_dir = None
        worker.ship_weights = True
        worker.progress = False  # a worker's stderr is not the user's terminal
        return worker

    def keep_artifacts(self, arch: Architecture, result: ObjectiveResult) -> None:
        """Save the weights a worker copy returned where this objective saves its own."""
        weights = result.artifacts.get("weights")
        if weights is not None and self.weights_dir is not None:
            atomic_write_torch(self.weights_dir / f"{arch.key()}.pt", weights)

    def evaluate(self, arch: Architecture) -> ObjectiveResult:
        if self.mode == "device" or self.proxy.kind == "halving":
            result = self.evaluate_batch([arch])[0]
            if isinstance(result, Exception):
                raise result
            return result
        model, details, timings = self._trained(arch)
        result = self._score(arch, model, details, timings)
        if self.ship_weights:
            result = dataclasses.replace(result, artifacts={"weights": model.state_dict()})
        return result

    def _score(
        self, arch: Architecture, model: HQNN, details: dict[str, Any], timings: dict[str, Any], low: bool = False
    ) -> ObjectiveResult:
        """The fine-tuned model's value: its exact validation error, or its score under the scorer's mode."""
        if self.scorer is None:
            details = {**details, "val_error_se": binomial_se(details["val_acc"], details["n_scored"])}
            return ObjectiveResult(value=1.0 - details["val_acc"], details=details, timings=timings)
        skipped = self._skipped(arch, details, timings)
        if skipped is not None:
            return skipped
        X, y = self.scored_split(low)
        acc, hw = self.scorer.score(arch, model, X, y)
        return self._result(acc, details, timings, hw)

    def evaluate_batch(self, archs: Any) -> list[ObjectiveResult | Exception]:
        """``device`` mode: train every candidate, then run all their jobs at once (see the scorer); ``halving``:
        the whole batch climbs the rungs together (see :meth:`_halving`)."""
        if self.proxy.kind == "halving":
            return self._halving(list(archs))
        if self.mode != "device":
            return super().evaluate_batch(archs)
        out: dict[str, ObjectiveResult | Exception] = {}
        runs: list[_Run] = []
        desc = "preparing candidates (train, transpile)"
        for arch in track(archs, desc, unit="candidates", enabled=self.progress):
            try:
                run = self._begin(arch)
                self._advance(run, self.proxy.epochs)
                runs.append(run)
            except Exception as exc:  # this candidate's own failure (e.g. a circuit that cannot be built)
                out[arch.key()] = exc
        out.update(self._score_runs(runs))
        return [out[a.key()] for a in archs]

    def _score_runs(self, runs: list[_Run], low: bool = False) -> dict[str, ObjectiveResult | Exception]:
        """Every run's value at its current training: one at a time, or (``device``) all jobs in flight at once.

        ``low``: scored on halving's lower-rung samples (see :meth:`scored_split`)."""
        out: dict[str, ObjectiveResult | Exception] = {}
        if self.mode != "device":
            for run in runs:
                try:
                    out[run.arch.key()] = self._score(run.arch, *self._finish(run, low), low=low)
                except Exception as exc:
                    out[run.arch.key()] = exc
            return out
        X, y = self.scored_split(low)
        prepared, trained = [], {}
        for run in runs:
            try:
                model, details, timings = self._finish(run, low)
                skipped = self._skipped(run.arch, details, timings)
                if skipped is not None:
                    out[run.arch.key()] = skipped
                    continue
                prepared.append(self.scorer.prepare(run.arch, model, X, y))
                trained[run.arch.key()] = (details, timings)
            except Exception as exc:
                out[run.arch.key()] = exc
        outcomes = self.scorer.run(prepared) if prepared else {}  # raises: budget, provider (not the candidate's)
        mitigators: dict[Any, Any] = {}
        for p in prepared:
            details, timings = trained[p.arch.key()]
            try:
                acc, hw = self.scorer.finish(p, outcomes, mitigators)
                out[p.arch.key()] = self._result(acc, details, timings, hw)
            except Exception as exc:
                out[p.arch.key()] = exc
        return out

    def _halving(self, archs: list[Architecture]) -> list[ObjectiveResult | Exception]:
        """Successive halving over ``archs``: all are scored at the first rung, the best ``keep`` fraction (lowest
        error, ties by architecture key, at least one) trains on in the same run to the next rung, and so on.

        A candidate's stored value is its score at the last rung it reached; ``details["rung"]`` says which
        (``level`` of ``of``) and keeps every rung's score, so the ``top_rung`` constraint can keep lower-rung
        candidates off the front.  The values of a batch depend on the batch: a generation is one batch.
        """
        out: dict[str, ObjectiveResult | Exception] = {}
        runs: dict[str, _Run] = {}
        for arch in archs:
            try:
                runs[arch.key()] = self._begin(arch)
            except Exception as exc:
                out[arch.key()] = exc
        alive = [runs[a.key()] for a in archs if a.key() in runs]
        history: dict[str, list[dict[str, float]]] = {k: [] for k in runs}
        rungs = self.proxy.rungs
        if self.proxy.screen != "none":
            alive = self._screen(alive, out)
        for level, epochs in enumerate(rungs, start=1):
            desc = f"rung {level} of {len(rungs)} ({epochs:g} epochs)"
            trained = []
            for run in track(alive, desc, unit="candidates", enabled=self.progress):
                try:
                    self._advance(run, epochs)
                    trained.append(run)
                except Exception as exc:
                    out[run.arch.key()] = exc
            scored = self._score_runs(trained, low=level < len(rungs))
            for key, result in scored.items():
                if isinstance(result, ObjectiveResult):
                    history[key].append({"epochs": epochs, "val_error": result.value})
                    rung = {
                        "level": level,
                        "of": len(rungs),
                        "epochs": epochs,
                        "top_epochs": rungs[-1],
                        "history": list(history[key]),
                    }
                    result.details["rung"] = rung
                out[key] = result
            ranked = [
                r
                for r in trained
                if isinstance(scored.get(r.arch.key()), ObjectiveResult) and math.isfinite(scored[r.arch.key()].value)  # type: ignore[union-attr]
            ]
            ranked.sort(key=lambda r: (scored[r.arch.key()].value, r.arch.key()))  # type: ignore[union-attr]
            alive = ranked[: max(1, round(self.proxy.keep * len(ranked)))]
        return [out[a.key()] for a in archs]

    def _screen(self, runs: list[_Run], out: dict[str, ObjectiveResult | Exception]) -> list[_Run]:
        """Halving's training-free stage: the ``keep`` fraction with the highest ESP of the placed circuit goes on;
        the others are stored unscored (NaN, rung 0 with their ESP), so no front or pick can hold them."""
        esp: dict[str, float] = {}
        for run in runs:
            try:
                value = self.scorer.builder.transpiler.transpile(run.arch).esp
                esp[run.arch.key()] = float(value) if value is not None else -math.inf
            except Exception as exc:  # a circuit that cannot be placed is this candidate's own failure
                out[run.arch.key()] = exc
        ranked = sorted((r for r in runs if r.arch.key() in esp), key=lambda r: (-esp[r.arch.key()], r.arch.key()))
        kept = ranked[: max(1, round(self.proxy.keep * len(ranked)))]
        for run in ranked[len(kept) :]:
            rung = {"level": 0, "of": len(self.proxy.rungs), "epochs": 0.0, "top_epochs": self.proxy.rungs[-1]}
            reason = f"screened out before training by ESP ({self.proxy.screen} stage of halving)"
            details = {
                "proxy": self.proxy.name,
                "epochs": 0.0,
                "esp": esp[run.arch.key()],
                "rung": {**rung, "history": []},
                "val_acc": math.nan,
                "accuracy": {"accuracy_mode": self.mode, "skipped": reason},
            }
            out[run.arch.key()] = ObjectiveResult(value=math.nan, details=details, timings={})
        return kept

    def rung_epochs(self, details: dict[str, Any]) -> float | None:
        """The epochs a stored candidate was trained for (its halving rung, or the proxy's own)."""
        rung = details.get("rung")
        if isinstance(rung, dict) and "epochs" in rung:
            return float(rung["epochs"])
        return None


def rederive_weights(
    objective: ValidationErrorObjective, arch: Architecture, stored_ideal_acc: float, epochs: float | None = None
) -> HQNN:
    """Train ``arch`` again exactly as the search did (same seed; ``epochs``: the halving rung it reached) and save
    its weights, after checking that the result is the one the study stored: same exact validation accuracy.  Used
    when the weights file is gone or damaged.
    """
    model, details, _ = objective._trained(arch, epochs)
    got = details.get("ideal_val_acc", details["val_acc"])
    if not math.isclose(got, stored_ideal_acc, rel_tol=0, abs_tol=1e-12):
        raise RuntimeError(
            f"re-fine-tuning {arch.canonical()} gave validation accuracy {got:.6f}, the study stored "
            f"{stored_ideal_acc:.6f}: the SuperCircuit, the data or the thread count differ from the search's; "
            "restore the run directory's weights/ from a backup"
        )
    logger.info("re-derived the fine-tuned weights of %s (validation accuracy %.4f, as stored)", arch.canonical(), got)
    return model


def _save_weights(model: nn.Module, path: Path) -> None:
    atomic_write_torch(path, model.state_dict())


def load_candidate(supercircuit: SuperCircuit, arch: Architecture, weights_dir: Path) -> HQNN:
    """The fine-tuned model the objective scored (weights from ``weights_dir/<arch.key()>.pt``)."""
    path = Path(weights_dir) / f"{arch.key()}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no fine-tuned weights for {arch} at {path}; evaluate it with ValidationErrorObjective(weights_dir=...) "
            "first, or use supercircuit.extract(arch) for the inherited weights"
        )
    model = supercircuit.extract(arch)
    model.load_state_dict(read_torch(path, f"fine-tuned weights of {arch.canonical()}"))  # type: ignore[arg-type]
    model.eval()
    return model
