"""What each device job cost: predicted when it was submitted, reported by the provider when it ended.

Why keep both: the ``runtime_s`` objective and the spending guard rest on the
cost model, and the only check of that model against the bill is the jobs a
study has already paid for.  Every ledger row of a device job therefore keeps
what it was priced on (its PUBs' workloads and the model's seconds, written by
:func:`qnas_hw.jobs.guard.price_job` into ``meta.cost``) and, once it ends,
what the provider reported (:func:`reported_cost`, written into
``result.reported``): IBM's usage seconds from the job's metrics, Braket's
billed duration and the SDK ``Tracker``'s dollars, or, for local simulators and
fake backends run locally, our own wall clock, marked as such.

From those rows :func:`job_costs` and :func:`compare_costs` give the report's
predicted-against-reported table and figure, and :func:`measured_jobs` the
rows ``qnas-hw calibrate --from-study`` refits on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qnas_hw.hardware.backends.base import JobTiming
from qnas_hw.hardware.backends.braket import BILLED_SECONDS, TRACKER_USD
from qnas_hw.hardware.cost import CostModelError, Workload, mape
from qnas_hw.jobs.ledger import JobLedger, JobRecord, LedgerState
from qnas_hw.text import plural

#: What a reported figure is, in words (the report's axes and the CLI's lines use these).
UNIT_TEXT = {
    "qpu": "QPU s (provider usage)",
    "billed": "billed s (provider)",
    "wall": "wall s (local run)",
    "usd": "USD",
}


def reported_cost(timing: JobTiming, *, simulator: bool) -> dict[str, Any]:
    """The provider's own figure for a finished job, with what it is (``unit``) and where it came from.

    ``qpu``: the usage seconds IBM reports in the job's metrics; ``billed``:
    the billed execution seconds Braket reported to the ``Tracker``; ``wall``:
    our submission-to-result clock, only for local runs (a simulator or a
    fake backend), where it is what the run really took.  A paid job with no
    reported seconds (usage still pending, a Braket QPU task) gets none: its
    wall clock includes the queue and is not what the provider bills.  ``usd``
    is the ``Tracker``'s cost where Braket gave one.
    """
    extra = timing.extra or {}
    if timing.quantum_seconds is not None:
        seconds, unit, source = float(timing.quantum_seconds), "qpu", str(extra.get("usage_source", "provider"))
    elif extra.get(BILLED_SECONDS) is not None:
        seconds, unit, source = float(extra[BILLED_SECONDS]), "billed", "braket Tracker billed_execution_duration"
    elif simulator and timing.wall_seconds is not None:
        seconds, unit, source = float(timing.wall_seconds), "wall", "local wall clock, submission to result"
    else:
        seconds, unit = None, None
        source = str(extra.get("usage_source") or "the provider reported no seconds for this job")
    usd = extra.get(TRACKER_USD)
    return {
        "seconds": seconds,
        "unit": unit,
        "source": source,
        "usd": None if usd is None else float(usd),
        "usd_source": None if usd is None else "braket Tracker",
    }


@dataclass(frozen=True)
class JobCost:
    """One finished job: what it was predicted to cost and what was reported, in the same unit."""

    key: str
    batch: str
    label: str
    kind: str
    backend: str
    provider_job_id: str | None
    finished_at: str
    workloads: tuple[Workload, ...]
    unit: str | None
    reported_s: float | None
    predicted_s: float | None
    reported_usd: float | None
    predicted_usd: float | None
    source: str

    def row(self, unit: str) -> dict[str, Any]:
        """The job as report.json lists it under a comparison in ``unit`` (seconds, or ``usd``)."""
        usd = unit == "usd"
        return {
            "key": self.key,
            "batch": self.batch,
            "label": self.label,
            "kind": self.kind,
            "provider_job_id": self.provider_job_id,
            "finished_at": self.finished_at,
            "predicted": self.predicted_usd if usd else self.predicted_s,
            "reported": self.reported_usd if usd else self.reported_s,
            "source": "braket Tracker" if usd else self.source,
            "executions": int(sum(w.shots_total for w in self.workloads)),
        }


def _reported(result: dict[str, Any]) -> dict[str, Any]:
    """``result.reported``; rows written before it existed: the usage IBM reported and the Tracker's dollars."""
    if isinstance(result.get("reported"), dict):
        return result["reported"]
    timing = result.get("timing") or {}
    extra = timing.get("extra") or {}
    q = timing.get("quantum_seconds")
    usd = extra.get(TRACKER_USD)
    return {
        "seconds": None if q is None else float(q),
        "unit": None if q is None else "qpu",
        "source": str(extra.get("usage_source", "provider")) if q is not None else "not recorded",
        "usd": None if usd is None else float(usd),
    }


def _predicted_s(meta: dict[str, Any], unit: str | None) -> float | None:
    """The prediction in the reported figure's unit: device seconds for provider figures, wall for local runs."""
    cost = meta.get("cost") or {}
    if unit == "wall":
        return cost.get("pred_wall_s")
    if unit in ("qpu", "billed"):
        if cost.get("pred_device_s") is not None:
            return float(cost["pred_device_s"])
        # a row priced before meta.cost: a paid QPU's guard always priced QPU seconds
        return None if meta.get("pred_seconds") is None else float(meta["pred_seconds"])
    return None


def _predicted_usd(meta: dict[str, Any]) -> float | None:
    cost = meta.get("cost") or {}
    if cost.get("pred_device_usd") is not None:
        return float(cost["pred_device_usd"])
    return None if not meta.get("pred_usd") else float(meta["pred_usd"])


def _workloads(meta: dict[str, Any]) -> tuple[Workload, ...]:
    try:
        return tuple(Workload.from_dict(w) for w in (meta.get("cost") or {}).get("workloads") or ())
    except (CostModelError, TypeError):
        return ()  # a damaged or foreign row: shown, never fitted


def job_cost(record: JobRecord) -> JobCost | None:
    """A finished ledger row as :class:`JobCost`; None for a job that has not ended with a result."""
    if record.state is not LedgerState.DONE or record.result is None:
        return None
    rep = _reported(record.result)
    unit = rep.get("unit")
    return JobCost(
        key=record.key,
        batch=record.batch,
        label=record.label,
        kind=str(record.meta.get("kind", "job")),
        backend=record.backend,
        provider_job_id=record.provider_job_id,
        finished_at=record.updated_at,
        workloads=_workloads(record.meta),
        unit=unit,
        reported_s=rep.get("seconds"),
        predicted_s=_predicted_s(record.meta, unit),
        reported_usd=rep.get("usd"),
        predicted_usd=_predicted_usd(record.meta),
        source=str(rep.get("source", "")),
    )


def job_costs(ledger: JobLedger, backend: str | None = None, batches: Iterable[str] | None = None) -> list[JobCost]:
    """The finished jobs of the ledger (of one backend, of some batches), oldest first."""
    wanted = None if batches is None else set(batches)
    out = []
    for record in ledger.jobs():
        if (backend is not None and record.backend != backend) or (wanted is not None and record.batch not in wanted):
            continue
        cost = job_cost(record)
        if cost is not None:
            out.append(cost)
    return out


@dataclass(frozen=True)
class CostComparison:
    """Predicted against reported, per job, for one backend in one unit; ``missing``: finished jobs left out."""

    backend: str
    unit: str
    jobs: tuple[JobCost, ...]
    missing: int = 0

    @property
    def predicted(self) -> np.ndarray:
        return np.array([j.predicted_usd if self.unit == "usd" else j.predicted_s for j in self.jobs], dtype=float)

    @property
    def reported(self) -> np.ndarray:
        return np.array([j.reported_usd if self.unit == "usd" else j.reported_s for j in self.jobs], dtype=float)

    @property
    def mape(self) -> float:
        """Mean absolute percentage error of the predictions against the reported figures."""
        return mape(self.reported, self.predicted) if self.jobs else math.nan

    def line(self) -> str:
        """``fake_kolkata: 24 jobs, predicted 31.20 against reported 28.90 wall s (local run); MAPE 12.3%``."""
        money = self.unit == "usd"
        fmt = (lambda v: f"${v:.2f}") if money else (lambda v: f"{v:.2f} s")
        what = "Braket Tracker spend" if money else UNIT_TEXT[self.unit]
        text = (
            f"{self.backend}: {plural(len(self.jobs), 'job')}, {what}: predicted {fmt(float(self.predicted.sum()))} "
            f"against reported {fmt(float(self.reported.sum()))}; per job MAPE {100 * self.mape:.1f}%"
        )
        if self.missing:
            text += f" ({plural(self.missing, 'finished job')} without both figures left out)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "unit": self.unit,
            "unit_text": UNIT_TEXT[self.unit],
            "jobs": len(self.jobs),
            "missing": self.missing,
            "mape": None if not self.jobs else self.mape,
            "predicted_total": float(self.predicted.sum()),
            "reported_total": float(self.reported.sum()),
            "rows": [j.row(self.unit) for j in self.jobs],
        }


def compare_costs(costs: Sequence[JobCost]) -> list[CostComparison]:
    """Per backend: predicted against reported seconds (each reported unit apart), and dollars where reported.

    A job counts in a comparison only when it has both figures in its unit;
    the others are counted as ``missing`` (a job whose usage was still
    pending, a row priced before predictions were kept).
    """
    out = []
    for backend in sorted({c.backend for c in costs}):
        mine = [c for c in costs if c.backend == backend]
        for unit in sorted({c.unit for c in mine if c.unit is not None}):
            both = tuple(c for c in mine if c.unit == unit and c.predicted_s is not None and c.reported_s)
            if both:
                out.append(CostComparison(backend, unit, both, sum(c.unit == unit for c in mine) - len(both)))
        dollars = tuple(c for c in mine if c.reported_usd is not None and c.predicted_usd is not None)
        if dollars:
            reported = sum(c.reported_usd is not None for c in mine)
            out.append(CostComparison(backend, "usd", dollars, reported - len(dollars)))
    return out


def measured_jobs(costs: Sequence[JobCost], units: Sequence[str], study: str = "") -> tuple[list[Any], dict[str, int]]:
    """The jobs a refit can use (workloads kept and a reported figure in one of ``units``), and why others cannot.

    Returns :class:`~qnas_hw.hardware.calibrate.MeasuredJob` s and a count per
    reason a finished job was left out, for the refit's error message.
    """
    from qnas_hw.hardware.calibrate import MeasuredJob

    jobs, skipped = [], {}
    for c in costs:
        if not c.workloads:
            reason = "recorded before the ledger kept each job's workload"
        elif c.unit not in units or not c.reported_s:
            reason = f"reported {'no seconds' if c.unit is None else UNIT_TEXT[c.unit]}"
        else:
            jobs.append(
                MeasuredJob(
                    key=c.key,
                    backend=c.backend,
                    workloads=c.workloads,
                    seconds=float(c.reported_s),
                    unit=str(c.unit),
                    finished_at=c.finished_at,
                    study=study,
                    batch=c.batch,
                    provider_job_id=c.provider_job_id,
                    predicted_s=c.predicted_s,
                )
            )
            continue
        skipped[reason] = skipped.get(reason, 0) + 1
    return jobs, skipped
