"""Dataset presets shared by every benchmark: one place, so two benchmarks never disagree on a setting.

Scripts in this folder import it as ``presets`` (Python puts a script's own
folder first on ``sys.path``).

* :data:`PUBLISHED`: the published results we compare against, with the
  architecture size reported with each.  The search spaces of
  :data:`PRESETS` use those qubit and layer counts as upper bounds, so
  every pick is no larger than the published model by construction.
* :data:`PRESETS`: per data set, the front-end, learning rate (``None``:
  the config's per-front-end default, 3e-3 for the CNN), search space,
  training subset and budgets, sized for the < 30 min per data set target
  on a shared 2-core box.  ``retrain_*`` is the from-scratch retrain of the
  picks on the full training file; ``rank`` overrides the space and budgets
  for the proxy rank-correlation benchmark, which wants a wider space and
  fewer samples per architecture.
* :func:`pure_quantum_config`: the QuantumNAS setting (MNIST-4 /
  Fashion-4, no classical front-end) for the noise-aware benchmark.
"""

from __future__ import annotations

from typing import Any

#: Published test accuracy (%) and the architecture size reported with it.
PUBLISHED: dict[str, dict[str, Any]] = {
    "mnist": {"acc": 97.16, "qubits": 8, "layers": 2},
    "fashion-mnist": {"acc": 87.38, "qubits": 5, "layers": 2},
    "iris": {"acc": 100.0, "qubits": 4, "layers": 2},
}

PRESETS: dict[str, dict[str, Any]] = {
    "iris": {
        "frontend": "linear",
        "lr": 2e-2,
        "qubits": (2, 4),
        "layers": (1, 2),
        "limit_train": None,
        "limit_val": None,
        "val_fraction": 0.2,
        "sc_epochs": 40,
        "pop_size": 16,
        "generations": 8,
        "retrain_epochs": 60,
        "retrain_patience": 20,
        "retrain_val_fraction": 0.2,
        "retrain_seeds": 5,
        "retrain_batch_size": 16,
        "rank": {"qubits": (2, 6), "layers": (1, 3), "epochs": 40, "sc_epochs": 40},
    },
    "mnist": {
        "frontend": "cnn",
        "lr": None,
        "qubits": (2, 8),
        "layers": (1, 2),
        "limit_train": 3000,
        "limit_val": None,
        "val_fraction": 0.05,
        "sc_epochs": 6,
        "pop_size": 12,
        "generations": 5,
        "retrain_epochs": 8,
        "retrain_patience": 3,
        "retrain_val_fraction": 0.1,
        "retrain_seeds": 5,
        "retrain_batch_size": 64,
        "rank": {"epochs": 5, "sc_epochs": 5, "limit_train": 2000, "limit_val": 1000},
    },
}
#: Fashion-MNIST: the MNIST settings, capped at the published 5 qubits, with two more retrain epochs.
PRESETS["fashion-mnist"] = {**PRESETS["mnist"], "qubits": (2, 5), "retrain_epochs": 10}


def rank_preset(dataset: str) -> dict[str, Any]:
    """The preset of ``dataset`` with its ``rank`` overrides applied (rank-correlation benchmark)."""
    p = dict(PRESETS[dataset])
    return {**p, **p.pop("rank", {})}


#: Embeddings that load 16 pooled pixels into 4-5 qubits (see ``qnas_hw.model.space.EMBEDDINGS``).
PURE_QUANTUM_EMBEDDINGS = ("4x4-ryzxy", "4x4-ryzxy-ru", "amplitude")


def pure_quantum_config(dataset: str, backend: str, mode: str, seed: int, data_dir: str | None, quick: bool) -> Any:
    """A RunConfig for MNIST-4 / Fashion-4 without a front-end, searched ``ideal`` or under ``backend``'s noise.

    ``mode``: ``ideal``, ``noisy``, ``noisy+nat`` (noise-aware SuperCircuit and
    fine-tunes) or ``random-noisy`` (scored like ``noisy``).  ``quick`` shrinks
    every budget for a smoke run.
    """
    from qnas_hw.config import config_from_dict

    noisy = mode != "ideal"
    nat = mode == "noisy+nat"
    return config_from_dict(
        {
            "seed": seed,
            "data": {
                "dataset": dataset,
                "data_dir": data_dir,
                "val_fraction": 0.1,
                "limit_train": 1000 if quick else 6000,
            },
            "model": {"frontend": "none"},
            "space": {"embeddings": list(PURE_QUANTUM_EMBEDDINGS), "qubits": [4, 5], "layers": [1, 3]},
            "supercircuit": {"epochs": 1 if quick else 3, "batch_size": 64, "lr": 0.05, "noise_aware": nat},
            "search": {
                "pop_size": 4 if quick else 10,
                "generations": 2 if quick else 4,
                "finetune_epochs": 1,
                "objectives": ["val_error", "runtime_s"],
                "accuracy": "noisy" if noisy else "ideal",
                "shots": 1024,
                "val_samples": 128 if quick else 256,
                "noise_aware_finetune": nat,
            },
            "hardware": {"backend": backend, "qubit_budget": 5},
            "compute": {"threads": 1},
        }
    )


#: The two 4x4 encoders of the search-proof benchmarks (amplitude, the third pure-quantum embedding, is left out).
ENCODERS_4X4 = ("4x4-ryzxy", "4x4-ryzxy-ru")


def search_proof_config(
    dataset: str, backend: str, qubits: list[int], accuracy: str, seed: int, data_dir: str | None, quick: bool
) -> Any:
    """The space where a search has room: both 4x4 encoders, ``qubits``, 1-4 layers, every rotation and entangler;
    no front-end; val_error (``accuracy``: ``noisy`` or ``ideal``) and runtime_s; the package's default proxy; a
    qubit budget as wide as the space (no cuts: the comparison is about accuracy under noise).  ``quick`` shrinks
    every budget for a smoke run."""
    from qnas_hw.config import config_from_dict

    return config_from_dict(
        {
            "seed": seed,
            "data": {
                "dataset": dataset,
                "data_dir": data_dir,
                "val_fraction": 0.1,
                "limit_train": 500 if quick else 3000,
            },
            "model": {"frontend": "none"},
            "space": {"embeddings": list(ENCODERS_4X4), "qubits": list(qubits), "layers": [1, 2 if quick else 4]},
            "supercircuit": {"epochs": 1, "batch_size": 64, "lr": 0.05},
            "search": {
                "pop_size": 4 if quick else 10,
                "generations": 2,
                "objectives": ["val_error", "runtime_s"],
                "accuracy": accuracy,
                "shots": 1024,
                "val_samples": 64 if quick else 256,
            },
            "hardware": {"backend": backend, "qubit_budget": max(qubits)},
            "compute": {"threads": 1},
        }
    )
