"""Will a simulation fit in memory?  Checked before anything state-sized is allocated.

A statevector of ``n`` qubits holds ``2**n`` amplitudes per sample, so between
12 and 20 qubits the memory one training step needs grows 256-fold: a batch
that trains in megabytes at 12 qubits asks for tens of gigabytes at 20.  Left
to the allocator, that ends as a CUDA out-of-memory error deep inside a kernel
or, on the CPU, as the kernel's OOM killer ending the process without a word.
The simulators estimate their peak from what they really allocate and call
:func:`check_fits` first, which raises :class:`SimulationMemoryError` naming
the batch, the qubits, both byte counts and a batch size that would fit.

Available memory: CUDA asks the driver (``torch.cuda.mem_get_info``) and adds
what torch's caching allocator holds but does not use; the CPU asks psutil when
it is installed, else ``/proc/meminfo``'s ``MemAvailable``, and a cgroup (v2)
limit when the process runs under one.  Where none of them answers the check is
skipped (logged), never guessed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

#: Estimates below this are not checked: asking the OS costs a system call, and no machine that runs
#: the rest of the package has less free memory than this.
CHECK_ABOVE_BYTES = 64 * 2**20


class SimulationMemoryError(MemoryError, ValueError):
    """A simulation that would not fit in the device's memory, refused before it allocates.

    A ``ValueError`` too, so the command line reports it as a setting to change (batch size,
    qubits, device) rather than as a crash.
    """


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _proc_meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Room left under a cgroup v2 memory limit (containers), or None without one."""
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def cpu_available_bytes() -> int | None:
    """Memory a new allocation can take on the host without swapping (None when the OS does not say)."""
    try:
        import psutil

        host: int | None = int(psutil.virtual_memory().available)
    except ImportError:
        host = _proc_meminfo_available()
    limited = _cgroup_available()
    if host is None:
        return limited
    return host if limited is None else min(host, limited)


def available_bytes(device: torch.device | str) -> int | None:
    """Bytes a new tensor on ``device`` can take (None when it cannot be known: the check is skipped)."""
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_available_bytes()
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # blocks torch's caching allocator reserved but no tensor uses are free for this process too
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(0, cached))
    return None  # meta and other devices: nothing to measure


def check_fits(
    what: str,
    n_qubits: int,
    batch: int,
    per_sample_bytes: int,
    device: torch.device | str,
    reusable_bytes: int = 0,
    available: int | None = None,
) -> None:
    """Raise :class:`SimulationMemoryError` when ``batch * per_sample_bytes`` exceeds the memory available.

    ``reusable_bytes``: memory the caller already holds and will reuse (its scratch buffers), counted as
    available.  ``available`` overrides the measurement (tests).
    """
    need = batch * per_sample_bytes
    if need < CHECK_ABOVE_BYTES:
        return
    if available is None:
        available = available_bytes(device)
        if available is None:
            logger.debug("cannot tell the free memory of %s; simulating %s unchecked", device, what)
            return
    room = available + reusable_bytes
    if need <= room:
        return
    fit = room // per_sample_bytes if per_sample_bytes > 0 else 0
    advice = (
        f"a batch of at most {fit} fits (set a smaller batch size, e.g. supercircuit.batch_size)"
        if fit >= 1
        else f"not even one sample fits ({_gib(per_sample_bytes)} per sample)"
    )
    raise SimulationMemoryError(
        f"simulating {what} ({n_qubits} qubits) at batch size {batch} needs about {_gib(need)} "
        f"({need} bytes) on {device}, but only {_gib(room)} ({room} bytes) is available: {advice}; "
        "or use fewer qubits, or a device with more memory"
    )
