"""Hardware jobs: a persistent ledger, an async retrying executor, a spending guard, fault injection.

Data flow: the search's device scorer and ``hw_eval`` build :class:`JobSpec` s
(one transpiled circuit + parameter array per PUB), :mod:`~qnas_hw.jobs.guard`
prices them against the budget, and :class:`AsyncExecutor` runs them on a
:class:`~qnas_hw.hardware.backends.Backend`, recording every state change in
the :class:`JobLedger` first (so no job is ever paid twice).
``detached`` emulates a provider that outlives the process; ``faults``
injects provider faults for tests and benchmarks.

Imports run downward only: ``jobs`` imports ``hardware`` and the storage
helpers; ``search`` and ``cli`` import it (checked by ``tests/test_layering.py``).
"""

from qnas_hw.jobs.executor import (
    AsyncExecutor,
    FaultKind,
    JobExecutionError,
    JobOutcome,
    JobProgress,
    JobsInterrupted,
    JobSpec,
    JobStillRunning,
    PermanentJobError,
    RetryPolicy,
    StopRequest,
    UnsafeResubmission,
    classify_error,
)
from qnas_hw.jobs.guard import Budget, BudgetExceeded, SpendPlan, check_budget, plan_spend
from qnas_hw.jobs.ledger import JobLedger, JobRecord, LedgerError, LedgerState, idempotency_key

__all__ = [
    "AsyncExecutor",
    "Budget",
    "BudgetExceeded",
    "FaultKind",
    "JobExecutionError",
    "JobLedger",
    "JobOutcome",
    "JobProgress",
    "JobRecord",
    "JobSpec",
    "JobStillRunning",
    "JobsInterrupted",
    "LedgerError",
    "LedgerState",
    "PermanentJobError",
    "RetryPolicy",
    "SpendPlan",
    "StopRequest",
    "UnsafeResubmission",
    "check_budget",
    "classify_error",
    "idempotency_key",
    "plan_spend",
]
