"""IBM targets: offline fake snapshots and real devices through Qiskit Runtime.

Fake backends (``fake_kolkata``...) carry a real calibration snapshot (coupling
map, basis, instruction durations and errors): transpilation and the device
cost model use it exactly as for the real device, and jobs run locally on Aer
with the snapshot's noise model through the runtime's local testing mode.

Real devices (``ibm:<name>``) are reached only when the user has saved an
account or set ``QISKIT_IBM_TOKEN``; the service is created lazily, so merely
listing or describing backends never contacts IBM.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from qiskit import QuantumCircuit, transpile
from qiskit.transpiler import Target

from qnas_hw.hardware.backends.base import Backend, BackendError, JobHandle, SamplerPub, unreachable_reason
from qnas_hw.hardware.backends.primitives import PrimitiveJobHandle, pub_tuple, target_duration

log = logging.getLogger(__name__)

#: Snapshots shown by ``qnas-hw devices``; every other ``fake_*`` name still resolves.
FEATURED_FAKES: tuple[str, ...] = (
    "fake_kolkata",
    "fake_manila",
    "fake_sherbrooke",
    "fake_brisbane",
    "fake_torino",
    "fake_fez",
)


def _fake_classes() -> dict[str, type]:
    """Registry name -> fake backend class, from what the installed runtime ships."""
    from qiskit_ibm_runtime import fake_provider

    from qnas_hw.hardware.backends import fake_registry_name

    names = {attr: fake_registry_name(attr) for attr in dir(fake_provider)}
    return {name: getattr(fake_provider, attr) for attr, name in names.items() if name is not None}


def fake_names() -> list[str]:
    return sorted(_fake_classes())


def fake_backend_instance(name: str) -> Any:
    """A fresh fake backend by registry name, or a BackendError listing the valid names."""
    classes = _fake_classes()
    if name not in classes:
        raise BackendError(f"unknown IBM fake backend {name!r}; known: {', '.join(sorted(classes))}")
    return classes[name]()


def ibm_topology(device: Any) -> str:
    """Label from the coupling graph's degrees: IBM's lattices are heavy-hex except tiny lines/T's."""
    cmap = device.coupling_map
    if cmap is None:
        return "all-to-all"
    degree: dict[int, int] = {}
    for a, b in {tuple(sorted(e)) for e in cmap.get_edges()}:
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
    top = max(degree.values(), default=0)
    if top <= 2:
        return "line"
    return "heavy-hex" if top == 3 and device.num_qubits >= 16 else "sparse"


def ibm_credentials_present() -> bool:
    """True if QISKIT_IBM_TOKEN is set or an account is saved; nothing is logged and no network is used.

    Saved accounts are read through the runtime's public
    ``QiskitRuntimeService.saved_accounts()`` (a local file read); an
    unreadable account file counts as no account, and the service then gives
    its own error when a search actually needs it.
    """
    if os.environ.get("QISKIT_IBM_TOKEN"):
        return True
    from qiskit_ibm_runtime import QiskitRuntimeService

    try:
        return bool(QiskitRuntimeService.saved_accounts())
    except Exception as exc:  # a malformed account file: report absence, never its content
        log.warning("could not read saved IBM Quantum accounts (%s)", type(exc).__name__)
        return False


def _sampler(mode: Any, shots: int, seed: int | None = None) -> Any:
    """The runtime's client-side Sampler (``executor_sampler``), current since runtime 0.50.

    It runs in job mode on a real backend and in the runtime's local testing
    mode on a fake backend (Aer with the snapshot's noise model), and returns
    the same ``PrimitiveResult`` of ``BitArray`` data as the legacy
    ``SamplerV2``.  Twirling and dynamical decoupling stay off (their defaults),
    so the circuits run as transpiled and priced.
    """
    from qiskit_ibm_runtime.executor_sampler import Sampler

    sampler = Sampler(mode=mode)
    sampler.options.default_shots = int(shots)
    if seed is not None:
        sampler.options.simulator.seed_simulator = int(seed)
    return sampler


class _QiskitDeviceBackend(Backend):
    """Shared description of a BackendV2 (fake or real): target, coupling, basis, durations."""

    provider = "ibm"
    _device: Any

    @property
    def num_qubits(self) -> int:
        return int(self._device.num_qubits)

    @property
    def coupling_edges(self) -> list[tuple[int, int]] | None:
        cmap = self._device.coupling_map
        return None if cmap is None else [(int(a), int(b)) for a, b in cmap.get_edges()]

    @property
    def topology_kind(self) -> str:
        return ibm_topology(self._device)

    @property
    def basis_gates(self) -> list[str]:
        return sorted(self._device.operation_names)

    @property
    def target(self) -> Target | None:
        return self._device.target

    @property
    def rep_delay_s(self) -> float:
        """The device's default repetition delay (reset time between shots), from its configuration."""
        conf = self._device.configuration() if hasattr(self._device, "configuration") else None
        value = getattr(conf, "default_rep_delay", None)
        return float(value) if value is not None else 0.0

    def transpile(self, circuit: QuantumCircuit, optimization_level: int = 1, seed: int = 0) -> QuantumCircuit:
        return transpile(circuit, self._device, optimization_level=optimization_level, seed_transpiler=seed)

    def scheduled_duration(self, transpiled: QuantumCircuit) -> float:
        return target_duration(transpiled, self.target)


class FakeIBMBackend(_QiskitDeviceBackend):
    """An IBM calibration snapshot, simulated locally with its noise model."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._device = fake_backend_instance(name)

    @property
    def timing_source(self) -> str:
        # the search predicts the *device's* time from the snapshot; local runs are only wall-clock
        return "device"

    def credentials_present(self) -> bool:
        return True

    def submit(self, pubs: Sequence[SamplerPub], shots: int, seed: int | None = None) -> JobHandle:
        sampler = _sampler(self._device, shots, seed)
        started = time.perf_counter()
        job = sampler.run([pub_tuple(p) for p in pubs], shots=shots)
        return PrimitiveJobHandle(job, submitted_at=started)

    def describe(self) -> dict[str, Any]:
        row = super().describe()
        row["snapshot"] = True
        row["rep_delay_s"] = self.rep_delay_s
        return row


class IBMRuntimeBackend(_QiskitDeviceBackend):
    """A real IBM QPU (``ibm:<name>``); the client-side Sampler in job mode, re-attachable by job id."""

    def __init__(self, device_name: str, instance: str | None = None) -> None:
        if not device_name:
            raise BackendError("empty IBM device name; use 'ibm:<device>', e.g. 'ibm:ibm_brisbane'")
        self.name = f"ibm:{device_name}"
        self.device_name = device_name
        self._instance = instance
        self._service_obj: Any = None
        self._device_obj: Any = None

    @property
    def is_simulator(self) -> bool:
        return False

    @property
    def supports_reattach(self) -> bool:
        return True

    def credentials_present(self) -> bool:
        return ibm_credentials_present()

    def preflight(self) -> None:
        self._device  # noqa: B018 - resolving the device contacts the service (clear error when unreachable)

    def _service(self) -> Any:
        if self._service_obj is None:
            if not self.credentials_present():
                raise BackendError(
                    f"{self.name}: no IBM Quantum credentials; save an account with "
                    "QiskitRuntimeService.save_account(...) or set QISKIT_IBM_TOKEN (and QISKIT_IBM_INSTANCE)"
                )
            from qiskit_ibm_runtime import QiskitRuntimeService

            try:
                self._service_obj = (
                    QiskitRuntimeService(instance=self._instance) if self._instance else (QiskitRuntimeService())
                )
            except Exception as exc:
                reason = unreachable_reason(exc)
                if reason is None:
                    raise
                raise BackendError(
                    f"{self.name}: IBM Quantum is unreachable (no network connection, or the service is down: "
                    f"{reason}); your credentials were not checked. Retry when the network is back, or search "
                    "offline with a fake backend (e.g. --backend fake_kolkata)"
                ) from None
        return self._service_obj

    @property
    def _device(self) -> Any:  # type: ignore[override]
        if self._device_obj is None:
            self._device_obj = self._service().backend(self.device_name)
        return self._device_obj

    def submit(self, pubs: Sequence[SamplerPub], shots: int, seed: int | None = None) -> JobHandle:
        sampler = _sampler(self._device, shots)
        started = time.perf_counter()
        job = sampler.run([pub_tuple(p) for p in pubs], shots=shots)
        log.info("submitted IBM job %s to %s", job.job_id(), self.device_name)
        return PrimitiveJobHandle(job, submitted_at=started)

    def reattach(self, job_id: str) -> JobHandle:
        job = self._service().job(job_id)
        return PrimitiveJobHandle(job)

    def describe(self) -> dict[str, Any]:
        # never touch the cloud for a description: qubit counts etc. need the service
        row: dict[str, Any] = {
            "name": self.name,
            "provider": self.provider,
            "qubits": None,
            "topology": None,
            "basis": None,
            "simulator": False,
            "credentials": self.credentials_present(),
        }
        if self._device_obj is not None:
            row.update(qubits=self.num_qubits, topology=self.topology_kind, basis=self.basis_gates)
        return row
