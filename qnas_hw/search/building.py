"""A search's parts, built from its config: the target hardware, the objectives, the accuracy scorer and the
constraints.

One backend, one transpiler and one cut planner (:class:`Hardware`) serve
every objective and scorer, so ``runtime_s``, ``cost_usd``, ``subcircuits``
and the ``noisy``/``device`` accuracy read the same placements and cut plans.
The accuracy objective ``val_error`` is the SuperCircuit trained once (or
resumed, or loaded) and wrapped as a
:class:`~qnas_hw.search.evaluation.ValidationErrorObjective`
(:func:`_build_accuracy_objective`); the hardware evaluation and the export
rebuild it through the same function.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qnas_hw.config import RunConfig
from qnas_hw.search.objectives import Objective, RuntimeCostObjective, SubcircuitObjective
from qnas_hw.search.problem import Constraints, SearchError

logger = logging.getLogger(__name__)


SUPERCIRCUIT_FILE = "supercircuit.pt"


WEIGHTS_DIR = "weights"


# ------------------------------------------------------------ hardware
@dataclass
class Hardware:
    """The target and everything derived from it that the objectives share (one transpiler, one planner)."""

    backend: Any
    transpiler: Any
    planner: Any


def needs_backend(config: RunConfig) -> bool:
    names = config.search.objectives
    noise_aware = config.supercircuit.noise_aware or config.search.noise_aware_finetune
    return (
        any(n in names for n in ("runtime_s", "subcircuits"))
        or ("val_error" in names and config.search.accuracy != "ideal")
        or noise_aware
    )


def make_hardware(config: RunConfig, backend: Any | None = None) -> Hardware | None:
    """Backend, transpiler and cut planner of the config (None when no objective needs a device)."""
    if backend is None and not needs_backend(config):
        return None
    if backend is None:
        from qnas_hw.hardware.backends import get_backend

        backend = get_backend(config.hardware.backend)
    smallest = config.search_space().qubits[0]
    if backend.num_qubits < smallest:
        raise SearchError(
            f"backend {backend.name} has {backend.num_qubits} qubit(s), fewer than the smallest candidate of the "
            f"space ({smallest} qubits; no architecture has fewer than 2), so nothing can run on it; pick a larger "
            "device (`qnas-hw devices` lists them with their sizes)"
        )
    return Hardware(backend, make_transpiler(config, backend), make_planner(config, backend))


def make_transpiler(config: RunConfig, backend: Any) -> Any:
    """The one transpiler of a search: the runtime objective and the noisy/device runs share its placements."""
    from qnas_hw.hardware.transpilation import Transpiler

    hw = config.hardware
    return Transpiler(backend, optimization_level=hw.optimization_level, seed=config.seed, layout=hw.layout)


def make_planner(config: RunConfig, backend: Any) -> Any:
    from qnas_hw.hardware.cutting import CutPlanner

    return CutPlanner(config.hardware.qubit_budget, seed=config.seed, max_qubits=backend.num_qubits)


# ------------------------------------------------------------- objectives
def build_objectives(
    config: RunConfig,
    evaluator: Objective | None,
    *,
    backend: Any | None = None,
    planner: Any | None = None,
    transpiler: Any | None = None,
) -> list[Objective]:
    """The configured objectives, in ``config.search.objectives`` order.

    ``evaluator`` is the accuracy objective (a ``ValidationErrorObjective``
    built on the trained SuperCircuit; required when ``val_error`` is
    configured).  The hardware objectives are built here from
    ``config.hardware``: the transpiler, the calibrated cost model of the
    backend and one shared cut planner, so ``runtime_s``, ``cost_usd`` and
    ``subcircuits`` read the same plan.  ``cost_usd`` on a backend without
    prices is refused here too (the config validator refuses it first, before
    any training; this guards callers that build objectives directly).
    """
    from qnas_hw.hardware.backends import get_backend
    from qnas_hw.hardware.cost import CostModel
    from qnas_hw.search.objectives import CostUsdObjective

    hw = config.hardware
    names = list(config.search.objectives)
    hardware_needed = any(n in names for n in ("runtime_s", "cost_usd", "subcircuits"))
    if hardware_needed and backend is None:
        backend = get_backend(hw.backend)
    if hardware_needed and planner is None:
        planner = make_planner(config, backend)
    if ("runtime_s" in names or "cost_usd" in names) and transpiler is None:
        transpiler = make_transpiler(config, backend)  # one transpiler: both price the same placed circuits
    if "cost_usd" in names and backend.pricing is None:
        raise SearchError(
            f"objective 'cost_usd' needs a backend with per-task/per-shot prices, and backend {backend.name!r} has "
            "none; use 'runtime_s' instead, or a priced Braket backend (e.g. braket_iqm_garnet)"
        )
    out: list[Objective] = []
    for name in names:
        if name == "val_error":
            if evaluator is None:
                raise SearchError("objective 'val_error' needs the accuracy evaluator (ValidationErrorObjective)")
            out.append(evaluator)
        elif name == "runtime_s":
            out.append(
                RuntimeCostObjective(
                    backend,
                    transpiler,
                    CostModel.for_backend(backend),
                    cut_planner=planner,
                    shots=hw.shots,
                    n_circuits=hw.n_circuits,
                    cut_shots=config.search.cut_shots,
                )
            )
        elif name == "cost_usd":
            out.append(
                CostUsdObjective(
                    backend,
                    transpiler,
                    cut_planner=planner,
                    shots=hw.shots,
                    n_circuits=hw.n_circuits,
                    cut_shots=config.search.cut_shots,
                )
            )
        elif name == "subcircuits":
            out.append(SubcircuitObjective(planner))
        else:  # pragma: no cover - the config validator rejects unknown names
            raise SearchError(f"unknown objective {name!r}")
    return out


def noisy_simulator(config: RunConfig, backend: Any) -> Any:
    """``accuracy = "noisy"``'s simulator: ``search.noisy_simulator`` with its idle noise, on the compute device."""
    from qnas_hw.config import resolve_device
    from qnas_hw.hardware.trajectories import make_noisy_simulator

    s = config.search
    idle = s.idle_schedule if s.idle_noise else None
    return make_noisy_simulator(backend, s.noisy_simulator, idle, resolve_device(config.compute.device))


def make_scorer(
    config: RunConfig,
    backend: Any,
    transpiler: Any,
    planner: Any,
    ledger: Any | None = None,
    *,
    on_jobs: Callable[[Any], None] | None = None,
    stop: Any | None = None,
) -> Any:
    """The accuracy scorer of ``search.accuracy`` (None for ``ideal``): see :mod:`qnas_hw.search.scoring`.

    ``on_jobs`` and ``stop`` reach the ``device`` scorer's executor: the
    generation's job progress for the caller to show, and its stop request.
    """
    from qnas_hw.hardware.execution import ProgramBuilder
    from qnas_hw.search.scoring import DeviceScorer, DeviceSettings, NoisyScorer

    s = config.search
    if s.accuracy == "ideal":
        return None
    builder = ProgramBuilder(
        backend, transpiler, planner, s.shots, s.cut_shots, max_cut_experiments=s.cut_max_experiments
    )
    if s.accuracy == "noisy":
        return NoisyScorer(builder, noisy_simulator(config, backend), mitigation=s.readout_mitigation, seed=config.seed)
    from qnas_hw.jobs import Budget, RetryPolicy

    d = s.device
    if ledger is None:
        raise SearchError("accuracy='device' records every job in the study's ledger; pass the study's JobLedger")
    settings = DeviceSettings(
        seed=config.seed,
        concurrency=d.concurrency,
        chunk_rows=d.chunk_rows,
        mitigation=s.readout_mitigation,
        policy=RetryPolicy.for_backend(backend, max_attempts=d.max_attempts, timeout_s=d.timeout_s),
        budget=Budget(d.max_cost_usd, d.max_qpu_seconds, d.max_shots),
        batch=device_batch(config, backend),
        on_progress=on_jobs,
        stop=stop,
    )
    return DeviceScorer(builder, backend, ledger, settings)


def device_batch(config: RunConfig, backend: Any) -> str:
    """Ledger batch of a search's device jobs: its spending is summed per batch."""
    return f"search|{backend.name}|seed={config.seed}"


def make_constraints(config: RunConfig, hw: Hardware | None, names: Sequence[str]) -> Constraints:
    """The study's constraints; the cost caps apply where the objectives predict that cost."""
    c, h = config.search.constraints, config.hardware
    priced = hw is not None and getattr(hw.backend, "pricing", None) is not None
    return Constraints(
        c.max_qubits,
        c.max_sampling_overhead,
        cut_plan=hw is not None and hw.planner is not None,
        max_runtime_s=h.max_candidate_runtime_s if "runtime_s" in names else None,
        max_usd=h.max_candidate_usd if priced and ("runtime_s" in names or "cost_usd" in names) else None,
        min_two_qubit_gates=config.search.min_two_qubit_gates,
        top_rung=config.search.proxy == "halving" and "val_error" in names,
    )


# ------------------------------------------------------------- accuracy objective
def _build_accuracy_objective(
    config: RunConfig,
    out_dir: Path,
    progress: bool,
    scorer: Any | None = None,
    splits: Any | None = None,
    hw: Hardware | None = None,
) -> Objective:
    """Load data, train (or resume / load) the SuperCircuit once, and wrap it as ``val_error``.

    The SuperCircuit trains only for the weight-shared proxy (``inherited``); the from-scratch proxies use it as
    the study's model family alone (each candidate a fresh, seeded model of the same shape), at 0 epochs.
    """
    from qnas_hw.config import resolve_device
    from qnas_hw.model.supercircuit import SuperCircuit, SuperTrainConfig, train_supercircuit
    from qnas_hw.search.evaluation import ProxySpec, ValidationErrorObjective

    splits = splits if splits is not None else load_splits(config)
    device = resolve_device(config.compute.device)
    logger.info("training and simulating on %s (compute.device = %r)", device, config.compute.device)
    sc = SuperCircuit(
        config.search_space(),
        tuple(splits.input_shape),
        splits.n_classes,
        frontend=config.model.frontend,
        seed=config.seed,
        sharing=config.supercircuit.sharing,
    ).to(device)
    s = config.supercircuit
    proxy = ProxySpec.from_config(config.search)
    noise = training_noise(config, hw)
    train_cfg = SuperTrainConfig(
        epochs=s.epochs if proxy.weight_shared else 0,
        batch_size=s.batch_size,
        lr=s.lr,
        sampling=s.sampling,
        restricted_genes=s.restricted_genes,
        seed=config.seed,
        noise=noise if s.noise_aware else None,
        noise_key=noise.key() if s.noise_aware and noise is not None else "",
    )
    t0 = time.perf_counter()
    if proxy.weight_shared:
        result = train_supercircuit(sc, splits, train_cfg, progress=progress, checkpoint=out_dir / SUPERCIRCUIT_FILE)
        history = result.history
        logger.info(
            "SuperCircuit ready (%d epochs run now, %.1f s): fingerprint %s",
            result.epochs_run,
            time.perf_counter() - t0,
            sc.fingerprint(),
        )
    else:  # nothing to train: the file still holds the model family that hw-eval, export and retrains load
        history = []
        _keep_model_family(sc, out_dir / SUPERCIRCUIT_FILE)
    objective = ValidationErrorObjective(
        sc,
        splits,
        finetune_epochs=config.search.finetune_epochs,
        lr=s.lr,
        batch_size=s.batch_size,
        seed=config.seed,
        weights_dir=out_dir / WEIGHTS_DIR,
        scorer=scorer,
        val_samples=config.search.val_samples,
        training_noise=noise if config.search.noise_aware_finetune else None,
        device=device,
        progress=progress,
        proxy=proxy,
    )
    objective.training_summary = supercircuit_summary(proxy, history, splits.n_classes)
    return objective


def _keep_model_family(sc: Any, path: Path) -> None:
    """Write the untrained SuperCircuit (a from-scratch proxy's model family) unless the same one is there; a damaged
    or different file is set aside as ``.damaged`` and rewritten (it is re-derived exactly from the seed)."""
    from qnas_hw.atomic_write import DamagedFileError
    from qnas_hw.model.supercircuit import SuperCircuit

    if path.is_file():
        try:
            if SuperCircuit.load(path).fingerprint() == sc.fingerprint():
                return
            reason = "holds another SuperCircuit"
        except (DamagedFileError, ValueError, KeyError, RuntimeError) as exc:
            reason = f"is damaged ({exc})"
        damaged = path.with_name(path.name + ".damaged")
        path.replace(damaged)
        logger.warning("%s %s; moved it to %s and wrote the study's model family again", path, reason, damaged)
    sc.save(path)


def supercircuit_summary(proxy: Any, history: list[dict[str, Any]], n_classes: int) -> dict[str, Any]:
    """How the SuperCircuit trained, against chance: the report's ``supercircuit`` block.

    ``chance_loss`` is ln C, the cross-entropy of a uniform guess over C classes: a final loss near it means the
    shared weights learned nothing a candidate could inherit.
    """
    return {
        "proxy": proxy.name,
        "trained": bool(proxy.weight_shared),
        "epochs": len(history),
        "final_loss": float(history[-1]["loss"]) if history else None,
        "chance_loss": math.log(n_classes),
    }


def training_noise(config: RunConfig, hw: Hardware | None) -> Any:
    """The target's noise for noise-aware training (None unless the config asks for it)."""
    if not (config.supercircuit.noise_aware or config.search.noise_aware_finetune):
        return None
    if hw is None:
        hw = make_hardware(config)
    assert hw is not None
    from qnas_hw.hardware.noise import NoisySimulator, TrainingNoise, require_noise_model

    require_noise_model(hw.backend)
    return TrainingNoise(hw.backend, hw.transpiler, NoisySimulator(hw.backend), config.hardware.qubit_budget)


def _use_threads(config: RunConfig) -> None:
    """Run with the study's thread count (see :class:`~qnas_hw.config.ComputeConfig`)."""
    import torch

    threads = config.compute.threads
    if threads is not None and torch.get_num_threads() != threads:
        logger.info(
            "using %d torch threads, as the study records (this process had %d)", threads, torch.get_num_threads()
        )
        torch.set_num_threads(threads)


def load_splits(config: RunConfig) -> Any:
    from qnas_hw.data import load_dataset

    d = config.data
    return load_dataset(
        d.dataset,
        d.data_dir,
        val_fraction=d.val_fraction,
        seed=config.seed,
        limit_train=d.limit_train,
        download=d.download,
    )


__all__ = [
    "SUPERCIRCUIT_FILE",
    "WEIGHTS_DIR",
    "Hardware",
    "build_objectives",
    "device_batch",
    "load_splits",
    "make_constraints",
    "make_hardware",
    "make_planner",
    "make_scorer",
    "make_transpiler",
    "needs_backend",
    "noisy_simulator",
    "training_noise",
]
