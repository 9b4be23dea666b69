"""An export bundle as a torch module: :func:`load_export` (``qnas_hw.load_export``), no study needed.

The module is the project's own :class:`~qnas_hw.model.hqnn.HQNN` (same
front-end, angle scaling and head, so ``encode``/``decode`` are the ones the
search scored with) whose quantum layer is replaced by :class:`BundleCircuitLayer`:
the bundle's ``circuit.qpy`` itself, evaluated exactly (statevector,
float64) on the physical qubits it touches, read out through
``observables.json``.  So ``load_export(DIR)(x)`` checks the bundle, not
the architecture it came from: a wrong circuit gives wrong logits.

The quantum layer is for inference: it has no trainable weights (they are
bound in the circuit) and no gradient.  ``encode`` and ``decode`` are what
``qnas-hw predict`` runs around a device's measured ``<Z>``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from qnas_hw.deploy.bundle import Bundle, BundleError, open_bundle
from qnas_hw.model.hqnn import HQNN
from qnas_hw.model.space import Architecture

log = logging.getLogger(__name__)


class BundleCircuitLayer(nn.Module):
    """``<Z>`` per model output from the bundle's circuit: exact statevector of its active qubits, float64."""

    def __init__(self, arch: Architecture, circuit: Any, observables: list[dict[str, Any]]) -> None:
        super().__init__()
        from qnas_hw.hardware.layout import deflate
        from qnas_hw.model.circuits import INPUT_NAME

        self.arch = arch
        small, active = deflate(circuit)
        self._circuit = small
        self._inputs = [p.index for p in small.parameters]
        if any(p.vector.name != INPUT_NAME for p in small.parameters):
            raise BundleError(f"the bundle's circuit has parameters other than x: {list(small.parameters)}")
        position = {q: k for k, q in enumerate(active)}
        # an output whose qubit no gate touches reads |0>: <Z> = 1
        self._qubits = [position.get(int(ob["physical_qubit"])) for ob in observables]

    def forward(self, inputs: Tensor) -> Tensor:
        """``inputs``: what the quantum layer of the HQNN takes (angles, or raw features for amplitude)."""
        from qiskit.quantum_info import Statevector

        from qnas_hw.model.circuits import circuit_inputs

        x = circuit_inputs(self.arch, inputs.detach().cpu().double().numpy())
        n = self._circuit.num_qubits
        bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        signs = 1.0 - 2.0 * bits  # (2**n, n): +1 where qubit k reads 0
        out = np.ones((len(x), len(self._qubits)))
        cols = [k for k, q in enumerate(self._qubits) if q is not None]
        qubits = [self._qubits[k] for k in cols]
        params = list(self._circuit.parameters)
        for r, row in enumerate(x):
            bound = self._circuit.assign_parameters(dict(zip(params, row[self._inputs], strict=True)))
            probs = Statevector(bound).probabilities()
            out[r, cols] = probs @ signs[:, qubits]
        return torch.from_numpy(out)


class ExportedModel(HQNN):
    """The bundle's model: :class:`HQNN` with :class:`BundleCircuitLayer` as its quantum layer."""

    bundle: Bundle

    @property
    def manifest(self) -> dict[str, Any]:
        return self.bundle.manifest


def load_export(directory: Path | str) -> ExportedModel:
    """The bundle at ``directory`` as a torch module (``eval`` mode), after :func:`open_bundle`'s checks.

    ``model(x)`` gives logits for a batch shaped like the data the study used
    (``manifest["model"]["input_shape"]``); ``model.encode`` / ``model.decode``
    are the classical halves around the circuit.
    """
    return model_from_bundle(open_bundle(directory))


def model_from_bundle(bundle: Bundle) -> ExportedModel:
    """:func:`load_export` of a bundle already opened (and so verified) by :func:`open_bundle`."""
    m = bundle.manifest["model"]
    arch = Architecture.parse(bundle.architecture)
    model = ExportedModel(arch, tuple(m["input_shape"]), int(m["n_classes"]), frontend=str(m["frontend"]), seed=0)
    state = bundle.classical_state()
    for part in ("frontend", "head"):
        sub = {k[len(part) + 1 :]: v for k, v in state.items() if k.startswith(part + ".")}
        getattr(model, part).load_state_dict(sub, strict=True)
    model.quantum = BundleCircuitLayer(arch, bundle.circuit(), bundle.observables())
    model.quantum_dtype = torch.float64
    model.bundle = bundle
    model.eval()
    log.info("loaded %s for %s from %s", bundle.architecture, bundle.backend, bundle.path)
    return model
