"""The model layer: what an architecture is, and how its hybrid network computes and trains.

* ``space``: the genes (embedding, qubits, layers, rotations, entangler,
  readout), :class:`~qnas_hw.model.space.Architecture` and the search space.
* ``circuits``: the one qiskit circuit of an architecture (every other
  representation is checked against it).
* ``simulator``: the batched, differentiable torch statevector simulator.
* ``gatewise``: the gate-by-gate simulator, exact and with per-gate noise
  (noise-aware training).
* ``hqnn``: front-end, quantum layer and head as one ``nn.Module``.
* ``supercircuit``: the shared-parameter SuperCircuit and its training.
* ``training``: the one supervised training loop (validation selects,
  the test split is read once).

Imports run downward only: ``model`` imports ``data`` and ``atomic_write``,
never ``hardware``, ``search``, ``jobs``, ``reports`` or ``cli``
(checked by ``tests/test_layering.py``).
"""
