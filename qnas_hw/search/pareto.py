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
* **Resolution.** Every objective has a resolution (:class:`Resolution`):
  validation error its standard error (at least one sample), runtime and
  dollars a relative tolerance, subcircuits 1.  The front shown to users and
  the picks treat values closer than that as ties (:func:`resolved_front`) and
  break ties toward fewer qubits, then fewer subcircuits, then lower cost: a
  pick never hinges on a millisecond or on one lucky validation sample.
* **Hypervolume box.** :class:`HypervolumeBox` fixes, once per study, each
  objective's ideal and nadir (runtime and dollars on a log scale), so the
  value logged, stored per generation and reported is one number, comparable
  across generations and never saturated by one outlier.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.dominator import Dominator
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

#: Normalised reference point coordinate for the hypervolume (see module docstring).
HV_REFERENCE = 1.1
#: Study meta key under which a study stores its fixed :class:`HypervolumeBox`.
HV_BOX_META = "hypervolume_box"


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


def box_of(points: np.ndarray | Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
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


def front_hypervolume(
    records: Sequence[Any], front: Sequence[int], names: Sequence[str], box: HypervolumeBox | None = None
) -> float | None:
    """Hypervolume of ``records[front]``: in the study's fixed ``box`` when given (what the search stores).

    Without a box (studies made before boxes were stored), the box of all
    usable records known now with reference :data:`HV_REFERENCE`; that box
    grows as the search finds new extremes, which is why such values are not
    comparable across generations.
    """
    usable = [r for r in records if is_usable(r, names)]
    if not front or not usable:
        return None
    F = objective_matrix([records[i] for i in front], names)
    if box is not None:
        return box.for_names(names).hypervolume(F)
    ideal, nadir = box_of(objective_matrix(usable, names))
    return hypervolume(F, ideal, nadir)


# ---------------------------------------------------------------- resolution
#: Differences of at least this many resolution units count (just under 1, so "one sample" or "one subcircuit"
#: apart is a real difference while anything closer is a tie).
_ONE_UNIT = 1.0 - 1e-9
#: Scale of an objective without a stated resolution: any difference counts.
_EXACT = 1e-12


@dataclass(frozen=True)
class Resolution:
    """How far apart two values of one objective must be to count as different.

    ``absolute``: an additive step (one subcircuit, one standard error).
    ``relative``: a multiplicative tolerance (0.02: runtimes within 2% tie).
    Neither: every difference counts.
    """

    absolute: float = 0.0
    relative: float = 0.0

    def units(self, values: np.ndarray | Sequence[float]) -> np.ndarray:
        """Values in resolution units: two values tie when their units differ by less than one."""
        v = np.asarray(values, dtype=float)
        if self.relative > 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.log(np.maximum(v, 1e-300)) / math.log1p(self.relative)
        return v / (self.absolute if self.absolute > 0 else _EXACT)

    def describe(self) -> str:
        if self.relative > 0:
            return f"{100 * self.relative:g}% relative"
        if self.absolute > 0:
            return f"{self.absolute:.4g} absolute"
        return "exact"

    def to_dict(self) -> dict[str, float]:
        return {"absolute": self.absolute, "relative": self.relative}


def accuracy_resolution(n_samples: int, error: float) -> Resolution:
    """Validation error's resolution: its standard error sqrt(e(1-e)/n), and never finer than one sample."""
    if n_samples < 1:
        raise ValueError(f"accuracy_resolution needs at least one scored sample, got n_samples={n_samples}")
    e = min(max(float(error), 0.0), 1.0) if math.isfinite(error) else 0.5
    return Resolution(absolute=max(math.sqrt(e * (1.0 - e) / n_samples), 1.0 / n_samples))


def resolution_units(F: np.ndarray, resolutions: Sequence[Resolution]) -> np.ndarray:
    """``F`` column by column in its objective's resolution units."""
    F = as_matrix(F)
    if F.shape[1] != len(resolutions):
        raise ValueError(f"{F.shape[1]} objectives but {len(resolutions)} resolutions")
    if F.shape[0] == 0:
        return F.copy()
    return np.column_stack([r.units(F[:, j]) for j, r in enumerate(resolutions)])


def resolved_front(
    F: np.ndarray | Sequence[Sequence[float]],
    resolutions: Sequence[Resolution],
    prefer: Callable[[int], Any],
) -> list[int]:
    """The front as users should see it: differences below resolution are ties (indices into ``F``, ascending).

    Rows with a non-finite value never enter.  Then:

    1. A row that another row beats by at least one resolution unit in some
       objective while being no worse by a unit in any is dropped (pymoo's
       ``Dominator`` with epsilon one unit, on values in resolution units).
       Only rows nothing beats may drop others, so a circle of such relations
       never empties the front.
    2. Rows within one unit of each other in every objective are ties: the
       one ``prefer`` ranks first (smallest key) stays.

    Step 2 runs over every row, not only the exact Pareto front: a 6-qubit
    circuit 0.5% faster and one sample more accurate dominates a 2-qubit one
    exactly, yet within resolution they are a tie that the simpler one wins.
    """
    F = as_matrix(F)
    rows = [i for i in range(F.shape[0]) if np.isfinite(F[i]).all()]
    if len(rows) <= 1:
        return rows
    Z = resolution_units(F[rows], resolutions)
    M = Dominator.calc_domination_matrix(Z, epsilon=_ONE_UNIT)
    alive = set(range(len(rows)))
    while True:
        free = [i for i in alive if not any(M[k, i] == 1 for k in alive)]
        dropped = {i for i in alive if any(M[k, i] == 1 for k in free)}
        if not dropped:
            break
        alive -= dropped
    kept: list[int] = []
    for i in sorted(alive, key=lambda i: prefer(rows[i])):
        if not any(np.all(np.abs(Z[i] - Z[k]) < _ONE_UNIT) for k in kept):
            kept.append(i)
    return sorted(rows[i] for i in kept)


def best_within_resolution(
    F: np.ndarray, candidates: Sequence[int], column: int, resolution: Resolution, prefer: Callable[[int], Any]
) -> int:
    """Among ``candidates``, those within one resolution unit of the best value in ``column``; ``prefer``'s first."""
    if not candidates:
        raise ValueError("best_within_resolution needs at least one candidate")
    z = resolution.units(np.array([F[i, column] for i in candidates]))
    best = float(np.min(z))
    near = [i for i, zi in zip(candidates, z, strict=True) if zi - best < _ONE_UNIT]
    return min(near, key=prefer)


# -------------------------------------------------------- hypervolume box
@dataclass(frozen=True)
class Axis:
    """One objective's fixed normalisation: ``ideal`` maps to 0, ``nadir`` to 1 (on log10 when ``log``)."""

    name: str
    ideal: float
    nadir: float
    log: bool = False

    def __post_init__(self) -> None:
        ok = math.isfinite(self.ideal) and math.isfinite(self.nadir) and self.nadir > self.ideal
        if not ok or (self.log and self.ideal <= 0):
            raise ValueError(
                f"hypervolume axis {self.name}: ideal {self.ideal!r} and nadir {self.nadir!r} must be finite with "
                f"nadir > ideal{' > 0 (log scale)' if self.log else ''}"
            )

    def normalize(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.log10(np.maximum(v, 1e-300))
            lo, hi = math.log10(self.ideal), math.log10(self.nadir)
        else:
            lo, hi = self.ideal, self.nadir
        return (v - lo) / (hi - lo)


@dataclass(frozen=True)
class HypervolumeBox:
    """The study's fixed hypervolume frame: one :class:`Axis` per objective and the reference point.

    Derived once when the study is created and stored with it, so the value
    logged after a generation, stored in its record and drawn in the report is
    the same number, and a later outlier cannot rescale earlier generations.
    Points beyond the nadir (past the reference) add no volume.
    """

    axes: tuple[Axis, ...]
    reference: float = HV_REFERENCE

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.axes]

    def normalize(self, F: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        F = as_matrix(F)
        if F.shape[0] == 0:
            return F.reshape(0, len(self.axes))
        return np.column_stack([a.normalize(F[:, j]) for j, a in enumerate(self.axes)])

    def hypervolume(self, F: np.ndarray | Sequence[Sequence[float]]) -> float:
        """Volume dominated by the finite rows of ``F`` up to the reference point (normalised units)."""
        F = as_matrix(F)
        F = F[np.isfinite(F).all(axis=1)] if F.shape[0] else F
        if F.shape[0] == 0:
            return 0.0
        Z = self.normalize(F)
        return float(HV(ref_point=np.full(len(self.axes), float(self.reference)))(Z))

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "axes": [{"name": a.name, "ideal": a.ideal, "nadir": a.nadir, "log": a.log} for a in self.axes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HypervolumeBox:
        axes = tuple(Axis(str(a["name"]), float(a["ideal"]), float(a["nadir"]), bool(a["log"])) for a in data["axes"])
        return cls(axes, float(data.get("reference", HV_REFERENCE)))

    def for_names(self, names: Sequence[str]) -> HypervolumeBox:
        """The same box with its axes in ``names`` order (refused when an objective has no axis)."""
        by_name = {a.name: a for a in self.axes}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"hypervolume box has no axis for {missing}; it covers {list(by_name)}")
        return HypervolumeBox(tuple(by_name[n] for n in names), self.reference)
