"""Candidates evaluated on every objective through the study, the search's persistent cache.

An architecture is looked up in the study by its key and the combined
settings key of all objectives (:func:`combined_settings_key`), evaluated only
when missing (as one batch per objective, on the configured engine), and
committed the moment it is finished; a stored failure is retried once per
process.  Its constraint values
(:class:`~qnas_hw.search.problem.Constraints`) are read from the stored
details, so a record taken from the study gives pymoo what a fresh one gives.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qnas_hw.model.space import Architecture
from qnas_hw.search.engine import CandidateOutcome, Engine, EngineError, LocalEngine
from qnas_hw.search.objectives import Objective
from qnas_hw.search.problem import FAILED_VALUE, Constraints
from qnas_hw.search.study import CandidateRecord, Study, StudyStorageError, storage_problem

logger = logging.getLogger(__name__)


def combined_settings_key(objectives: Sequence[Objective]) -> str:
    """One key for "same values for the same architecture": every objective's name and settings."""
    blob = json.dumps([[o.name, o.settings_key()] for o in objectives])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _facts(details: dict[str, Any], error: str | None, objectives: dict[str, float] | None = None) -> dict[str, Any]:
    """What the constraints read: the cut plan (from subcircuits or runtime_s details) and the predicted cost."""
    facts: dict[str, Any] = {"failed": error is not None}
    cut = details.get("subcircuits") or details.get("cut_plan") or {}
    runtime = details.get("runtime_s") or {}
    if "sampling_overhead" in cut:
        facts["sampling_overhead"] = cut["sampling_overhead"]
    elif "sampling_overhead" in runtime:
        facts["sampling_overhead"] = runtime["sampling_overhead"]
    if "feasible" in cut:
        facts["cut_feasible"] = bool(cut["feasible"])
    rung = (details.get("val_error") or {}).get("rung")
    if rung is not None:
        facts["rung"] = rung
    objectives = objectives or {}
    if "runtime_s" in objectives:
        facts["runtime_s"] = objectives["runtime_s"]
    if "cost_usd" in objectives:
        facts["usd"] = objectives["cost_usd"]
    elif runtime.get("dollars") is not None:
        facts["usd"] = runtime["dollars"]
    return facts


@dataclass
class CandidateEvaluator:
    """Evaluates architectures on every objective through the study (the persistent cache)."""

    study: Study
    objectives: list[Objective]
    constraints: Constraints
    settings_key: str = ""
    planner: Any | None = None
    evaluated: int = 0
    reused: int = 0
    failed: int = 0
    retried: int = 0
    #: where the evaluations run (``compute.engine``); the evaluator stays the only writer of the study either way
    engine: Engine = field(default_factory=LocalEngine)
    _names: list[str] = field(default_factory=list)
    #: arch keys evaluated by this process: a stored failure is retried once per process (a resume after a
    #: transient error or a fixed bug gets a fresh try), never twice in one run (that run stays deterministic)
    _tried: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.settings_key = self.settings_key or combined_settings_key(self.objectives)
        self._names = [o.name for o in self.objectives]

    def evaluate(self, arch: Architecture, generation: int) -> tuple[CandidateRecord, list[float]]:
        """The stored record of one architecture (evaluating and committing it first when missing)."""
        return self.evaluate_many([arch], generation)[0]

    def evaluate_many(
        self, archs: Sequence[Architecture], generation: int
    ) -> list[tuple[CandidateRecord, list[float]]]:
        """Stored records of ``archs`` (in order), evaluating every missing one as one batch per objective.

        A batch lets ``accuracy = "device"`` keep a whole generation's jobs in
        flight together.  Each finished candidate is committed on its own, so
        a crash loses at most the batch in progress (whose paid jobs stay in
        the ledger and are reused on resume).  An exception raised by an
        objective's batch (not a candidate's own failure) stops the search.
        """
        todo: list[Architecture] = []
        retries: dict[str, CandidateRecord] = {}
        for arch in archs:
            if arch.key() in {a.key() for a in todo}:
                continue
            stored = self.study.get_candidate(arch, self.settings_key)
            retry = stored is not None and "error" in stored.details and arch.key() not in self._tried
            if stored is not None and not retry:
                continue
            if retry:
                assert stored is not None
                logger.info(
                    "retrying %s, which failed in an earlier run: %s", arch.canonical(), stored.details["error"]
                )
                self.retried += 1
                retries[arch.key()] = stored
            self._tried.add(arch.key())
            todo.append(arch)
        if todo:
            self._evaluate_batch(todo, generation, retries)
        out = []
        fresh = {a.key() for a in todo}
        for arch in archs:
            record = self.study.get_candidate(arch, self.settings_key)
            assert record is not None  # stored before, or just committed
            if arch.key() not in fresh:
                self.reused += 1
            else:
                fresh.discard(arch.key())  # a duplicate later in the list counts as reused
            out.append((record, self._g(arch, record)))
        return out

    def _evaluate_batch(self, archs: list[Architecture], generation: int, retries: dict[str, CandidateRecord]) -> None:
        """Evaluate on the engine and commit each candidate as its outcome arrives (in ``archs`` order, whatever the
        order the engine's workers finish in: the study's rows are the same on every engine)."""
        try:
            with contextlib.closing(self.engine.evaluate(self.objectives, archs)) as outcomes:
                for outcome in outcomes:
                    self._commit(outcome.arch, generation, *self._collect(outcome), retries.get(outcome.arch.key()))
        except EngineError as exc:
            raise EngineError(
                f"{exc}. Every candidate finished before this is saved; continue with `qnas-hw search --resume "
                f"{self.study.path}`"
            ) from exc

    def _collect(
        self, outcome: CandidateOutcome
    ) -> tuple[dict[str, float], dict[str, Any], dict[str, Any], str | None]:
        """A candidate's objective values, details, timings and first error, from its results in objective order."""
        arch = outcome.arch
        objectives: dict[str, float] = {}
        details: dict[str, Any] = {}
        timings: dict[str, Any] = {}
        error: str | None = None
        for obj in self.objectives:
            result = outcome.results[obj.name]
            timings[obj.name] = outcome.seconds[obj.name]
            if isinstance(result, Exception) and storage_problem(result) is not None:
                # the disk's fault, not the candidate's: never stored as its result; a resume evaluates it
                raise StudyStorageError(
                    f"could not save while evaluating {arch.canonical()}: {storage_problem(result)}. Nothing of "
                    f"this generation's unfinished candidates was recorded; free space (or fix the permissions) "
                    f"and continue with `qnas-hw search --resume {self.study.path}`"
                ) from result
            if isinstance(result, Exception):
                logger.error("objective %s failed on %s: %s", obj.name, arch.canonical(), result, exc_info=result)
                error = error or f"{obj.name}: {type(result).__name__}: {result}"
                objectives[obj.name] = math.nan
                details[obj.name] = {"error": f"{type(result).__name__}: {result}"}
                continue
            objectives[obj.name] = float(result.value)
            details[obj.name] = dict(result.details)
            if result.timings:
                timings[f"{obj.name}_parts"] = dict(result.timings)
        if outcome.worker is not None:
            timings["worker"] = outcome.worker  # the Ray worker (host:pid) that ran the candidate's task
        return objectives, details, timings, error

    def _commit(
        self,
        arch: Architecture,
        generation: int,
        objectives: dict[str, float],
        details: dict[str, Any],
        timings: dict[str, Any],
        error: str | None,
        previous: CandidateRecord | None,
    ) -> None:
        if error is None and self.planner is not None and "subcircuits" not in details:
            # constraints read the cut plan even when subcircuits is not an objective
            details["cut_plan"] = self.planner.plan(arch).details()
        g = self.constraints.values(arch, _facts(details, error, objectives))
        feasible = all(v <= 0 for v in g) and all(math.isfinite(v) for v in objectives.values())
        details["constraints"] = dict(zip(self.constraints.names, g, strict=True)) | {"G": g}
        if error is not None:
            details["error"] = error
            self.failed += 1
        if previous is not None:
            details["previous_error"] = previous.details["error"]
            generation = previous.generation  # the candidate still belongs to the generation that first asked for it
        self.study.add_candidate(
            arch, self.settings_key, objectives, details, timings, generation, feasible, replace=previous is not None
        )
        self.evaluated += 1

    def _g(self, arch: Architecture, record: CandidateRecord) -> list[float]:
        details = record.details
        return self.constraints.values(arch, _facts(details, details.get("error"), record.objectives))

    def objective_vector(self, record: CandidateRecord) -> list[float]:
        vals = [float(record.objectives.get(n, math.nan)) for n in self._names]
        return [v if math.isfinite(v) else FAILED_VALUE for v in vals]


__all__ = ["CandidateEvaluator", "combined_settings_key"]
