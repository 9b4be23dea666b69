"""Qiskit Aer simulators: the noiseless reference and a fake device's noise model.

``aer_ideal`` is the noiseless reference (all-to-all, no durations);
``aer_noisy`` simulates an IBM snapshot's noise model (default: fake_kolkata)
directly with Aer's SamplerV2, without the runtime's local-testing layer.
Both are local: their cost model is wall-clock, fitted by ``qnas-hw calibrate``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from qiskit import QuantumCircuit, transpile
from qiskit.transpiler import Target

from qnas_hw.hardware.backends.base import Backend, JobHandle, SamplerPub
from qnas_hw.hardware.backends.primitives import PrimitiveJobHandle, pub_tuple, target_duration

log = logging.getLogger(__name__)

#: Basis of the ideal simulator: small and universal so gate counts mean something.
IDEAL_BASIS = ["rz", "sx", "x", "cx", "measure", "reset", "delay"]


class AerBackend(Backend):
    """Aer simulator, ideal or with a fake IBM device's noise model and coupling map."""

    provider = "aer"

    def __init__(self, name: str, noise_from: str | None = None) -> None:
        from qiskit_aer import AerSimulator

        self.name = name
        self._noise_from = noise_from
        if noise_from is None:
            self._sim = AerSimulator()
            self._device = None
        else:
            from qnas_hw.hardware.backends.ibm import fake_backend_instance

            self._device = fake_backend_instance(noise_from)
            self._sim = AerSimulator.from_backend(self._device)

    @property
    def num_qubits(self) -> int:
        return int(self._device.num_qubits if self._device is not None else self._sim.num_qubits)

    @property
    def coupling_edges(self) -> list[tuple[int, int]] | None:
        if self._device is None:
            return None
        return [tuple(e) for e in self._device.coupling_map.get_edges()]  # type: ignore[misc]

    @property
    def topology_kind(self) -> str:
        if self._device is None:
            return "all-to-all"
        from qnas_hw.hardware.backends.ibm import ibm_topology

        return ibm_topology(self._device)

    @property
    def basis_gates(self) -> list[str]:
        if self._device is None:
            return list(IDEAL_BASIS)
        return sorted(self._device.operation_names)

    @property
    def target(self) -> Target | None:
        return None if self._device is None else self._device.target

    def credentials_present(self) -> bool:
        return True  # local, nothing to authenticate

    def transpile(self, circuit: QuantumCircuit, optimization_level: int = 1, seed: int = 0) -> QuantumCircuit:
        if self._device is None:
            return transpile(
                circuit, basis_gates=IDEAL_BASIS, optimization_level=optimization_level, seed_transpiler=seed
            )
        return transpile(circuit, self._device, optimization_level=optimization_level, seed_transpiler=seed)

    def scheduled_duration(self, transpiled: QuantumCircuit) -> float:
        return target_duration(transpiled, self.target)

    def submit(self, pubs: Sequence[SamplerPub], shots: int, seed: int | None = None) -> JobHandle:
        from qiskit_aer.primitives import SamplerV2

        sampler = SamplerV2.from_backend(self._sim, seed=seed, default_shots=shots)
        started = time.perf_counter()
        job = sampler.run([pub_tuple(p) for p in pubs], shots=shots)
        return PrimitiveJobHandle(job, submitted_at=started)

    def describe(self) -> dict[str, Any]:
        row = super().describe()
        row["noise_from"] = self._noise_from
        return row
