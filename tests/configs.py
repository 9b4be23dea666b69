"""Run configurations several test modules share (one definition, so the modules test the same search)."""

from __future__ import annotations

from typing import Any

from qnas_hw.config import RunConfig, config_from_dict

#: the device the device-mode searches run on
DEVICE_BACKEND = "fake_kolkata"


def device_search_config(data: dict[str, Any] | None = None, **search: object) -> RunConfig:
    """A small ``accuracy = "device"`` search: 2-qubit candidates only (no cutting), 4 candidates x 2 generations,
    32 shots on 12 samples; ``data`` replaces the data section (the default job's data set when left out)."""
    return config_from_dict(
        {
            "seed": 3,
            **({"data": data} if data is not None else {}),
            "space": {"qubits": [2, 2], "layers": [1, 2], "embeddings": ["angle-x", "angle-y", "iqp"]},
            "supercircuit": {"epochs": 1},
            "search": {
                "pop_size": 4,
                "generations": 2,
                "objectives": ["val_error", "runtime_s"],
                "accuracy": "device",
                "shots": 32,
                "val_samples": 12,
                **search,
            },
            "hardware": {"backend": DEVICE_BACKEND, "qubit_budget": 2},
        }
    )
