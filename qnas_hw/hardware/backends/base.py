"""The one small interface every execution target implements.

The search only needs a device's *description* (qubits, coupling, basis,
instruction durations and errors) to transpile candidates and predict cost;
the job layer additionally needs *submission* (sampler jobs with parameter
arrays, re-attachment by provider job id, provider-reported timings).  Keeping
both behind :class:`Backend` is what lets an IBM device, a Braket QPU, a fake
snapshot and an Aer simulator be swapped by name.
"""

from __future__ import annotations

import enum
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: naming or validating a backend must not import qiskit (seconds)
    from qiskit import QuantumCircuit
    from qiskit.transpiler import Target

#: The data-only package the shipped calibration files are installed as (``package-dir`` maps it to the
#: repository's top-level ``calibration/`` folder, so a wheel carries them and an editable install reads them in place).
SHIPPED_CALIBRATION_PACKAGE = "qnas_hw._calibration"
#: Environment variable naming the user calibration directory (what ``qnas-hw calibrate`` writes, read first).
CALIBRATION_DIR_ENV = "QNAS_CALIBRATION_DIR"


def calibration_dir() -> Path:
    """The shipped calibration data (device snapshots and fitted cost models), read-only.

    Found through :mod:`importlib.resources`, not relative to this file: a
    wheel installs the files as package data, far from any ``calibration/``
    folder of a source checkout.
    """
    try:
        root = resources.files(SHIPPED_CALIBRATION_PACKAGE)
    except ModuleNotFoundError:
        raise BackendError(
            f"the shipped calibration data (package {SHIPPED_CALIBRATION_PACKAGE}) is not installed: this qnas-hw "
            "install predates it or is broken; re-install qnas-hw (from a checkout: `pip install -e .`)"
        ) from None
    if not isinstance(root, Path):  # zipped installs: every reader of these files needs a real path
        raise BackendError(
            f"the shipped calibration data ({root}) is not a directory on disk; install qnas-hw unzipped (pip does)"
        )
    return root


def user_calibration_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where ``qnas-hw calibrate`` writes and where lookups look first (the directory need not exist yet).

    ``$QNAS_CALIBRATION_DIR`` if set, else ``$XDG_DATA_HOME/qnas-hw/calibration``
    (``~/.local/share/...`` when XDG_DATA_HOME is unset or, as the XDG spec
    says, not absolute).  Kept apart from the shipped data so a re-fit never
    edits an installed package or a tracked file.
    """
    env = os.environ if env is None else env
    chosen = env.get(CALIBRATION_DIR_ENV, "").strip()
    if chosen:
        return Path(chosen).expanduser()
    xdg = env.get("XDG_DATA_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "qnas-hw" / "calibration"


def calibration_dirs(directory: Path | None = None) -> tuple[Path, ...]:
    """The directories a calibration lookup searches, first match wins: ``directory`` alone if given, else the
    user directory, then the shipped data (a user's own fit overrides the shipped one of the same name)."""
    if directory is not None:
        return (Path(directory),)
    return user_calibration_dir(), calibration_dir()


def find_calibration_file(relative: str | Path, directory: Path | None = None) -> Path | None:
    """The first existing ``<dir>/<relative>`` over :func:`calibration_dirs`, or ``None``."""
    for folder in calibration_dirs(directory):
        path = folder / relative
        if path.is_file():
            return path
    return None


def snapshot_names(directory: Path | None = None) -> list[str]:
    """Braket device snapshot stems in ``<dir>/devices/`` over the user calibration directory and the shipped data.

    Here rather than in :mod:`~qnas_hw.hardware.backends.braket` (which re-exports it) because it only lists
    files: validating a backend name reads it, and must not import qiskit or the Braket SDK to do so.
    """
    folders = [d / "devices" for d in calibration_dirs(directory)]
    return sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.json")})


class BackendError(RuntimeError):
    """A backend problem the user must fix (unknown name, missing credentials...)."""


def unreachable_reason(exc: BaseException) -> str | None:
    """The network failure behind a provider error, if any (walks ``__cause__``/``__context__``).

    Providers report a failed connection as an account problem (IBM: "Unable
    to retrieve instances. Please check that you are using a valid API
    token."); telling the user to fix a token that was never checked sends
    them the wrong way.
    """
    import socket

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        if isinstance(current, ConnectionError | socket.gaierror | TimeoutError) or name in (
            "ConnectionError",
            "NameResolutionError",
            "MaxRetryError",
            "NewConnectionError",
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ConnectTimeout",
        ):
            return f"{name}: {str(current)[:200]}"
        current = current.__cause__ or current.__context__
    return None


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class SamplerPub:
    """One transpiled, measured circuit and a parameter array (..., num_parameters).

    A whole batch of validation samples is one PUB, never one job per sample.
    ``parameter_values`` may be ``None`` for circuits without parameters.
    ``shots`` overrides the job's shots for this PUB (a cut candidate's
    subexperiments each get their QPD term's allotment in one job).
    """

    circuit: QuantumCircuit
    parameter_values: np.ndarray | None = None
    shots: int | None = None

    def shots_or(self, default: int) -> int:
        return int(self.shots) if self.shots is not None else int(default)

    @property
    def rows(self) -> int:
        """Parameter rows (circuit executions) in this PUB: cost and result decoding both count them."""
        if self.parameter_values is None:
            return 1
        values = np.asarray(self.parameter_values)
        return int(np.prod(values.shape[:-1])) if values.ndim > 1 else 1


@dataclass(frozen=True)
class JobTiming:
    """What the provider itself reports; ``None`` where a provider has no such figure."""

    quantum_seconds: float | None = None  # IBM usage / Braket billed duration
    wall_seconds: float | None = None  # submission to result, as seen by us
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pricing:
    """A provider's published per-task and per-shot prices (USD), with where they came from."""

    per_task_usd: float
    per_shot_usd: float
    source: str = ""


class JobHandle(ABC):
    """A submitted job. ``job_id`` is the provider's id, stored in the ledger."""

    @property
    @abstractmethod
    def job_id(self) -> str: ...

    @abstractmethod
    def state(self) -> JobState: ...

    @abstractmethod
    def counts(self) -> list[list[dict[str, int]]]:
        """Counts per PUB, then per parameter row (flattened), blocking until done."""

    @abstractmethod
    def timing(self) -> JobTiming: ...

    def cancel(self) -> None:  # pragma: no cover - providers override where supported
        """Best effort; local jobs may not be cancellable."""


class Backend(ABC):
    """A named target: description for transpilation/cost, submission for jobs."""

    #: registry name, e.g. ``fake_sherbrooke``, ``braket_iqm_garnet``, ``aer_noisy``
    name: str
    #: ``ibm`` | ``braket`` | ``aer``
    provider: str

    @property
    @abstractmethod
    def num_qubits(self) -> int: ...

    @property
    @abstractmethod
    def coupling_edges(self) -> list[tuple[int, int]] | None:
        """Directed couplings, or ``None`` for all-to-all (e.g. trapped ions, ideal Aer)."""

    @property
    @abstractmethod
    def topology_kind(self) -> str:
        """Short human label: ``heavy-hex``, ``square``, ``all-to-all``, ``line``..."""

    @property
    @abstractmethod
    def basis_gates(self) -> list[str]: ...

    @property
    def is_simulator(self) -> bool:
        return True

    @property
    def supports_reattach(self) -> bool:
        """True when a job can be found again by id after this process dies (cloud jobs)."""
        return False

    @property
    def target(self) -> Target | None:
        """The qiskit Target transpilation aims at (``None`` for unconstrained simulators)."""
        return None

    @property
    def rep_delay_s(self) -> float:
        """Idle time between shots on the device (reset/repetition delay); 0 for simulators."""
        return 0.0

    @property
    def supports_mid_circuit_measurement(self) -> bool:
        """Whether a measured qubit may be used again (cut candidates' QPD terms need it)."""
        return True

    def preflight(self) -> None:
        """Contact the provider once (cloud backends), so an unreachable service fails before any training."""

    @property
    def pricing(self) -> Pricing | None:
        """Per-task/per-shot prices where the provider charges that way (Braket); ``None`` otherwise."""
        return None

    @property
    def timing_source(self) -> str:
        """What a cost model fitted on this backend measures: ``device`` time or local ``wall`` clock."""
        return "wall" if self.is_simulator else "device"

    @abstractmethod
    def credentials_present(self) -> bool:
        """Whether the provider's standard credential sources are set; never reads them into logs."""

    @abstractmethod
    def transpile(self, circuit: QuantumCircuit, optimization_level: int = 1, seed: int = 0) -> QuantumCircuit: ...

    @abstractmethod
    def scheduled_duration(self, transpiled: QuantumCircuit) -> float:
        """Seconds one shot of the transpiled circuit takes, from the device's instruction durations."""

    @abstractmethod
    def submit(self, pubs: Sequence[SamplerPub], shots: int, seed: int | None = None) -> JobHandle: ...

    def reattach(self, job_id: str) -> JobHandle:
        """Find a submitted job again by provider id (after a crash)."""
        raise BackendError(
            f"backend {self.name!r} runs jobs in-process; job {job_id!r} cannot be re-attached after a restart"
        )

    def describe(self) -> dict[str, Any]:
        """Row for ``qnas-hw devices`` and for the study's provenance (no secrets)."""
        return {
            "name": self.name,
            "provider": self.provider,
            "qubits": self.num_qubits,
            "topology": self.topology_kind,
            "basis": self.basis_gates,
            "simulator": self.is_simulator,
            "credentials": self.credentials_present(),
        }


class DelegatingBackend(Backend):
    """A backend that describes itself as ``inner`` does (same name, so the same ledger keys) and changes how jobs
    run: fault injection, a detached-process provider emulator.  Subclasses implement ``submit``/``reattach``."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.provider = inner.provider

    @property
    def num_qubits(self) -> int:
        return self.inner.num_qubits

    @property
    def coupling_edges(self) -> list[tuple[int, int]] | None:
        return self.inner.coupling_edges

    @property
    def topology_kind(self) -> str:
        return self.inner.topology_kind

    @property
    def basis_gates(self) -> list[str]:
        return self.inner.basis_gates

    @property
    def is_simulator(self) -> bool:
        return self.inner.is_simulator

    @property
    def supports_reattach(self) -> bool:
        return self.inner.supports_reattach

    @property
    def target(self) -> Target | None:
        return self.inner.target

    @property
    def rep_delay_s(self) -> float:
        return self.inner.rep_delay_s

    @property
    def pricing(self) -> Pricing | None:
        return self.inner.pricing

    @property
    def timing_source(self) -> str:
        return self.inner.timing_source

    @property
    def supports_mid_circuit_measurement(self) -> bool:
        return self.inner.supports_mid_circuit_measurement

    def credentials_present(self) -> bool:
        return self.inner.credentials_present()

    def preflight(self) -> None:
        self.inner.preflight()

    def transpile(self, circuit: QuantumCircuit, optimization_level: int = 1, seed: int = 0) -> QuantumCircuit:
        return self.inner.transpile(circuit, optimization_level, seed)

    def scheduled_duration(self, transpiled: QuantumCircuit) -> float:
        return self.inner.scheduled_duration(transpiled)
