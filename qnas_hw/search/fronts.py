"""The one front a user sees, computed the same way for the console, the study, ``hw-eval`` and the reports.

The definition is :func:`~qnas_hw.search.pareto.resolved_front`: the Pareto
front *within resolution* (values closer than an objective's resolution tie,
pymoo epsilon-dominance; ties go to fewer qubits, then fewer subcircuits, then
lower cost).  Before this module the search's per-generation line and the
study's generation records counted the exact front ("front 5") while the
report showed the resolved one ("3 of 59 candidates"), and ``hw-eval --which
front`` measured five candidates of a three-row table.  Now the search loop,
``hw-eval`` and :mod:`qnas_hw.reports` all call :func:`study_front` on the same
records, so they cannot disagree about the front's size or members.

The exact Pareto front (no resolution) is kept beside it
(:attr:`StudyFront.exact`): it is what the hypervolume measures, and what
``report.json`` lists as ``exact_front``.

Records: one per architecture, its latest evaluation with the generation that
first evaluated it (:func:`latest_per_arch`).  "The front after generation g"
is the front of the records first evaluated in generation g or earlier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from qnas_hw.search.objectives import resolutions_for
from qnas_hw.search.pareto import Resolution, pareto_front, resolved_front
from qnas_hw.search.study import CandidateRecord

logger = logging.getLogger(__name__)


def latest_per_arch(records: Sequence[Any]) -> list[CandidateRecord]:
    """One record per architecture (the last stored one), in first-seen order and with its first-seen generation.

    A study may re-evaluate an architecture (e.g. after a resume); every front
    counts its latest figures once rather than twice.  ``records`` are study
    :class:`~qnas_hw.search.study.CandidateRecord` objects or anything with the same attributes.
    """
    latest: dict[str, CandidateRecord] = {}
    for r in records:
        c = CandidateRecord(
            arch=r.arch,
            objectives={k: float(v) for k, v in dict(r.objectives).items()},
            details=dict(r.details or {}),
            timings=dict(r.timings or {}),
            generation=int(r.generation),
            feasible=bool(r.feasible),
            settings_key=str(getattr(r, "settings_key", "")),
        )
        key = c.arch.canonical()
        if key in latest:
            c = replace(c, generation=latest[key].generation)
            del latest[key]  # re-insert to keep the record, but first-seen generation
        latest[key] = c
    return list(latest.values())


def preference(cands: Sequence[CandidateRecord], names: Sequence[str]) -> Callable[[int], tuple[Any, ...]]:
    """Tie-break key over ``cands`` indices: fewer qubits, then fewer subcircuits, then lower cost, then the rest.

    Within resolution two candidates are the same point on the front; the
    simpler circuit is the one a user would rather run, so it stays.
    """

    def key(i: int) -> tuple[Any, ...]:
        c = cands[i]
        subcircuits = c.objectives.get("subcircuits", 0.0)
        cost = c.objectives.get("cost_usd", c.objectives.get("runtime_s", 0.0))
        arch = c.arch
        return (
            arch.n_qubits,
            subcircuits,
            cost,
            *c.values(names),
            arch.n_qubits,
            arch.n_layers,
            arch.n_weights,
            arch.canonical(),
        )

    return key


@dataclass(frozen=True)
class StudyFront:
    """A study's records and its two fronts, as indices into :attr:`candidates`."""

    #: one record per architecture (:func:`latest_per_arch`)
    candidates: list[CandidateRecord]
    #: the front within resolution, the one every user-facing output shows; best first on the objectives
    shown: list[int]
    #: the exact Pareto front of the usable records (ascending); ``shown`` is a subset of it
    exact: list[int]
    #: each objective's resolution: values closer than this tie on ``shown``
    resolutions: dict[str, Resolution]

    def architectures(self) -> list[str]:
        """The shown front as canonical architecture strings, in :attr:`shown` order."""
        return [self.candidates[i].arch.canonical() for i in self.shown]

    def exact_architectures(self) -> list[str]:
        return [self.candidates[i].arch.canonical() for i in self.exact]

    def describe(self) -> str:
        """``3 (exact 5)``: see :func:`front_size_text`."""
        return front_size_text(len(self.shown), len(self.exact))


def front_size_text(shown: int, exact: int) -> str:
    """``3 (exact 5)``: the size users compare with the report table, and the exact front's beside it when it differs.

    The console line per generation and summary.md's per-generation table both
    print this, so a reader sees the same figure in both places.
    """
    return str(shown) if shown == exact else f"{shown} (exact {exact})"


def study_front(records: Sequence[Any], names: Sequence[str], upto: int | None = None) -> StudyFront:
    """The front within resolution and the exact front of ``records`` (see the module docstring).

    ``upto``: only records first evaluated in that generation (0-based
    index, as stored) or earlier, i.e. the fronts as they stood after it.
    Infeasible records and records with a non-finite objective are on neither front.
    """
    names = list(names)
    cands = latest_per_arch(records)
    if upto is not None:
        cands = [c for c in cands if c.generation <= upto]
    usable = [c for c in cands if c.usable]
    resolutions = resolutions_for(names, usable)
    rows = [i for i, c in enumerate(cands) if c.usable]
    if not rows or not names:
        return StudyFront(cands, [], [], resolutions)
    F = np.array([cands[i].values(names) for i in rows], dtype=float).reshape(len(rows), len(names))
    prefer = preference(cands, names)
    exact = sorted(rows[int(k)] for k in pareto_front(F))
    kept = resolved_front(F, [resolutions[n] for n in names], lambda k: prefer(rows[k]))
    shown = sorted((rows[k] for k in kept), key=lambda i: (*cands[i].values(names), *prefer(i)))
    logger.debug("front within resolution: %d of %d usable records (exact front %d)", len(shown), len(rows), len(exact))
    return StudyFront(cands, shown, exact, resolutions)
