"""The spending guard: predict a whole evaluation's QPU seconds, dollars and shots before anything is submitted.

Why before: a hardware evaluation is many jobs; once the first is in a paid
queue the money is gone.  :func:`plan_spend` prices every job with the
calibrated cost model (:func:`qnas_hw.hardware.cost.estimate_job_cost`), skipping jobs
the ledger already holds results for (a resume pays only for what is left),
and :func:`check_budget` refuses a plan over any limit with a message that
names the limit, the predicted figure and how to proceed.  ``--dry-run``
stops right after the plan.

Dollars: Braket prices come from the device snapshot (per task + per shot);
IBM has no per-shot price, so a real IBM device is priced at the published
pay-as-you-go rate per QPU second (:data:`IBM_USD_PER_QPU_SECOND`).  Local
simulators and snapshots bill nothing (``billed_usd`` = 0); what the same
workload would cost on the real device is shown as ``device_usd``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from qnas_hw.hardware.backends.base import Backend
from qnas_hw.hardware.cost import CostModel, dollars_for, estimate_job_cost, pub_workloads
from qnas_hw.jobs.executor import JobSpec
from qnas_hw.text import plural

log = logging.getLogger(__name__)

#: IBM Quantum Platform pay-as-you-go list price: USD 96 per QPU minute
#: (https://www.ibm.com/quantum/pricing, checked 2025); premium/flex plans differ.
IBM_USD_PER_QPU_SECOND = 96.0 / 60.0


class BudgetExceeded(RuntimeError):
    """The planned evaluation would exceed a spending limit; nothing was submitted."""


@dataclass(frozen=True)
class Budget:
    """Limits for one evaluation; ``None`` = no limit on that figure."""

    max_cost_usd: float | None = None
    max_qpu_seconds: float | None = None
    max_shots: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_cost_usd", "max_qpu_seconds", "max_shots"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 0):
                raise ValueError(f"Budget.{name} must be a non-negative number or None, got {value!r}")


@dataclass(frozen=True)
class PlanLine:
    """One group of jobs (a candidate): what it would run and cost."""

    label: str
    jobs: int
    jobs_to_run: int
    rows: int
    shots: int
    seconds: float
    device_usd: float | None
    billed_usd: float


@dataclass(frozen=True)
class SpendPlan:
    """The whole evaluation, priced; ``to_dict`` for JSON, ``lines_text`` for the CLI."""

    backend: str
    paid: bool
    timing_source: str  # "device": QPU seconds; "wall": local simulator seconds
    cost_model_source: str
    lines: list[PlanLine]
    budget: Budget = field(default_factory=Budget)

    @property
    def jobs(self) -> int:
        return sum(line.jobs for line in self.lines)

    @property
    def jobs_to_run(self) -> int:
        return sum(line.jobs_to_run for line in self.lines)

    @property
    def shots(self) -> int:
        return sum(line.shots for line in self.lines)

    @property
    def seconds(self) -> float:
        return sum(line.seconds for line in self.lines)

    @property
    def billed_usd(self) -> float:
        return sum(line.billed_usd for line in self.lines)

    @property
    def device_usd(self) -> float | None:
        values = [line.device_usd for line in self.lines]
        return None if any(v is None for v in values) else float(sum(v for v in values if v is not None))

    @property
    def qpu_seconds(self) -> float | None:
        return self.seconds if self.timing_source == "device" else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "paid": self.paid,
            "timing_source": self.timing_source,
            "cost_model_source": self.cost_model_source,
            "jobs": self.jobs,
            "jobs_to_run": self.jobs_to_run,
            "shots": self.shots,
            "seconds": self.seconds,
            "qpu_seconds": self.qpu_seconds,
            "billed_usd": self.billed_usd,
            "device_usd": self.device_usd,
            "budget": asdict(self.budget),
            "lines": [asdict(line) for line in self.lines],
        }

    def lines_text(self) -> list[str]:
        """Human-readable plan, ready for the CLI to print."""
        unit = "QPU s" if self.timing_source == "device" else "local s"
        out = [
            f"backend {self.backend} ({'PAID' if self.paid else 'free, local'}); time from {self.cost_model_source}",
            f"{'candidate':<44} {'jobs':>9} {'rows':>6} {'shots':>10} {unit:>10} {'device $':>10}",
        ]
        for ln in self.lines:
            dev = "n/a" if ln.device_usd is None else f"{ln.device_usd:.2f}"
            jobs = f"{ln.jobs_to_run}/{ln.jobs}"
            out.append(f"{ln.label[:44]:<44} {jobs:>9} {ln.rows:>6} {ln.shots:>10} {ln.seconds:>10.2f} {dev:>10}")
        dev_total = "n/a" if self.device_usd is None else f"${self.device_usd:.2f}"
        out.append(
            f"TOTAL to run: {self.jobs_to_run} of {plural(self.jobs, 'job')}, {plural(self.shots, 'shot')}, "
            f"{self.seconds:.2f} {unit}, "
            f"billed ${self.billed_usd:.2f} (on the real device: {dev_total})"
        )
        b = self.budget
        limits = [
            f"max cost ${b.max_cost_usd:g}" if b.max_cost_usd is not None else None,
            f"max QPU s {b.max_qpu_seconds:g}" if b.max_qpu_seconds is not None else None,
            f"max shots {b.max_shots}" if b.max_shots is not None else None,
        ]
        out.append("limits: " + (", ".join(x for x in limits if x) or "none set"))
        return out


def _device_usd(backend: Backend, tasks: int, shots: int, seconds: float, timing_source: str) -> float | None:
    priced = dollars_for(backend, tasks, shots)
    if priced is not None:
        return priced
    if backend.provider == "ibm" and timing_source == "device":
        return seconds * IBM_USD_PER_QPU_SECOND
    return None


def price_job(backend: Backend, spec: JobSpec, cost_model: CostModel | None = None) -> dict[str, Any]:
    """One job's predicted seconds, billed dollars and shots (stored in its ledger meta: what it spends).

    ``cost`` keeps what the prediction was made from: each PUB's workload
    (circuits, shots, scheduled duration, rep delay, reset) and the model's
    seconds in both currencies it has (device QPU seconds, local wall
    seconds), so the job's reported usage can later be set against it and
    refitted on (``qnas-hw calibrate --from-study``) without re-transpiling.
    """
    model = cost_model or CostModel.for_backend(backend)
    works = pub_workloads(backend, list(spec.pubs), spec.shots, n_jobs=1)  # what estimate_job_cost prices
    seconds = float(sum(model.predict(w) for w in works))
    shots = sum(w.shots_total for w in works)
    device_usd = _device_usd(backend, len(spec.pubs), shots, seconds, model.timing_source)
    billed = (device_usd or 0.0) if not backend.is_simulator else 0.0
    cost = {
        "workloads": [w.to_dict() for w in works],
        "timing_source": model.timing_source,
        "model": model.key(),
        "fitted_file": model.path.name if model.path else None,
        "pred_device_s": float(sum(map(model.predict_device, works))) if model.device is not None else None,
        "pred_wall_s": float(sum(map(model.predict_wall, works))) if model.wall is not None else None,
        "pred_device_usd": device_usd,
    }
    return {"pred_seconds": seconds, "pred_usd": float(billed), "pred_shots": float(shots), "cost": cost}


def plan_spend(
    backend: Backend,
    groups: Mapping[str, Sequence[JobSpec]],
    *,
    done_keys: Collection[str] = (),
    budget: Budget | None = None,
    cost_model: CostModel | None = None,
) -> SpendPlan:
    """Price every job of every group; jobs whose key is in ``done_keys`` (ledger results) cost nothing.

    Shots are counted as rows x shots (never under-counted); seconds come from
    the backend's calibrated model (device QPU seconds, or local wall seconds
    for simulators without a device description).
    """
    model = cost_model or CostModel.for_backend(backend)
    paid = not backend.is_simulator
    source = f"{model.path.name} ({model.timing_source} model)" if model.path else "documented prior (not fitted)"
    lines: list[PlanLine] = []
    for label, specs in groups.items():
        seconds, shots, rows, tasks, to_run = 0.0, 0, 0, 0, 0
        for spec in specs:
            rows += spec.n_rows
            if spec.key(backend.name) in done_keys:
                continue
            est = estimate_job_cost(backend, list(spec.pubs), spec.shots, n_jobs=1, cost_model=model)
            seconds += est.seconds
            shots += est.shots
            tasks += len(spec.pubs)
            to_run += 1
        device_usd = _device_usd(backend, tasks, shots, seconds, model.timing_source)
        billed = (device_usd or 0.0) if paid else 0.0
        if paid and device_usd is None:
            log.warning("no price known for paid backend %s; billed dollars are unknown", backend.name)
        lines.append(PlanLine(label, len(specs), to_run, rows, shots, seconds, device_usd, billed))
    return SpendPlan(backend.name, paid, model.timing_source, source, lines, budget or Budget())


def check_budget(plan: SpendPlan, budget: Budget | None = None) -> None:
    """Raise :class:`BudgetExceeded` naming every limit the plan breaks; a paid plan with no price and a
    dollar limit is refused too (it cannot be shown to respect the limit)."""
    b = budget or plan.budget
    problems: list[str] = []
    if b.max_shots is not None and plan.shots > b.max_shots:
        problems.append(f"{plan.shots} shots > --max-shots {b.max_shots} (lower --shots or evaluate fewer candidates)")
    if b.max_qpu_seconds is not None and plan.qpu_seconds is not None and plan.qpu_seconds > b.max_qpu_seconds:
        problems.append(f"{plan.qpu_seconds:.1f} predicted QPU seconds > --max-qpu-seconds {b.max_qpu_seconds:g}")
    if b.max_cost_usd is not None and plan.paid:
        if plan.device_usd is None:
            problems.append(
                f"no price is known for {plan.backend}, so --max-cost ${b.max_cost_usd:g} cannot be guaranteed"
            )
        elif plan.billed_usd > b.max_cost_usd:
            problems.append(f"predicted ${plan.billed_usd:.2f} > --max-cost ${b.max_cost_usd:g}")
    if problems:
        raise BudgetExceeded(
            f"refusing to run on {plan.backend}: " + "; ".join(problems) + ". Nothing was submitted; "
            "use --dry-run to see the plan, then raise the limit or shrink the evaluation."
        )
