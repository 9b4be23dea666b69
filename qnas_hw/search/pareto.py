"""The one home of Pareto fronts, hypervolume and the knee pick.

The search (per-generation archive front and its hypervolume, stored in the
study) and the reports (front, picks, hypervolume history) both read these
functions, so a front in a report is the front the search recorded.  The
dominance test and the indicator are pymoo's (``NonDominatedSorting`` and
``HV``); only the normalisation and the knee rule are ours.

Conventions (all objectives are minimised):

* **Normalisation.** Objectives live on very different scales (an error in
  [0, 1], a runtime in seconds, a count).  Hypervolume and the knee are
  computed after mapping each objective to [0, 1] with an ideal (per
  objective minimum) and nadir (maximum); an objective that never varies gets
  a unit range (it then contributes a constant factor).
* **Reference point.** :data:`HV_REFERENCE` (1.1) in every normalised
  objective, i.e. 10% beyond the worst value seen, the usual choice so that
  the extreme points of the front still contribute volume.
* **Usable records.** Infeasible candidates (violated constraints) and
  candidates with a non-finite objective (a failed evaluation) never enter a
  front or a normalisation box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

#: Normalised reference point coordinate for the hypervolume (see module docstring).
HV_REFERENCE = 1.1


def as_matrix(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``points`` as a float ``(n_points, n_objectives)`` array, with a clear error for any other shape."""
    F = np.asarray(points, dtype=float)
    if F.ndim == 1:
        F = F[None, :] if F.size else F.reshape(0, 0)
    if F.ndim != 2:
        raise ValueError(f"objective values must be a 2-D array (n_points, n_objectives), got shape {F.shape}")
    return F


def pareto_front(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``points`` under minimisation.

    pymoo's ``NonDominatedSorting`` on the finite rows: row ``a`` dominates
    ``b`` when it is no worse in every objective and better in at least one;
    exact duplicates do not dominate each other, so both stay.  Rows with a
    non-finite value are never on the front.
    """
    F = as_matrix(points)
    idx = np.flatnonzero(np.isfinite(F).all(axis=1)) if F.shape[0] else np.zeros(0, dtype=int)
    if idx.size == 0:
        return np.zeros(0, dtype=int)
    if idx.size == 1:
        return idx
    nd = NonDominatedSorting().do(F[idx], only_non_dominated_front=True)
    return np.sort(idx[np.asarray(nd, dtype=int)])


def normalize(
    points: np.ndarray | Sequence[Sequence[float]],
    ideal: np.ndarray | Sequence[float] | None = None,
    nadir: np.ndarray | Sequence[float] | None = None,
) -> np.ndarray:
    """Map each objective to [0, 1] with ``(f - ideal) / (nadir - ideal)``.

    ``ideal``/``nadir`` default to the column min/max of ``points``.  A zero
    range is replaced by 1 so a constant objective maps to 0 instead of NaN.
    """
    F = as_matrix(points)
    lo = F.min(axis=0) if ideal is None else np.asarray(ideal, dtype=float)
    hi = F.max(axis=0) if nadir is None else np.asarray(nadir, dtype=float)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return (F - lo) / span


def box(points: np.ndarray | Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """The (ideal, nadir) normalisation box of ``points``; the unit box when there are none."""
    F = as_matrix(points)
    if F.shape[0] == 0:
        m = F.shape[1]
        return np.zeros(m), np.ones(m)
    return F.min(axis=0), F.max(axis=0)


def hypervolume(
    points: np.ndarray | Sequence[Sequence[float]],
    ideal: np.ndarray | Sequence[float],
    nadir: np.ndarray | Sequence[float],
    reference: float = HV_REFERENCE,
) -> float:
    """Hypervolume (pymoo ``HV``) of ``points`` after normalising with fixed ``ideal``/``nadir``.

    The reference point is ``reference`` in every normalised objective; the
    result is in normalised units, so the largest possible value is
    ``reference ** n_objectives``.  Non-finite rows are ignored.
    """
    F = as_matrix(points)
    if F.shape[0] == 0:
        return 0.0
    F = F[np.isfinite(F).all(axis=1)]
    if F.shape[0] == 0:
        return 0.0
    Z = normalize(F, ideal, nadir)
    return float(HV(ref_point=np.full(Z.shape[1], float(reference)))(Z))


def knee_point(front: np.ndarray | Sequence[Sequence[float]]) -> int:
    """Index (row of ``front``) of the knee: the best compromise of a Pareto front.

    Method (Das' normal-boundary idea, as used for knee detection by Deb &
    Gupta): normalise the front to [0, 1] per objective; take the *extreme*
    points (each minimises one objective); fit the hyperplane ``n . f = 1``
    through them (the line between the two extremes for two objectives); the
    knee is the point farthest from that plane on the ideal-point side,
    i.e. where giving up a little of one objective buys the most of the others.
    Objectives that are constant on the front are ignored.  If the extremes do
    not span a plane (e.g. one point minimises two objectives) the plane
    ``sum(f) = 1`` is used instead, which picks the point of smallest
    normalised sum.  Ties go to the lowest index, so the pick is deterministic.
    """
    F = as_matrix(front)
    if F.shape[0] == 0:
        raise ValueError("knee_point needs a non-empty front")
    if not np.isfinite(F).all():
        raise ValueError("knee_point got non-finite objective values; drop failed candidates first")
    if F.shape[0] == 1:
        return 0
    varying = F.max(axis=0) > F.min(axis=0)
    if not varying.any():
        return 0
    Z = normalize(F[:, varying])
    m = Z.shape[1]
    if m == 1:
        return int(np.argmin(Z[:, 0]))
    # Extreme point per objective: minimal in it, ties broken by the smallest sum of the others.
    extremes = np.array([np.lexsort((Z.sum(axis=1), Z[:, j]))[0] for j in range(m)])
    E = Z[extremes]
    normal: np.ndarray | None = None
    if len(set(extremes.tolist())) == m:
        try:
            normal = np.linalg.solve(E, np.ones(m))
        except np.linalg.LinAlgError:
            normal = None
        if normal is not None and not np.isfinite(normal).all():
            normal = None
    if normal is None:
        normal = np.ones(m)
    distance = (1.0 - Z @ normal) / np.linalg.norm(normal)
    return int(np.argmax(distance))


# ------------------------------------------------------------- study records
def is_usable(record: Any, names: Sequence[str]) -> bool:
    """Feasible, with a finite value for every objective in ``names`` (see the module docstring)."""
    return bool(record.feasible) and all(math.isfinite(float(record.objectives.get(n, math.nan))) for n in names)


def objective_matrix(records: Sequence[Any], names: Sequence[str]) -> np.ndarray:
    """``(len(records), len(names))`` objective values; a missing objective is NaN."""
    rows = [[float(r.objectives.get(n, math.nan)) for n in names] for r in records]
    return np.array(rows, dtype=float).reshape(len(records), len(names))


def archive_front(records: Sequence[Any], names: Sequence[str]) -> list[int]:
    """Indices of the usable, non-dominated records (anything with ``objectives`` and ``feasible``)."""
    usable = [i for i, r in enumerate(records) if is_usable(r, names)]
    if not usable:
        return []
    F = objective_matrix([records[i] for i in usable], names)
    return sorted(usable[int(k)] for k in pareto_front(F))


def front_hypervolume(records: Sequence[Any], front: Sequence[int], names: Sequence[str]) -> float | None:
    """Hypervolume of ``records[front]`` in the box of all usable records known now (reference :data:`HV_REFERENCE`).

    The search stores this per generation; the box grows as the search finds
    new extremes, which is why reports recompute the history in one fixed box.
    """
    usable = [r for r in records if is_usable(r, names)]
    if not front or not usable:
        return None
    ideal, nadir = box(objective_matrix(usable, names))
    return hypervolume(objective_matrix([records[i] for i in front], names), ideal, nadir)
