"""The search problem as pymoo sees it: variables, operators, duplicate elimination and constraints.

Nothing here evaluates a candidate: :mod:`qnas_hw.search.nsga` asks pymoo for
architectures, evaluates them through the study
(:class:`~qnas_hw.search.evaluator.CandidateEvaluator`) and tells pymoo the values.

Encoding: pymoo mixed variables.  Qubits and layers are ordered
(``Integer``: SBX crossover and polynomial mutation with rounding); embedding,
rotation and entangler are categories (``Choice``: uniform crossover and random
resetting), because "angle-z is between angle-y and amplitude" means nothing
and integer operators on such genes bias the search toward neighbouring labels.
Parents are chosen by NSGA-II's binary tournament (rank, then crowding).
Duplicates are eliminated against the whole study archive, not only the
population, so no offspring spends a generation slot on an architecture that
was already evaluated (:class:`ArchiveDuplicateElimination`).

Constraints are pymoo inequality constraints (``G <= 0`` feasible):
``evaluation`` (a failed evaluation is infeasible, never silently dropped),
``cut_plan`` (no cutting plan within the planner's gamma limit),
``max_qubits`` and ``max_sampling_overhead`` (from the config, compared on a
log scale so the violation is in "number of extra cuts" units).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2, binary_tournament
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.mixed import MixedVariableMating, MixedVariableSampling
from pymoo.core.problem import Problem
from pymoo.core.variable import Choice, Integer
from pymoo.operators.selection.tournament import TournamentSelection

from qnas_hw.model.space import GENES, Architecture, SearchSpace

#: What pymoo sees for a non-finite objective (the study keeps the real NaN/inf); the
#: ``evaluation`` constraint already makes such a candidate infeasible.
FAILED_VALUE = 1e12


class SearchError(RuntimeError):
    """A search that cannot start or continue, with the fix in the message."""


# ---------------------------------------------------------------- variables and operators
class ArchitectureProblem(Problem):
    """Variables, sizes and nothing else: evaluation happens in :func:`~qnas_hw.search.nsga.run_generation`
    (ask/tell), never in pymoo.

    Module-level and free of references to models or data so the pickled
    algorithm that embeds it stays small and loads in any later process.
    """

    def __init__(self, space: SearchSpace, n_obj: int, n_constr: int) -> None:
        variables: dict[str, Any] = {
            "embedding": Choice(options=list(space.embeddings)),
            "n_qubits": Integer(bounds=space.qubits),
            "n_layers": Integer(bounds=space.layers),
            "rotation": Choice(options=list(space.rotations)),
            "entangler": Choice(options=list(space.entanglers)),
        }
        super().__init__(vars=variables, n_obj=n_obj, n_ieq_constr=n_constr)

    def _evaluate(self, x: Any, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        raise SearchError("ArchitectureProblem is evaluated by the search loop (ask/tell), not by pymoo")


def decode(x: Any, space: SearchSpace) -> Architecture:
    """An individual's architecture: a mixed-variable dict, or the integer genome of studies made before them."""
    if isinstance(x, dict):
        arch = Architecture(
            embedding=str(x["embedding"]),
            n_qubits=int(x["n_qubits"]),
            n_layers=int(x["n_layers"]),
            rotation=str(x["rotation"]),
            entangler=str(x["entangler"]),
        )
        space.check(arch)
        return arch
    return space.decode([int(v) for v in x])


def _individual_key(ind: Any) -> str:
    x = ind.X
    if isinstance(x, dict):
        return "|".join(str(x[g]) for g in GENES)
    return "|".join(str(int(v)) for v in x)


class ArchiveDuplicateElimination(DuplicateElimination):
    """Duplicates within the offspring, against the population, and against every architecture already evaluated.

    pymoo's own eliminators compare with the current population only; on a
    space of a few thousand architectures that let about a third of the
    offspring repeat earlier generations (measured: 38 of 128), each one a
    wasted slot.  :attr:`archive` holds the individuals' gene keys and is
    pickled with the algorithm, so a resumed search asks for exactly the
    offspring an uninterrupted one would.
    """

    def __init__(self) -> None:
        super().__init__()
        self.archive: set[str] = set()

    def _do(self, pop: Any, other: Any, is_duplicate: np.ndarray) -> np.ndarray:
        seen = set(self.archive)
        if other is not None:
            seen.update(_individual_key(o) for o in other)
        for i, ind in enumerate(pop):
            k = _individual_key(ind)
            if k in seen:
                is_duplicate[i] = True
            else:
                seen.add(k)
        return is_duplicate


def archive_key(arch: Architecture) -> str:
    """The gene key :class:`ArchiveDuplicateElimination` stores for an evaluated architecture."""
    return "|".join(str(getattr(arch, g)) for g in GENES)


def make_algorithm(pop_size: int) -> NSGA2:
    """NSGA-II on pymoo's mixed variables, tournament parents, archive-wide duplicate elimination (module doc)."""
    dedupe = ArchiveDuplicateElimination()
    return NSGA2(
        pop_size=pop_size,
        sampling=MixedVariableSampling(),
        mating=MixedVariableMating(
            selection=TournamentSelection(func_comp=binary_tournament), eliminate_duplicates=dedupe
        ),
        eliminate_duplicates=dedupe,
    )


def remember_evaluated(algorithm: NSGA2, archs: Sequence[Architecture]) -> None:
    """Add evaluated architectures to the algorithm's archive (older pickled algorithms have none: no-op)."""
    dedupe = getattr(algorithm, "eliminate_duplicates", None)
    if isinstance(dedupe, ArchiveDuplicateElimination):
        dedupe.archive.update(archive_key(a) for a in archs)


# ------------------------------------------------------------ constraints
@dataclass(frozen=True)
class Constraints:
    """Names and evaluation of the pymoo inequality constraints (``<= 0`` feasible).

    ``max_runtime_s`` / ``max_usd``: caps on what one candidate's evaluation
    workload is predicted to take on the device (from the ``runtime_s``
    objective) and to cost (Braket and other priced backends); violations are
    in decades over the cap, so "ten times too expensive" is a violation of 1.
    """

    max_qubits: int | None = None
    max_sampling_overhead: float | None = None
    cut_plan: bool = True
    max_runtime_s: float | None = None
    max_usd: float | None = None
    #: fewer two-qubit gates than this (after optimisation, :func:`~qnas_hw.model.circuits.entangling_gates`) is
    #: infeasible, so a user can require entangling circuits; 0 adds no constraint
    min_two_qubit_gates: int = 0
    #: successive halving: a candidate not scored at the last rung is infeasible (violation: the fraction of the
    #: last rung's epochs it did not train), so its lower-fidelity score never reaches the front or a pick
    top_rung: bool = False

    @property
    def names(self) -> list[str]:
        names = ["evaluation"]
        if self.cut_plan:
            names.append("cut_plan")
        if self.max_qubits is not None:
            names.append("max_qubits")
        if self.max_sampling_overhead is not None:
            names.append("max_sampling_overhead")
        if self.max_runtime_s is not None:
            names.append("max_candidate_runtime_s")
        if self.max_usd is not None:
            names.append("max_candidate_usd")
        if self.min_two_qubit_gates > 0:
            names.append("min_two_qubit_gates")
        if self.top_rung:
            names.append("top_rung")
        return names

    def values(self, arch: Architecture, facts: dict[str, Any]) -> list[float]:
        """``facts``: ``failed``, the cut plan's ``sampling_overhead``/``feasible``, ``runtime_s``, ``usd``."""
        g = [1.0 if facts.get("failed") else 0.0]
        overhead = facts.get("sampling_overhead")
        if self.cut_plan:
            g.append(0.0 if facts.get("cut_feasible", True) else 1.0)
        if self.max_qubits is not None:
            g.append(float(arch.n_qubits - self.max_qubits))
        if self.max_sampling_overhead is not None:
            if overhead is None or not math.isfinite(float(overhead)):
                g.append(1.0)
            else:
                # log base 9: one gate cut (kappa = 3, overhead 9) over the limit is a violation of 1
                g.append(math.log(max(float(overhead), 1e-300) / self.max_sampling_overhead, 9.0))
        if self.max_runtime_s is not None:
            g.append(_decades_over(facts.get("runtime_s"), self.max_runtime_s, facts.get("failed", False)))
        if self.max_usd is not None:
            g.append(_decades_over(facts.get("usd"), self.max_usd, facts.get("failed", False)))
        if self.min_two_qubit_gates > 0:
            from qnas_hw.model.circuits import entangling_gates

            g.append(float(self.min_two_qubit_gates - entangling_gates(arch)))
        if self.top_rung:
            g.append(_rung_shortfall(facts.get("rung")))
        return g


def _rung_shortfall(rung: Any) -> float:
    """``1 - epochs / last rung's epochs`` of a halving candidate (0 at the last rung, or without a rung)."""
    if not isinstance(rung, dict) or rung.get("level") == rung.get("of"):
        return 0.0
    return max(1e-6, 1.0 - float(rung["epochs"]) / float(rung["top_epochs"]))


#: Violation recorded for an infinite or unknown predicted cost (pymoo needs finite constraint values).
_UNBOUNDED_VIOLATION = 1e6


def _decades_over(value: Any, cap: float, failed: bool) -> float:
    if value is None:
        return 0.0 if failed else _UNBOUNDED_VIOLATION  # a failed candidate is already infeasible by "evaluation"
    v = float(value)
    if math.isnan(v):
        return 0.0 if failed else _UNBOUNDED_VIOLATION
    if math.isinf(v):
        return _UNBOUNDED_VIOLATION
    return math.log10(max(v, 1e-300) / cap)


__all__ = [
    "FAILED_VALUE",
    "ArchitectureProblem",
    "ArchiveDuplicateElimination",
    "Constraints",
    "SearchError",
    "archive_key",
    "decode",
    "make_algorithm",
    "remember_evaluated",
]
