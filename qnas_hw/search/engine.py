"""Where a generation's candidate evaluations run: in this process (``local``) or as Ray tasks (``ray``).

The unit of work is one candidate on every objective: fine-tune from the
SuperCircuit and score (``val_error``, ideal or noisy), transpile and price
(``runtime_s`` / ``cost_usd``), plan the cuts (``subcircuits``).  Each of these
is already a pure function of the architecture and the objective's settings
(per-candidate seeds derive from the run seed and the architecture, see
:func:`~qnas_hw.search.evaluation.derive_seed`), so it can run anywhere:

* :class:`LocalEngine` evaluates objective by objective over the whole batch,
  as the search always did (``accuracy = "device"`` keeps a generation's jobs
  in flight together).
* :class:`RayEngine` runs :func:`evaluate_candidate` as one Ray task per
  candidate.  The objectives (with the SuperCircuit, the data splits and the
  backend's warm caches) go into Ray's object store once per search and are
  unpickled once per worker process; each task runs with the study's torch
  thread count and returns the objective values, details and the fine-tuned
  weights.  Objectives that must stay in this
  process (``val_error`` under ``accuracy = "device"``: its jobs go through the
  study's job ledger) are evaluated here as a batch while the tasks run.

Both engines yield the candidates in the order they were given, whatever the
order the tasks finish in, and write nothing: the caller (the search driver)
stays the only writer of the study, of the job ledger and of the weights files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qnas_hw.config import ComputeConfig
from qnas_hw.model.space import Architecture
from qnas_hw.search.objectives import Objective, ObjectiveResult

logger = logging.getLogger(__name__)

#: How long to wait for a TCP answer from a Ray address before saying it is unreachable (Ray's own client waits 30 s
#: and a bare GCS address minutes).
CONNECT_TIMEOUT_S = 5.0
#: Default ports of a Ray address without one: the Ray Client server (``ray://``) and the GCS (``host``).
_CLIENT_PORT, _GCS_PORT = 10001, 6379
RAY_INSTALL_HINT = "pip install 'qnas-hw[ray]'"


class EngineError(RuntimeError):
    """The engine cannot start or lost its workers; the message says what to fix (the study keeps what finished)."""


class RemoteCandidateError(RuntimeError):
    """A candidate's failure in a Ray worker whose exception could not travel back as itself (not picklable)."""


@dataclass
class CandidateOutcome:
    """One candidate's results on every objective (by objective name), the wall seconds each took, and where its
    Ray task ran (``host:pid``; None in this process): provenance, stored with the timings."""

    arch: Architecture
    results: dict[str, ObjectiveResult | Exception]
    seconds: dict[str, float]
    worker: str | None = None


class Engine(Protocol):
    """Evaluates a batch of candidates on the objectives; yields one outcome per candidate, in the given order."""

    name: str

    def evaluate(self, objectives: Sequence[Objective], archs: Sequence[Architecture]) -> Iterator[CandidateOutcome]:
        """Outcomes of ``archs`` in order; raises (rather than yields) only for what is not a candidate's fault."""
        ...

    def close(self) -> None:
        """Release what the engine holds (a Ray instance it started); idempotent."""
        ...


class LocalEngine:
    """This process, objective by objective over the batch (``Objective.evaluate_batch``)."""

    name = "local"

    def evaluate(self, objectives: Sequence[Objective], archs: Sequence[Architecture]) -> Iterator[CandidateOutcome]:
        results: dict[str, list[ObjectiveResult | Exception]] = {}
        seconds: dict[str, float] = {}
        for obj in objectives:
            t0 = time.perf_counter()
            results[obj.name] = obj.evaluate_batch(archs)  # raises only for what is not the candidates' fault
            seconds[obj.name] = (time.perf_counter() - t0) / max(1, len(archs))
        for i, arch in enumerate(archs):
            yield CandidateOutcome(arch, {name: res[i] for name, res in results.items()}, dict(seconds))

    def close(self) -> None:
        return None


# ------------------------------------------------------------------ the Ray task
def evaluate_candidate(objectives: Sequence[Objective], arch: Architecture, threads: int | None) -> CandidateOutcome:
    """One candidate on every (worker copy of an) objective: the body of a Ray task.

    A pure function of its arguments: the objectives hold their seeds and
    derive the candidate's from its architecture, and ``threads`` is the study's
    torch thread count (floating-point sums differ with it, so a worker must
    use the count the local search records).  A candidate's own failure comes
    back as its exception, exactly as ``Objective.evaluate_batch`` records it.
    """
    import torch

    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    results: dict[str, ObjectiveResult | Exception] = {}
    seconds: dict[str, float] = {}
    for obj in objectives:
        t0 = time.perf_counter()
        try:
            results[obj.name] = obj.evaluate(arch)
        except Exception as exc:  # the candidate's own failure, recorded with it
            results[obj.name] = _portable(exc)
        seconds[obj.name] = time.perf_counter() - t0
    return CandidateOutcome(arch, results, seconds)


class _WorkerObjectives:
    """The objectives a worker process unpickled last, by object-store reference.

    The package's one piece of module-level state, and it lives only in Ray
    worker processes: without it every task would unpickle the objectives
    again (1.1-1.3 s for the default job's, mostly the backend's noise data)
    and start with cold transpilation, noise-model and readout-calibration
    caches.  Reusing one copy for many candidates is what the local search
    does with its own objectives, whose values do not depend on what was
    evaluated before; a new search (a new reference) replaces it.
    """

    def __init__(self) -> None:
        self.key: str | None = None
        self.objectives: list[Objective] = []

    def get(self, ray: Any, ref: Any) -> list[Objective]:
        if ref.hex() != self.key:
            self.objectives = pickle.loads(ray.get(ref))
            self.key = ref.hex()
        return self.objectives


_WORKER_OBJECTIVES = _WorkerObjectives()


def _candidate_task(shipped: list[Any], arch: Architecture, threads: int | None) -> CandidateOutcome:
    """The Ray task: :func:`evaluate_candidate` on this worker's copy of the shipped objectives.

    ``shipped`` holds the object-store reference in a list, so that Ray hands
    the task the reference rather than the unpickled value (see
    :class:`_WorkerObjectives`).
    """
    import ray

    outcome = evaluate_candidate(_WORKER_OBJECTIVES.get(ray, shipped[0]), arch, threads)
    outcome.worker = f"{socket.gethostname()}:{os.getpid()}"
    return outcome


def _portable(exc: Exception) -> Exception:
    """``exc`` itself when it pickles (its type and text are what the study stores), else a stand-in with both."""
    try:
        pickle.dumps(exc)
    except Exception:
        return RemoteCandidateError(f"{type(exc).__name__}: {exc}")
    return exc


# ------------------------------------------------------------------ the Ray engine
@dataclass
class _Shipped:
    """A search's objectives as the workers get them: one object-store reference, and those that stay here."""

    key: tuple[int, ...]  # identities of the driver's objectives this was made from
    ref: Any  # ray.ObjectRef of the worker copies (None when every objective stays here)
    remote: list[Objective]  # the driver's objectives whose worker copies the ref holds
    here: list[Objective]  # objectives evaluated in this process


class RayEngine:
    """One Ray task per candidate (see the module doc); connect with :func:`open_engine`."""

    name = "ray"

    def __init__(self, ray: Any, settings: ComputeConfig, *, owns_connection: bool) -> None:
        self._ray = ray
        self.settings = settings
        self.threads = settings.threads
        self._owns = owns_connection
        self._task = ray.remote(_candidate_task)
        self._shipped: _Shipped | None = None

    def _ship(self, objectives: Sequence[Objective]) -> _Shipped:
        """Put the worker copies into the object store, once per search (objectives are read-only from here)."""
        key = tuple(id(o) for o in objectives)
        if self._shipped is not None and self._shipped.key == key:
            return self._shipped
        remote, here, copies = [], [], []
        for obj in objectives:
            copy = obj.for_worker()
            if copy is None:
                here.append(obj)
            else:
                remote.append(obj)
                copies.append(copy)
        t0 = time.perf_counter()
        ref, size = None, 0
        if copies:
            # pickled here and unpickled once per worker (_WorkerObjectives): Ray's own deserialisation hands numpy
            # arrays back read-only (zero-copy), and code that works on a private copy locally must not meet one
            blob = self._ray.cloudpickle.dumps(copies)
            ref, size = self._ray.put(blob), len(blob)
        logger.info(
            "shipped %s to the Ray object store (%.1f MB, %.2f s); %s stay in this process",
            [o.name for o in remote],
            size / 1e6,
            time.perf_counter() - t0,
            [o.name for o in here] or "none",
        )
        self._shipped = _Shipped(key, ref, remote, here)
        return self._shipped

    def evaluate(self, objectives: Sequence[Objective], archs: Sequence[Architecture]) -> Iterator[CandidateOutcome]:
        shipped = self._ship(objectives)
        futures: list[Any] = []
        if shipped.ref is not None:
            task = self._task.options(num_cpus=self.settings.num_cpus, num_gpus=self.settings.num_gpus)
            futures = [task.remote([shipped.ref], arch, self.threads) for arch in archs]
        finished = False
        try:
            here = LocalEngine().evaluate(shipped.here, archs) if shipped.here else None
            for i, arch in enumerate(archs):
                results: dict[str, ObjectiveResult | Exception] = {}
                seconds: dict[str, float] = {}
                worker = None
                if here is not None:
                    local = next(here)
                    results.update(local.results)
                    seconds.update(local.seconds)
                if futures:
                    remote = self._get(futures[i], arch)
                    for obj in shipped.remote:
                        results[obj.name] = _keep_artifacts(obj, arch, remote.results[obj.name])
                    seconds.update(remote.seconds)
                    worker = remote.worker
                yield CandidateOutcome(arch, {o.name: results[o.name] for o in objectives}, seconds, worker)
            finished = True
        finally:
            for f in [] if finished else futures:  # a stopped search (an error, Ctrl-C) leaves no task running
                with contextlib.suppress(Exception):
                    self._ray.cancel(f)

    def _get(self, future: Any, arch: Architecture) -> CandidateOutcome:
        try:
            return self._ray.get(future)
        except self._ray.exceptions.RayError as exc:
            raise EngineError(
                f"the Ray task evaluating {arch.canonical()} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        self._shipped = None
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False


def _keep_artifacts(obj: Objective, arch: Architecture, result: ObjectiveResult | Exception) -> Any:
    """Write what a worker sent back (fine-tuned weights) where the local search writes it; a failed write is the
    candidate's result, so the search treats a full disk the same way on either engine."""
    if isinstance(result, Exception):
        return result
    try:
        obj.keep_artifacts(arch, result)
    except OSError as exc:
        return exc
    return result


# ------------------------------------------------------------------ connecting
def open_engine(settings: ComputeConfig) -> Engine:
    """The configured engine, connected: every refusal (Ray missing, an unreachable address, a task too large for
    every node) is raised here, before a study is created or anything trains."""
    if settings.engine == "local":
        return LocalEngine()
    if settings.engine != "ray":  # pragma: no cover - the config validator refuses other names
        raise EngineError(f"compute.engine {settings.engine!r} is not supported; use 'local' or 'ray'")
    try:
        import ray
    except ImportError:
        raise EngineError(
            f"compute.engine = 'ray' (--engine ray) needs Ray, which is not installed here: {RAY_INSTALL_HINT}"
        ) from None
    owns = _connect(ray, settings.address)
    try:
        _check_resources(ray, settings, started_here=owns and settings.address == "")
    except BaseException:
        if owns:
            ray.shutdown()
        raise
    return RayEngine(ray, settings, owns_connection=owns)


def _connect(ray: Any, address: str) -> bool:
    """Connect (or reuse this process's connection for ``address = ""``); True when this call connected."""
    if ray.is_initialized():
        if address == "":
            logger.info("using the Ray instance this process is already connected to")
            return False
        raise EngineError(
            f"this process is already connected to Ray, so compute.address={address!r} cannot be used; set "
            "compute.address = '' to evaluate on that connection, or call ray.shutdown() first"
        )
    if address not in ("", "auto"):
        _probe(address)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "address": address}
    if address == "":
        # a new instance for this search alone: Ray's default would join a `ray start` cluster of this machine
        kwargs.update(address="local", include_dashboard=False)
    t0 = time.perf_counter()
    try:
        ray.init(**kwargs)
    except Exception as exc:
        where = "a local Ray instance" if address == "" else f"the Ray cluster at compute.address={address!r}"
        hint = ""
        if address.startswith("ray://"):  # measured: Ray 2.60's `ray start` requires a token, a client without one
            hint = (  # reaches the port and times out after 30 s
                " A reachable port that times out usually means the cluster requires token authentication: set "
                "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN; Ray's docs: "
                "https://docs.ray.io/en/latest/ray-security/token-auth.html)."
            )
        raise EngineError(
            f"could not connect to {where}: {type(exc).__name__}: {exc}.{hint} Start a cluster with `ray start "
            "--head` (https://docs.ray.io/en/latest/cluster/getting-started.html), or use compute.engine = 'local'"
        ) from exc
    logger.info("connected to Ray (%s) in %.1f s", address or "local instance", time.perf_counter() - t0)
    return True


def _probe(address: str) -> None:
    """Fail in seconds on a host:port that does not answer (Ray itself waits 30 s to minutes before giving up)."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise EngineError(
            f"the Ray cluster at compute.address={address!r} is unreachable ({host}:{port} did not answer within "
            f"{CONNECT_TIMEOUT_S:g} s: {exc}); check the address and that the head node's port is open, or leave "
            "compute.address empty for a local Ray instance"
        ) from None


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``ray://host[:port]`` (Ray Client, port 10001) or ``host[:port]`` (GCS, port 6379)."""
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, _CLIENT_PORT if client else _GCS_PORT
    return host.strip("[]"), int(port)


def _check_resources(ray: Any, settings: ComputeConfig, *, started_here: bool) -> None:
    """A task that no node can hold would wait forever: refused on a local instance, a warning on a cluster (an
    autoscaler may still add such a node)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    need_cpu, need_gpu = settings.num_cpus, settings.num_gpus
    if any(r.get("CPU", 0.0) >= need_cpu and r.get("GPU", 0.0) >= need_gpu for r in nodes):
        return
    largest = max(nodes, key=lambda r: (r.get("CPU", 0.0), r.get("GPU", 0.0)), default={})
    msg = (
        f"each candidate's Ray task asks for compute.num_cpus={need_cpu:g} and compute.num_gpus={need_gpu:g}, but "
        f"no node of the Ray cluster has that much (largest: {largest.get('CPU', 0.0):g} CPUs, "
        f"{largest.get('GPU', 0.0):g} GPUs)"
    )
    if started_here:
        raise EngineError(f"{msg}; lower compute.num_cpus / compute.num_gpus")
    logger.warning("%s; the tasks wait until a node that large joins", msg)


__all__ = [
    "CandidateOutcome",
    "Engine",
    "EngineError",
    "LocalEngine",
    "RayEngine",
    "evaluate_candidate",
    "open_engine",
    "split_address",
]
