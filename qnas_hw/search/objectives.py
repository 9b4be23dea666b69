"""The one interface the search loop sees for every objective.

NSGA-II minimises a vector of floats; each entry comes from an
:class:`Objective`.  Validation error, the device runtime cost, the dollar
cost on priced backends and the subcircuit count all implement it, so swapping a proxy for a calibrated
hardware objective never touches the search loop.  ``details`` carry the
figures behind a value (gate counts, sampling overhead, dollars) so the study
can store them and constraints can read them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qnas_hw.hardware.backends.base import Backend
from qnas_hw.hardware.cost import CostModel, CostModelError, Workload, dollars_for, init_duration_s, json_number
from qnas_hw.hardware.cutting import CutPlanner, json_count
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.model.space import Architecture
from qnas_hw.search.pareto import Resolution, accuracy_resolution


@dataclass(frozen=True)
class ObjectiveResult:
    """A value, the figures behind it, and run-dependent timings (stored apart: they differ between runs)."""

    value: float
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    #: what a worker process hands back for the driver to write (``weights``: the fine-tuned state dict); never
    #: stored in the study
    artifacts: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class Objective(ABC):
    """A minimised quantity of an architecture."""

    #: column name in the study and reports, e.g. ``val_error``, ``runtime_s``, ``subcircuits``
    name: str

    @abstractmethod
    def settings_key(self) -> str:
        """Everything that changes the value besides the architecture (backend, budget, seed...).

        Cached evaluations are keyed by ``(architecture.key(), name, settings_key())``
        so changing a setting never reuses a stale value.
        """

    @abstractmethod
    def evaluate(self, arch: Architecture) -> ObjectiveResult: ...

    def for_worker(self) -> Objective | None:
        """The copy a worker process evaluates (``compute.engine = "ray"``), or None when this objective must be
        evaluated in the search's own process.  The default: the objective itself, pickled as it is (a pure
        function of the architecture and its settings)."""
        return self

    def keep_artifacts(self, arch: Architecture, result: ObjectiveResult) -> None:
        """Write, in the search's process, what the worker copy returned in ``result.artifacts`` (default: nothing)."""
        return None

    def evaluate_batch(self, archs: Sequence[Architecture]) -> list[ObjectiveResult | Exception]:
        """Every architecture of a generation at once; per-candidate failures come back as exceptions.

        An exception *raised* here is not a candidate's failure (a spending
        limit, a provider that stopped answering): it stops the search, and
        a resume continues from what the study and the job ledger hold.
        Objectives that gain from batching (device jobs in flight together)
        override this; the default evaluates one by one.
        """
        out: list[ObjectiveResult | Exception] = []
        for arch in archs:
            try:
                out.append(self.evaluate(arch))
            except Exception as exc:  # the candidate's own failure, recorded with it
                out.append(exc)
        return out


class WorkloadObjective(Objective):
    """What one evaluation of a candidate executes on the backend, shared by ``runtime_s`` and ``cost_usd``.

    One evaluation = ``n_circuits`` input rows x ``shots`` in one job.  A
    candidate wider than the qubit budget runs as its cut plan: every row is
    ``n_subexperiments`` circuit executions, each with the shots its QPD term
    is allotted (:meth:`~qnas_hw.hardware.cutting.CutPlan.shots_per_row`, the same
    allotment the noisy and device runs use), so jobs, circuits, tasks and shots
    are all counted and the figures grow with the plan's overhead.  The uncut
    circuit's schedule bounds each subexperiment's duration.  An infeasible
    plan is costed as what it would take (often astronomically much, or inf),
    never as the uncut circuit.  Seconds and dollars are priced on this one
    workload, so the two objectives can never disagree about what runs.
    """

    def __init__(
        self,
        backend: Backend,
        transpiler: Transpiler,
        cut_planner: Any | None = None,
        shots: int = 1024,
        n_circuits: int = 32,
        cut_shots: str = "scaled",
    ) -> None:
        if shots <= 0 or n_circuits <= 0:
            raise ValueError(f"shots and n_circuits must be positive, got {shots} and {n_circuits}")
        self.backend = backend
        self.transpiler = transpiler
        self.cut_planner = cut_planner
        self.shots = shots
        self.n_circuits = n_circuits
        self.cut_shots = cut_shots
        self._init_s: float | None = None

    def workload_key(self) -> str:
        """Everything besides the architecture that changes the workload (part of the settings keys)."""
        cut = "nocut" if self.cut_planner is None else f"cut{getattr(self.cut_planner, 'qubit_budget', '?')}"
        return f"{cut}|shots{self.shots}|n{self.n_circuits}|cutshots-{self.cut_shots}"

    def workload(self, arch: Architecture) -> tuple[Workload, dict[str, Any]]:
        """The candidate's jobs, circuits, tasks and shots, and the figures behind them (stored as details)."""
        if self._init_s is None:  # read lazily: a real device's target is fetched from its provider
            self._init_s = init_duration_s(self.backend)
        rec = self.transpiler.transpile(arch)
        circuits, total_shots, tasks, width = self.n_circuits, self.n_circuits * self.shots, 1, rec.width
        cut: dict[str, Any] = {}
        if self.cut_planner is not None:
            plan = self.cut_planner.plan(arch)
            if plan.is_cut:
                per_row = plan.shots_per_row(self.shots, self.cut_shots)
                circuits = self.n_circuits * int(min(plan.n_subexperiments, 2**62))
                total_shots = per_row * self.n_circuits if math.isfinite(per_row) else math.inf  # type: ignore[assignment]
                tasks = int(min(plan.n_subexperiments, 2**62))
                width = min(rec.width, max(plan.subcircuit_widths, default=rec.width))
            cut = {
                "n_subexperiments": json_count(int(plan.n_subexperiments)),
                "sampling_overhead": float(plan.sampling_overhead),
                "n_cuts": int(plan.n_cuts),
                "cut_feasible": bool(getattr(plan, "feasible", True)),
            }
        work = Workload(
            jobs=1,
            circuits=circuits,
            shots=self.shots,
            n_gates=rec.n_gates,
            width=width,
            duration_s=rec.duration_s,
            rep_delay_s=self.backend.rep_delay_s,
            total_shots=total_shots,  # type: ignore[arg-type]
            tasks=tasks,
            init_s=self._init_s,
        )
        details = {**rec.summary(), **cut}
        return work, details


class RuntimeCostObjective(WorkloadObjective):
    """``runtime_s``: predicted seconds to run a candidate's workload on the backend (QPU seconds for devices).

    The workload is :meth:`WorkloadObjective.workload`; the seconds come from
    the backend's cost model (IBM's documented usage formula or a fit of it,
    a Braket snapshot's schedule, or a simulator's wall-clock fit).
    """

    name = "runtime_s"

    def __init__(
        self,
        backend: Backend,
        transpiler: Transpiler,
        cost_model: CostModel,
        cut_planner: Any | None = None,
        shots: int = 1024,
        n_circuits: int = 32,
        cut_shots: str = "scaled",
    ) -> None:
        super().__init__(backend, transpiler, cut_planner, shots, n_circuits, cut_shots)
        if cost_model.backend != backend.name:
            raise CostModelError(f"cost model is for {cost_model.backend!r}, backend is {backend.name!r}")
        self.cost_model = cost_model

    def settings_key(self) -> str:
        return f"{self.transpiler.settings_key()}|{self.cost_model.key()}|{self.workload_key()}"

    def evaluate(self, arch: Architecture) -> ObjectiveResult:
        work, details = self.workload(arch)
        with np.errstate(over="ignore", invalid="ignore"):
            seconds = self.cost_model.predict(work)
            dollars = dollars_for(self.backend, work.tasks or 1, work.shots_total)
        details.update(
            shots=json_number(work.shots_total),
            circuits=work.circuits,
            timing_source=self.cost_model.timing_source,
            dollars=None if dollars is None else json_number(dollars),
        )
        if self.cost_model.timing_source == "device":
            details["qpu_seconds"] = json_number(seconds)
        if self.cost_model.wall is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                details["local_wall_seconds"] = json_number(self.cost_model.predict_wall(work))
        return ObjectiveResult(value=float(seconds) if math.isfinite(seconds) else math.inf, details=details)


class CostUsdObjective(WorkloadObjective):
    """``cost_usd``: the provider's bill in dollars for a candidate's workload, on backends with published prices.

    Braket charges per task and per shot; the workload is the one
    ``runtime_s`` prices (cut subexperiments with their shot allotment
    included), so a search can trade accuracy against money directly rather
    than against QPU seconds that Braket does not bill.  Refused for backends
    without prices (IBM bills QPU time: use ``runtime_s`` there).
    """

    name = "cost_usd"

    def __init__(
        self,
        backend: Backend,
        transpiler: Transpiler,
        cut_planner: Any | None = None,
        shots: int = 1024,
        n_circuits: int = 32,
        cut_shots: str = "scaled",
    ) -> None:
        super().__init__(backend, transpiler, cut_planner, shots, n_circuits, cut_shots)
        price = backend.pricing
        if price is None:
            raise ValueError(
                f"objective 'cost_usd' needs a backend with per-task/per-shot prices, and backend {backend.name!r} "
                "has none; use 'runtime_s' to price it in QPU seconds, or a priced Braket backend (e.g. "
                "braket_iqm_garnet)"
            )
        self.price = price
        # the snapshot's retrieval date is the date of its prices (they live in the same file)
        self.price_retrieved = backend.describe().get("retrieved")

    def settings_key(self) -> str:
        price = f"usd{self.price.per_task_usd!r}/task+{self.price.per_shot_usd!r}/shot"
        return f"{self.transpiler.settings_key()}|{price}|{self.workload_key()}"

    def evaluate(self, arch: Architecture) -> ObjectiveResult:
        work, details = self.workload(arch)
        tasks = work.tasks or 1
        with np.errstate(over="ignore", invalid="ignore"):
            dollars = float(dollars_for(self.backend, tasks, work.shots_total) or 0.0)  # priced: never None here
        details.update(
            shots=json_number(work.shots_total),
            circuits=work.circuits,
            tasks=tasks,
            dollars=json_number(dollars),
            per_task_usd=self.price.per_task_usd,
            per_shot_usd=self.price.per_shot_usd,
            price_source=self.price.source,
            price_retrieved=self.price_retrieved,
        )
        return ObjectiveResult(value=float(dollars) if math.isfinite(dollars) else math.inf, details=details)


class SubcircuitObjective(Objective):
    """``subcircuits``: how many device-sized pieces a candidate is cut into (1 = runs uncut).

    ``details["feasible"]`` is False when no plan within ``max_gamma`` exists;
    the search reads it as a constraint violation.
    """

    name = "subcircuits"

    def __init__(self, planner: CutPlanner) -> None:
        self.planner = planner

    def settings_key(self) -> str:
        return self.planner.settings_key()

    def evaluate(self, arch: Architecture) -> ObjectiveResult:
        plan = self.planner.plan(arch)
        return ObjectiveResult(value=float(plan.n_subcircuits), details=plan.details())


#: Resolutions of the hardware objectives.  Runtimes and dollars are predictions from a cost model whose own
#: error is several percent (calibration MAPE, IBM's "about 2 s" per sub-job), so a 2% difference is not a
#: difference a user can rely on; a subcircuit count is an integer.
RELATIVE_COST_RESOLUTION = Resolution(relative=0.02)
RESOLUTIONS: dict[str, Resolution] = {
    "runtime_s": RELATIVE_COST_RESOLUTION,
    "cost_usd": RELATIVE_COST_RESOLUTION,
    "subcircuits": Resolution(absolute=1.0),
}


def resolutions_for(names: Sequence[str], records: Sequence[Any]) -> dict[str, Resolution]:
    """Each objective's resolution for a set of evaluated records (study :class:`CandidateRecord` objects).

    ``val_error`` is a proportion measured on ``n`` validation samples: its
    standard error ``sqrt(e(1-e)/n)`` at the best error found, and never finer
    than one sample (``1/n``).  ``n`` is the median of the samples the
    records were scored on (``details['val_error']['n_scored']``); records
    from before that field existed fall back to one part in a thousand.
    Objectives not listed here (none today) count every difference.
    """
    out: dict[str, Resolution] = {}
    for name in names:
        if name == "val_error":
            out[name] = _val_error_resolution(records)
        else:
            out[name] = RESOLUTIONS.get(name, Resolution())
    return out


def _val_error_resolution(records: Sequence[Any]) -> Resolution:
    scored = [
        int(r.details["val_error"]["n_scored"])
        for r in records
        if isinstance(r.details.get("val_error"), dict) and r.details["val_error"].get("n_scored")
    ]
    errors = [
        float(r.objectives["val_error"]) for r in records if math.isfinite(r.objectives.get("val_error", math.nan))
    ]
    n = int(np.median(scored)) if scored else 1000
    return accuracy_resolution(n, min(errors, default=0.5))
