"""The simulator benchmarks' workloads and their training step, shared by ``simulator.py`` (the CPU benchmark) and
``simulator_cuda.py`` (``--device cuda``); neither of those two imports the other for them.

Workloads (as in shared/notes/simulator-anchors.md): RY angle embedding, L layers of trainable (RY, RZ) per
qubit + CNOT ring, <Z> on every qubit, MSE loss, one forward+backward with gradients for weights and inputs.
W8 = 8 qubits 2 layers, W10, W12, W8x4 = 8 qubits 4 layers, W16, W20 (``--device cuda``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from qnas_hw.model.space import Architecture

WORKLOADS = {"W8": (8, 2), "W10": (10, 2), "W12": (12, 2), "W8x4": (8, 4), "W16": (16, 2), "W20": (20, 2)}


def workload_arch(name: str) -> Architecture:
    n, layers = WORKLOADS[name]
    return Architecture("angle-y", n, layers, "ry-rz", "ring")


def make_step(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x, w, target) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        w.grad = None
        loss = torch.nn.functional.mse_loss(forward(x, w), target)
        loss.backward()

    return step
