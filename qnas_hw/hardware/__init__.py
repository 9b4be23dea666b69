"""The hardware layer: a device as the search sees it, offline or in the cloud.

* ``backends``: IBM (fake snapshots, real QPUs through the runtime's
  client-side Sampler), Aer and Amazon Braket (local simulators, QPU snapshots, real
  QPUs) behind one :class:`~qnas_hw.hardware.backends.Backend` interface.
* ``transpilation`` and ``layout``: the circuit as the device runs it, placed
  on its best qubits by estimated success probability.
* ``cutting``: real cut plans (qiskit-addon-cutting) under a qubit budget,
  and their execution and reconstruction.
* ``execution``: a candidate's runnable programs (uncut, or its cut
  subexperiments) with shot allotment and readout mitigation.
* ``noise``: the device's noise model, simulated exactly per sample.
* ``cost`` and ``calibrate``: runtime and price models fitted to measured
  backend timings.

Imports run downward only: ``hardware`` imports ``model`` (circuits are built
from architectures) and the storage helpers, never ``config``, ``jobs``,
``search``, ``reports`` or ``cli`` (checked by ``tests/test_layering.py``).
"""
