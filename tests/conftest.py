"""Shared test set-up: one torch thread for the whole session, and the tiny CLI search config."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

#: A search small enough for CLI tests: Iris, 2-3 qubits, 4 candidates x 2 generations, qubit budget 2.
TINY_SEARCH_TOML = """
seed = 5
[data]
dataset = "iris"
val_fraction = 0.2
[space]
qubits = [2, 3]
layers = [1, 1]
embeddings = ["angle-y", "iqp"]
[supercircuit]
epochs = 1
[search]
pop_size = 4
generations = 2
finetune_epochs = 1
objectives = ["val_error", "subcircuits"]
[hardware]
qubit_budget = 2
"""


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """The tests share a 2-core box with other jobs: one thread avoids oversubscription (and keeps the last
    digits of every result independent of the machine's core count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def _empty_user_calibration_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Lookups read the user calibration directory before the shipped data: the tests must not see (or write)
    the developer's own fits in ~/.local/share/qnas-hw/calibration."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QNAS_CALIBRATION_DIR", str(tmp_path_factory.mktemp("user-calibration")))
        yield


@pytest.fixture(scope="session")
def tiny_search_toml() -> str:
    return TINY_SEARCH_TOML
