"""The one interface the search loop sees for every objective.

NSGA-II minimises a vector of floats; each entry comes from an
:class:`Objective`.  Validation error, the device runtime cost and the
subcircuit count all implement it, so swapping a proxy for a calibrated
hardware objective never touches the search loop.  ``details`` carry the
figures behind a value (gate counts, sampling overhead, dollars) so the study
can store them and constraints can read them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qnas_hw.model.space import Architecture


@dataclass(frozen=True)
class ObjectiveResult:
    """A value, the figures behind it, and run-dependent timings (stored apart: they differ between runs)."""

    value: float
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)


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
