"""A fine-tuned candidate's validation accuracy as the target would produce it: offline under its noise, or on it.

The front-end and head run locally; the quantum layer runs as the target
would run it: the candidate's :class:`~qnas_hw.hardware.execution.CandidateProgram`
(transpiled, placed on the best physical qubits, cut when it is wider than
the budget) with finite shots, its measured ``<Z_q>`` (readout-mitigated
with mthree when enabled) decoded by the head.

* :class:`NoisyScorer` (``accuracy = "noisy"``): the program runs on
  :class:`~qnas_hw.hardware.trajectories.TrajectorySimulator` (all samples batched
  in torch; ``[search] noisy_simulator = "trajectories"``, the default) or
  :class:`~qnas_hw.hardware.noise.NoisySimulator` (Aer, ``"aer"``), the target's own
  noise on only the qubits it uses, idle qubits relaxing when
  ``[search] idle_noise`` is on.  In-process, seeded, deterministic.
* :class:`DeviceScorer` (``accuracy = "device"``): the same circuits become
  jobs (:class:`~qnas_hw.jobs.executor.JobSpec`), one parameterised PUB per
  circuit with the samples as rows, submitted through the ledger and the
  retrying executor.  Every candidate of a generation is in flight at once
  (bounded concurrency); the spending guard prices the generation against
  what is left of the budget before anything is submitted.  Job seeds derive
  from (seed, architecture, chunk), so a resumed generation sends
  byte-identical jobs: the ledger reuses finished ones and re-attaches to
  submitted ones, nothing is paid twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qnas_hw.hardware.backends.base import Backend, SamplerPub
from qnas_hw.hardware.execution import (
    CAL_SHOTS,
    CandidateProgram,
    ProgramBuilder,
    ReadoutMitigator,
    assignment_matrices,
    calibration_circuits,
)
from qnas_hw.hardware.noise import NoisySimulator, has_noise_model
from qnas_hw.hardware.trajectories import TrajectorySimulator
from qnas_hw.model.circuits import circuit_inputs
from qnas_hw.model.space import Architecture

log = logging.getLogger(__name__)


def derive_run_seed(seed: int, arch: Architecture | None, *parts: Any) -> int:
    """A 31-bit simulator seed from the run seed, the architecture and a salt only (never evaluation order)."""
    text = "|".join([str(int(seed)), arch.key() if arch is not None else "-", *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def model_inputs(model: Any, X: Any) -> tuple[np.ndarray, np.ndarray]:
    """The circuit's ``x`` values per sample and its weights, from a trained HQNN (front-end run locally)."""
    import torch

    with torch.no_grad():
        feats = model.encode(torch.as_tensor(X)).detach().cpu().double().numpy()
        weights = model.quantum_weights().detach().cpu().double().numpy()
    return circuit_inputs(model.arch, feats), weights


def decoded_accuracy(model: Any, z: np.ndarray, y: Any) -> float:
    """Accuracy of the head applied to measured ``<Z_q>``."""
    import torch

    with torch.no_grad():
        pred = model.decode(torch.as_tensor(z, dtype=torch.float32)).argmax(dim=-1).cpu().numpy()
    return float((pred == np.asarray(torch.as_tensor(y).cpu().numpy()).reshape(-1)).mean())


def simulator_summary(simulator: NoisySimulator | TrajectorySimulator) -> dict[str, Any]:
    """Which simulator scored a candidate, with its idle noise and (trajectories) the most trajectories per sample."""
    out = simulator.summary() if isinstance(simulator, TrajectorySimulator) else {"simulator": "aer"}
    return {**out, "idle_noise": simulator.idle_noise or "off"}


def reported_usd(ledger: Any, keys: Sequence[str]) -> float | None:
    """What the provider's SDK reported these finished jobs cost (Braket's ``Tracker``, kept in each ledger result
    as ``timing.extra.tracker_usd``), summed; None when no job reported a figure (IBM, simulators)."""
    from qnas_hw.hardware.backends.braket import TRACKER_USD

    figures = []
    for key in keys:
        record = ledger.get(key) if ledger is not None else None
        extra = (((record.result if record is not None else None) or {}).get("timing") or {}).get("extra") or {}
        if extra.get(TRACKER_USD) is not None:
            figures.append(float(extra[TRACKER_USD]))
    return float(sum(figures)) if figures else None


def _qubits_of(program: CandidateProgram) -> tuple[int, ...]:
    return tuple(sorted({q for run in program.runs for q in run.measured_qubits if q is not None}))


class NoisyScorer:
    """``accuracy = "noisy"``: the candidate's program under the target's noise model, offline."""

    mode = "noisy"

    def __init__(
        self,
        builder: ProgramBuilder,
        simulator: NoisySimulator | TrajectorySimulator,
        *,
        mitigation: bool,
        seed: int,
    ) -> None:
        self.builder = builder
        self.simulator = simulator
        self.mitigation = bool(mitigation) and has_noise_model(builder.backend)
        self.seed = int(seed)
        self._mitigators: dict[tuple[int, ...], ReadoutMitigator] = {}

    def settings_key(self) -> str:
        mit = f"mthree-cal{CAL_SHOTS}" if self.mitigation else "none"
        return f"noisy|{self.builder.settings_key()}|{self.simulator.settings_key()}|mit={mit}|seed{self.seed}"

    def mitigator(self, qubits: Sequence[int]) -> ReadoutMitigator:
        """Assignment matrices of ``qubits``, measured on the noisy simulator (cached per qubit set)."""
        key = tuple(sorted(int(q) for q in qubits))
        cached = self._mitigators.get(key)
        if cached is not None:
            return cached
        circuits = calibration_circuits(self.builder.backend, key)
        counts = self.simulator.run([(c, None) for c in circuits], CAL_SHOTS, derive_run_seed(self.seed, None, key))
        mit = ReadoutMitigator()
        mit.add(assignment_matrices(counts[0][0], counts[1][0], key))
        self._mitigators[key] = mit
        return mit

    def score(self, arch: Architecture, model: Any, X: Any, y: Any) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        program = self.builder.build(arch)
        t1 = time.perf_counter()
        inputs, weights = model_inputs(model, X)
        values = program.parameter_values(inputs, weights)
        counts = self.simulator.run(
            [(run.circuit, v) for run, v in zip(program.runs, values, strict=True)],
            [run.shots for run in program.runs],
            derive_run_seed(self.seed, arch, "noisy"),
        )
        t2 = time.perf_counter()
        mit = self.mitigator(_qubits_of(program)) if self.mitigation else None
        z = program.expectations(counts, inputs, mit)
        acc = decoded_accuracy(model, z, y)
        t3 = time.perf_counter()
        details = {
            **program.details(),
            "accuracy_mode": self.mode,
            "samples": len(inputs),
            "shots": int(self.builder.shots),
            "mitigation": "mthree" if mit is not None else "none",
            "noisy_simulator": simulator_summary(self.simulator),
            "_timings": {"build": t1 - t0, "simulate": t2 - t1, "mitigate_decode": t3 - t2},
        }
        return acc, details


# ------------------------------------------------------------------ device
@dataclass(frozen=True)
class DeviceSettings:
    """How ``accuracy = "device"`` submits: concurrency, retries, chunking, budget, seed."""

    seed: int = 0
    concurrency: int = 4
    chunk_rows: int | None = None
    mitigation: bool = True
    policy: Any = None  # RetryPolicy; None: RetryPolicy.for_backend
    budget: Any = None  # Budget; None: no limit
    batch: str = "search"
    #: how a generation's jobs are going (JobProgress, for the CLI to show) and the CLI's Ctrl-C (StopRequest):
    #: how a run is watched and stopped, not what it computes (left out of settings_key)
    on_progress: Any = field(default=None, compare=False)
    stop: Any = field(default=None, compare=False)


@dataclass
class PreparedCandidate:
    """A candidate ready to submit: its program, inputs, data jobs and the calibration jobs it needs."""

    arch: Architecture
    model: Any
    program: CandidateProgram
    inputs: np.ndarray
    y: Any
    jobs: list[Any]
    calibration: Any | None  # JobSpec of the readout calibration (shared by candidates on the same qubits)
    qubits: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class DeviceScorer:
    """``accuracy = "device"``: the candidates' programs as ledger-backed jobs on the backend itself."""

    mode = "device"

    def __init__(self, builder: ProgramBuilder, backend: Backend, ledger: Any, settings: DeviceSettings) -> None:
        self.builder = builder
        self.backend = backend
        self.ledger = ledger
        self.settings = settings
        self.mitigation = bool(settings.mitigation) and backend.target is not None

    def settings_key(self) -> str:
        mit = f"mthree-cal{CAL_SHOTS}" if self.mitigation else "none"
        chunk = self.settings.chunk_rows or "all"
        return f"device|{self.builder.settings_key()}|mit={mit}|chunk={chunk}|seed{self.settings.seed}"

    # ------------------------------------------------------------ jobs
    def prepare(self, arch: Architecture, model: Any, X: Any, y: Any) -> PreparedCandidate:
        from qnas_hw.jobs.executor import JobSpec

        program = self.builder.build(arch)
        inputs, weights = model_inputs(model, X)
        values = program.parameter_values(inputs, weights)
        n = len(inputs)
        chunk = self.settings.chunk_rows or n
        jobs = []
        for i, start in enumerate(range(0, n, chunk)):
            stop = min(n, start + chunk)
            pubs = tuple(
                SamplerPub(run.circuit, None if v is None else v[start:stop], shots=run.shots)
                for run, v in zip(program.runs, values, strict=True)
            )
            jobs.append(
                JobSpec(
                    pubs,
                    self.builder.shots,
                    seed=derive_run_seed(self.settings.seed, arch, "device", i),
                    label=f"{arch.canonical()}#{i}",
                    meta={"arch": arch.canonical(), "chunk": i, "rows": [start, stop], "kind": "candidate"},
                )
            )
        qubits = _qubits_of(program)
        cal = self._calibration_job(qubits) if self.mitigation else None
        return PreparedCandidate(arch, model, program, inputs, y, jobs, cal, qubits)

    def _calibration_job(self, qubits: tuple[int, ...]) -> Any:
        from qnas_hw.jobs.executor import JobSpec

        pubs = tuple(SamplerPub(c) for c in calibration_circuits(self.backend, qubits))
        return JobSpec(
            pubs,
            CAL_SHOTS,
            seed=derive_run_seed(self.settings.seed, None, "cal", self.settings.batch, qubits),
            label=f"readout-cal[{','.join(map(str, qubits))}]",
            meta={"kind": "readout-calibration", "qubits": list(qubits)},
        )

    def all_jobs(self, prepared: Sequence[PreparedCandidate]) -> dict[str, list[Any]]:
        """Jobs grouped by candidate (calibrations once per distinct qubit set, as their own groups)."""
        groups: dict[str, list[Any]] = {}
        seen: set[str] = set()
        for p in prepared:
            groups[p.arch.canonical()] = list(p.jobs)
            if p.calibration is not None:
                key = p.calibration.key(self.backend.name)
                if key not in seen:
                    seen.add(key)
                    groups[p.calibration.label] = [p.calibration]
        return groups

    def run(self, prepared: Sequence[PreparedCandidate]) -> dict[str, Any]:
        """Guard, then submit every job of the generation at once; returns outcomes by job key.

        Raises :class:`~qnas_hw.jobs.guard.BudgetExceeded` before submitting
        anything when the generation's jobs would exceed what is left of the
        budget, and the executor's errors when a job cannot produce a result:
        both stop the search (everything finished stays in the ledger for
        ``--resume``), neither is a property of the candidate; so does
        :class:`~qnas_hw.jobs.executor.JobsInterrupted` when ``settings.stop``
        (the CLI's Ctrl-C) ended the batch before every job had run.
        """
        from qnas_hw.hardware.cost import CostModel
        from qnas_hw.jobs.executor import AsyncExecutor, RetryPolicy
        from qnas_hw.jobs.guard import check_budget, price_job

        groups = self.all_jobs(prepared)
        plan = self.plan(groups)
        check_budget(plan)
        specs = [s for specs in groups.values() for s in specs]
        model = CostModel.for_backend(self.backend)
        for spec in specs:  # what each job spends, recorded in the ledger with it (remaining budget after a resume)
            spec.meta.update(price_job(self.backend, spec, model))
        executor = AsyncExecutor(
            self.backend,
            self.ledger,
            concurrency=self.settings.concurrency,
            policy=self.settings.policy or RetryPolicy.for_backend(self.backend),
            batch=self.settings.batch,
            resume=True,
            on_progress=self.settings.on_progress,
            stop=self.settings.stop,
        )
        outcomes = executor.run_sync(specs)
        return {o.key: o for o in outcomes}

    def plan(self, groups: dict[str, list[Any]]) -> Any:
        """The spend plan of these jobs against what is left of the budget (jobs already paid cost nothing)."""
        from qnas_hw.jobs.guard import plan_spend

        paid = self.ledger.paid_keys(self.backend.name)
        return plan_spend(self.backend, groups, done_keys=paid, budget=self.remaining_budget())

    def remaining_budget(self) -> Any:
        """The configured budget minus what this study's search jobs have already spent (predicted or reported)."""
        from qnas_hw.jobs.guard import Budget

        budget = self.settings.budget or Budget()
        spent = self.ledger.spent(self.settings.batch)
        left = lambda limit, used: None if limit is None else max(0.0, limit - used)  # noqa: E731
        shots_left = None if budget.max_shots is None else max(0, int(budget.max_shots - spent["shots"]))
        return Budget(
            left(budget.max_cost_usd, spent["usd"]), left(budget.max_qpu_seconds, spent["seconds"]), shots_left
        )

    def finish(
        self, p: PreparedCandidate, outcomes: dict[str, Any], mitigators: dict[tuple[int, ...], ReadoutMitigator]
    ) -> tuple[float, dict[str, Any]]:
        """Accuracy of one candidate from its jobs' counts (rows in sample order across chunks)."""
        z, details = self.measured_expectations(p, outcomes, mitigators)
        return decoded_accuracy(p.model, z, p.y), details

    def measured_expectations(
        self, p: PreparedCandidate, outcomes: dict[str, Any], mitigators: dict[tuple[int, ...], ReadoutMitigator]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """``(rows, n_qubits)`` measured ``<Z_q>`` of one candidate and its run details, from its jobs' counts.

        Apart from :meth:`finish` so that ``qnas-hw predict`` decodes the very
        expectations a ``device`` search scores into per-sample predictions.
        """
        per_run: list[list[dict[str, int]]] = [[] for _ in p.program.runs]
        job_ids, reused, qsec, wsec = [], 0, [], []
        for spec in p.jobs:
            outcome = outcomes[spec.key(self.backend.name)]
            for r, pub_counts in enumerate(outcome.counts):
                per_run[r].extend(pub_counts)
            job_ids.append(outcome.provider_job_id)
            reused += int(outcome.reused)
            qsec.append(outcome.quantum_seconds)
            wsec.append(outcome.wall_seconds)
        mit = None
        if p.calibration is not None:
            mit = mitigators.get(p.qubits)
            if mit is None:
                cal = outcomes[p.calibration.key(self.backend.name)]
                mit = ReadoutMitigator()
                mit.add(assignment_matrices(cal.counts[0][0], cal.counts[1][0], p.qubits))
                mitigators[p.qubits] = mit
        z = p.program.expectations(per_run, p.inputs, mit)
        details = {
            **p.program.details(),
            "accuracy_mode": self.mode,
            "samples": len(p.inputs),
            "shots": int(self.builder.shots),
            "mitigation": "mthree" if mit is not None else "none",
            "jobs": len(p.jobs),
        }
        # run-dependent facts (ids, reuse, timings) are timings, not results: a resumed study equals a fresh one
        details["_timings"] = {
            "job_ids": job_ids,
            "reused_jobs": reused,
            "quantum_seconds": None if any(q is None for q in qsec) else float(sum(qsec)),
            "wall_seconds": None if any(w is None for w in wsec) else float(sum(wsec)),
            # Braket: the SDK Tracker's cost of these jobs, beside the guard's prediction in each job's ledger meta
            "reported_usd": reported_usd(self.ledger, [spec.key(self.backend.name) for spec in p.jobs]),
        }
        return z, details
