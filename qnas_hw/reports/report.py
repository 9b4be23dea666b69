"""Pareto reports of a finished (or running) study.

The search leaves a table of evaluated candidates and a record per
generation in the study; this module turns them into what a person decides
from: the non-dominated front, a knee pick (the best compromise) and a
most-accurate pick, the hypervolume per generation (did the search still
improve?), a terminal table, CSV/JSON exports and PNG plots.

Everything below :func:`write_report` is a pure function of arrays or
records, so it is tested without running a search.  All objectives are
minimised (that is how the study stores them: validation *error*, runtime,
subcircuits).

Conventions that make figures comparable across generations:

* **Normalisation.** Objectives live on very different scales (an error in
  [0, 1], a runtime in seconds, a count).  Hypervolume and the knee are
  computed after mapping each objective to [0, 1] with a fixed ideal (per
  objective minimum) and nadir (maximum).  For the hypervolume history the
  ideal/nadir are taken over *all* feasible candidates of the study, so every
  generation is measured in the same box; an objective that never varies
  gets a unit range (it then contributes a constant factor).
* **Reference point.** ``1.1`` in every normalised objective, i.e. 10% beyond
  the worst value seen, the usual choice so that the extreme points of the
  front still contribute volume.
* **Feasibility.** Infeasible candidates (violated constraints) and candidates
  with a non-finite objective (a failed evaluation) never enter a front.
* **Hardware results.** When ``qnas-hw hw-eval`` (or a search with
  ``hw_eval.enabled``) stored measured accuracies in the study's
  ``hw_eval_results`` table, each candidate gets ``hw_acc@<backend>`` (plus
  shots and measured seconds) from its latest result per backend.  They are
  reported next to the objectives, never used to pick the front: they exist
  for a few candidates only and on different sample subsets.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.table import Table

from qnas_hw.model.space import GENES, Architecture

if TYPE_CHECKING:  # the study is downstream of nothing here; imported only for type checkers
    from qnas_hw.search.study import Study

logger = logging.getLogger(__name__)

#: Normalised reference point coordinate for the hypervolume (see module docstring).
HV_REFERENCE = 1.1
#: The objective the "most accurate" pick minimises when the study has it.
ACCURACY_OBJECTIVE = "val_error"


# --------------------------------------------------------------------- pure helpers
def _as_matrix(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    F = np.asarray(points, dtype=float)
    if F.ndim == 1:
        F = F[None, :] if F.size else F.reshape(0, 0)
    if F.ndim != 2:
        raise ValueError(f"objective values must be a 2-D array (n_points, n_objectives), got shape {F.shape}")
    return F


def pareto_front(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``points`` under minimisation.

    Row ``a`` dominates ``b`` when it is no worse in every objective and better
    in at least one; exact duplicates do not dominate each other, so both stay
    (the same convention as pymoo's ``NonDominatedSorting``).  Rows with a
    non-finite value are never on the front.
    """
    F = _as_matrix(points)
    n = F.shape[0]
    if n == 0:
        return np.zeros(0, dtype=int)
    finite = np.isfinite(F).all(axis=1)
    idx = np.flatnonzero(finite)
    G = F[idx]
    keep = np.ones(len(idx), dtype=bool)
    # Row-blocked comparison keeps memory at block * n * m instead of n^2 * m.
    block = max(1, 2_000_000 // max(1, len(idx) * max(1, G.shape[1])))
    for start in range(0, len(idx), block):
        sub = G[start : start + block]
        no_worse = (G[None, :, :] <= sub[:, None, :]).all(axis=2)  # [i, j]: j no worse than i
        better = (G[None, :, :] < sub[:, None, :]).any(axis=2)
        keep[start : start + block] = ~(no_worse & better).any(axis=1)
    return idx[keep]


def normalize(
    points: np.ndarray | Sequence[Sequence[float]],
    ideal: np.ndarray | None = None,
    nadir: np.ndarray | None = None,
) -> np.ndarray:
    """Map each objective to [0, 1] with ``(f - ideal) / (nadir - ideal)``.

    ``ideal``/``nadir`` default to the column min/max of ``points``.  A zero
    range is replaced by 1 so a constant objective maps to 0 instead of NaN.
    """
    F = _as_matrix(points)
    lo = F.min(axis=0) if ideal is None else np.asarray(ideal, dtype=float)
    hi = F.max(axis=0) if nadir is None else np.asarray(nadir, dtype=float)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return (F - lo) / span


def hypervolume(
    points: np.ndarray | Sequence[Sequence[float]],
    ideal: np.ndarray,
    nadir: np.ndarray,
    reference: float = HV_REFERENCE,
) -> float:
    """Hypervolume (pymoo ``HV``) of ``points`` after normalising with fixed ``ideal``/``nadir``.

    The reference point is ``reference`` in every normalised objective; the
    result is in normalised units, so the largest possible value is
    ``reference ** n_objectives``.
    """
    from pymoo.indicators.hv import HV

    F = _as_matrix(points)
    if F.shape[0] == 0:
        return 0.0
    F = F[np.isfinite(F).all(axis=1)]
    if F.shape[0] == 0:
        return 0.0
    Z = normalize(F, ideal, nadir)
    indicator = HV(ref_point=np.full(Z.shape[1], float(reference)))
    return float(indicator(Z))


def _size(arch: Architecture) -> tuple[int, int, int]:
    return arch.n_qubits, arch.n_layers, arch.n_weights


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
    F = _as_matrix(front)
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


# ------------------------------------------------------------------ study views
@dataclass(frozen=True)
class Candidate:
    """One architecture's latest evaluation, flattened for reporting."""

    arch: Architecture
    objectives: dict[str, float]
    details: dict[str, Any]
    timings: dict[str, Any]
    generation: int
    feasible: bool

    def values(self, names: Sequence[str]) -> list[float]:
        return [float(self.objectives.get(n, math.nan)) for n in names]

    @property
    def usable(self) -> bool:
        return self.feasible and all(math.isfinite(float(v)) for v in self.objectives.values())


@dataclass(frozen=True)
class Generation:
    index: int
    population: list[str]
    front: list[str]
    hypervolume: float | None = None


@dataclass
class ReportData:
    """Everything the writers need, computed once from the study's records."""

    objective_names: list[str]
    candidates: list[Candidate]
    generations: list[Generation]
    config: dict[str, Any]
    front: list[int] = field(default_factory=list)  # indices into candidates
    knee: int | None = None  # index into candidates
    most_accurate: int | None = None  # index into candidates
    hypervolumes: list[tuple[int, float]] = field(default_factory=list)
    ideal: list[float] = field(default_factory=list)
    nadir: list[float] = field(default_factory=list)
    #: latest stored hardware result per architecture (canonical) and backend, see :func:`latest_hardware`
    hardware: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def hw_backends(self) -> list[str]:
        """Backends with at least one stored hardware result, sorted (one column group each)."""
        return sorted({b for per_arch in self.hardware.values() for b in per_arch})

    def hw_result(self, i: int, backend: str) -> dict[str, Any] | None:
        return self.hardware.get(self.candidates[i].arch.canonical(), {}).get(backend)

    def matrix(self) -> np.ndarray:
        return np.array([c.values(self.objective_names) for c in self.candidates], dtype=float).reshape(
            len(self.candidates), len(self.objective_names)
        )

    def accuracy_header(self) -> str:
        """How ``val_error`` was measured, in one line (every report header carries it)."""
        return accuracy_description(self.config)


def accuracy_description(config: dict[str, Any]) -> str:
    """``ideal``/``noisy``/``device``, with the backend, shots, samples and mitigation the study used."""
    search = config.get("search", {}) or {}
    hw = config.get("hardware", {}) or {}
    mode = search.get("accuracy") or "ideal"
    backend = hw.get("backend", "?")
    if mode == "ideal":
        return "accuracy: ideal (exact statevector simulation, infinite shots; no device noise)"
    where = f"the noise model of {backend}, simulated offline" if mode == "noisy" else f"jobs on {backend} itself"
    samples = search.get("val_samples")
    mitigation = "readout mitigation: mthree" if search.get("readout_mitigation", True) else "no readout mitigation"
    return (
        f"accuracy: {mode} ({where}; {search.get('shots', '?')} shots per sample on "
        f"{'every' if samples is None else f'up to {samples}'} validation samples; {mitigation}; "
        f"layout: {hw.get('layout', 'calibrated')})"
    )


def placement(c: Candidate) -> tuple[list[int] | None, float | None]:
    """A candidate's physical qubits and estimated success probability (noisy/device details, else transpilation)."""
    acc = (c.details.get("val_error") or {}).get("accuracy") or {}
    rt = c.details.get("runtime_s") or {}
    layout = acc.get("layout", rt.get("layout", rt.get("physical_qubits")))
    esp = acc.get("esp", rt.get("esp"))
    return (None if layout is None else list(layout)), (None if esp is None else float(esp))


def _latest_per_arch(records: Sequence[Any]) -> list[Candidate]:
    """Keep one record per architecture (the last stored one), in first-seen order.

    A study may re-evaluate an architecture (e.g. after a resume); the report
    shows its latest figures once rather than double-counting it on the front.
    """
    latest: dict[str, Candidate] = {}
    for r in records:
        c = Candidate(
            arch=r.arch,
            objectives={k: float(v) for k, v in dict(r.objectives).items()},
            details=dict(r.details or {}),
            timings=dict(r.timings or {}),
            generation=int(r.generation),
            feasible=bool(r.feasible),
        )
        key = c.arch.canonical()
        if key in latest:
            c = Candidate(c.arch, c.objectives, c.details, c.timings, latest[key].generation, c.feasible)
            del latest[key]  # re-insert to keep the record, but first-seen generation
        latest[key] = c
    return list(latest.values())


def _hv_box(F: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    G = F[usable]
    if G.shape[0] == 0:
        m = F.shape[1]
        return np.zeros(m), np.ones(m)
    return G.min(axis=0), G.max(axis=0)


def _generation_sets(cands: list[Candidate], gens: list[Generation]) -> list[tuple[int, list[int]]]:
    """Candidate indices alive in each generation.

    Uses the study's per-generation population when it is recorded; without
    generation records, falls back to everything evaluated up to that
    generation (the archive), which is what an elitist search can keep.
    """
    pos = {c.arch.canonical(): i for i, c in enumerate(cands)}
    if gens:
        out = []
        for g in sorted(gens, key=lambda g: g.index):
            members = g.population or g.front
            out.append((g.index, [pos[a] for a in members if a in pos]))
        return out
    indices = sorted({c.generation for c in cands})
    return [(g, [i for i, c in enumerate(cands) if c.generation <= g]) for g in indices]


def hypervolume_history_from_records(
    candidates: Sequence[Any],
    generations: Sequence[Any],
    objective_names: Sequence[str],
    reference: float = HV_REFERENCE,
) -> list[tuple[int, float]]:
    """``[(generation, hypervolume)]`` in one fixed normalised box (see module docstring).

    Each generation's value is the hypervolume of the non-dominated usable
    members of its population, normalised with the ideal/nadir of all usable
    candidates in the study and the reference point ``reference``.
    """
    cands = _latest_per_arch(candidates)
    gens = [_as_generation(g) for g in generations]
    return _hv_history(cands, gens, list(objective_names), reference)


def _hv_history(
    cands: list[Candidate], gens: list[Generation], names: list[str], reference: float
) -> list[tuple[int, float]]:
    if not cands or not names:
        return []
    F = np.array([c.values(names) for c in cands], dtype=float)
    usable = np.array([c.usable for c in cands], dtype=bool)
    ideal, nadir = _hv_box(F, usable)
    history = []
    for index, members in _generation_sets(cands, gens):
        alive = [i for i in members if usable[i]]
        hv = hypervolume(F[alive], ideal, nadir, reference) if alive else 0.0
        history.append((index, hv))
    return history


def _as_generation(g: Any) -> Generation:
    return Generation(
        index=int(g.index),
        population=list(g.population or []),
        front=list(g.front or []),
        hypervolume=None if g.hypervolume is None else float(g.hypervolume),
    )


def hypervolume_history(study: Study, reference: float = HV_REFERENCE) -> list[tuple[int, float]]:
    """Per-generation hypervolume of ``study`` as ``[(generation, hv)]`` (normalised units).

    The ideal/nadir box is fixed over the whole study (all feasible
    candidates) and the reference point is ``reference`` (default 1.1) in every
    normalised objective, so values of different generations are comparable
    and a flat tail means the search stopped improving.  This is recomputed
    from the stored candidates rather than read from the generation records,
    whose values were taken in whatever box was known at the time.
    """
    return hypervolume_history_from_records(study.candidates(), study.generations(), study.objective_names, reference)


def analyze(
    candidates: Sequence[Any],
    generations: Sequence[Any],
    objective_names: Sequence[str],
    config: dict[str, Any] | None = None,
    hardware: Sequence[dict[str, Any]] = (),
) -> ReportData:
    """Front, knee, most-accurate pick and hypervolume history from study records.

    ``candidates``/``generations`` are the study's ``CandidateRecord`` /
    ``GenerationRecord`` objects (anything with the same attributes);
    ``hardware`` the stored hardware results, newest first (see
    :func:`stored_hardware_results`).
    """
    names = list(objective_names)
    if not names:
        raise ValueError("the study has no objective names; was it created by `qnas-hw search`?")
    cands = _latest_per_arch(candidates)
    gens = [_as_generation(g) for g in generations]
    data = ReportData(
        objective_names=names,
        candidates=cands,
        generations=gens,
        config=dict(config or {}),
        hardware=latest_hardware(hardware),
    )
    F = data.matrix()
    usable = np.array([c.usable for c in cands], dtype=bool)
    ideal, nadir = _hv_box(F, usable) if cands else (np.zeros(len(names)), np.ones(len(names)))
    data.ideal, data.nadir = ideal.tolist(), nadir.tolist()
    if usable.any():
        rows = np.flatnonzero(usable)
        # equal objective vectors (e.g. 2 and 5 qubits in the same scheduled time) tie on every pick; the smaller
        # circuit comes first so the picks, which break ties by position, prefer it (less noise, same cost)
        data.front = sorted(
            (int(rows[i]) for i in pareto_front(F[rows])),
            key=lambda i: (*F[i].tolist(), *_size(cands[i].arch), cands[i].arch.canonical()),
        )
        FF = F[data.front]
        data.knee = data.front[knee_point(FF)]
        acc_col = names.index(ACCURACY_OBJECTIVE) if ACCURACY_OBJECTIVE in names else 0
        # Lexicographic: best accuracy, then the other objectives, so the pick is itself non-dominated.
        keys = [FF[:, j] for j in reversed(range(FF.shape[1])) if j != acc_col] + [FF[:, acc_col]]
        data.most_accurate = data.front[int(np.lexsort(keys)[0])]
    data.hypervolumes = _hv_history(cands, gens, names, HV_REFERENCE)
    return data


# -------------------------------------------------------------- hardware results
#: The table :mod:`qnas_hw.search.hw_eval` stores per-candidate hardware results in.
HW_RESULTS_TABLE = "hw_eval_results"


def latest_hardware(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{arch: {backend: result}}`` keeping, per architecture and backend, the first row (rows come newest first).

    A candidate re-evaluated with other shots or seeds (another batch) shows
    its latest figures; older batches stay in the study, just not in the report.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        try:
            arch, backend = str(r["arch"]), str(r["backend"])
        except KeyError as exc:
            raise ValueError(f"hardware result without {exc.args[0]!r}: {r!r}") from None
        out.setdefault(arch, {}).setdefault(backend, dict(r))
    return out


def stored_hardware_results(study: Study) -> list[dict[str, Any]]:
    """Every row of the study's hardware results table, newest first; ``[]`` when none was ever stored.

    Read-only on purpose: reporting a study that never ran a hardware
    evaluation must not add tables to it.  Rows are decoded the way
    :func:`qnas_hw.search.hw_eval.stored_results` decodes them; ``rowid``
    breaks ties of the one-second ``created_at`` stamps (INSERT OR REPLACE
    gives a rewritten row a new rowid).
    """
    conn = study.connect()
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (HW_RESULTS_TABLE,)
        ).fetchone()
        if not exists:
            return []
        rows = conn.execute(
            f"SELECT batch, result, created_at FROM {HW_RESULTS_TABLE} ORDER BY created_at DESC, rowid DESC"
        ).fetchall()
    finally:
        conn.close()
    return [{"batch": b, "created_at": c, **json.loads(r)} for b, r, c in rows]


def measured_seconds(result: dict[str, Any]) -> tuple[float | None, str]:
    """Provider-reported QPU seconds when there are any, else the jobs' wall seconds, with which one it is."""
    if result.get("quantum_seconds") is not None:
        return float(result["quantum_seconds"]), "QPU"
    if result.get("wall_seconds") is not None:
        return float(result["wall_seconds"]), "wall"
    return None, "-"


def _hw_columns(result: dict[str, Any] | None, backend: str) -> dict[str, Any]:
    """The flat per-backend columns of one candidate (empty cells when it was not measured there)."""
    if result is None:
        return {f"hw_acc@{backend}": "", f"hw_shots@{backend}": "", f"hw_seconds@{backend}": ""}
    seconds, _ = measured_seconds(result)
    return {
        f"hw_acc@{backend}": float(result["accuracy"]),
        f"hw_shots@{backend}": int(result["shots"]),
        f"hw_seconds@{backend}": "" if seconds is None else seconds,
    }


def _hw_json(result: dict[str, Any]) -> dict[str, Any]:
    seconds, source = measured_seconds(result)
    keep = ("accuracy", "simulator_accuracy", "n_samples", "shots", "jobs", "quantum_seconds", "wall_seconds")
    return {
        **{k: result.get(k) for k in keep},
        "measured_seconds": seconds,
        "seconds_source": source,
        "batch": result.get("batch"),
        "created_at": result.get("created_at"),
    }


# ------------------------------------------------------------------- renderers
def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"


def front_table(data: ReportData) -> Table:
    """The Pareto front as a rich table, best accuracy first; the CLI prints it."""
    names = data.objective_names
    table = Table(
        title=f"Pareto front ({len(data.front)} of {len(data.candidates)} candidates); {data.accuracy_header()}"
    )
    table.add_column("pick")
    table.add_column("architecture")
    table.add_column("qubits", justify="right")
    table.add_column("layers", justify="right")
    if ACCURACY_OBJECTIVE in names:
        table.add_column("val_acc", justify="right")
    for n in names:
        table.add_column(n, justify="right")
    backends = data.hw_backends
    for b in backends:
        table.add_column(f"hw_acc@{b}", justify="right")
    table.add_column("ESP", justify="right")
    table.add_column("gen", justify="right")
    order = sorted(data.front, key=lambda i: data.candidates[i].values(names))
    for i in order:
        c = data.candidates[i]
        marks = [m for m, j in (("knee", data.knee), ("best-acc", data.most_accurate)) if j == i]
        row = [", ".join(marks), c.arch.canonical(), str(c.arch.n_qubits), str(c.arch.n_layers)]
        if ACCURACY_OBJECTIVE in names:
            row.append(f"{100 * (1 - c.objectives[ACCURACY_OBJECTIVE]):.2f}%")
        row += [_fmt(v) for v in c.values(names)]
        for b in backends:
            hw = data.hw_result(i, b)
            row.append("-" if hw is None else f"{100 * float(hw['accuracy']):.2f}%")
        _, esp = placement(c)
        row.append("-" if esp is None else f"{esp:.3f}")
        row.append(str(c.generation))
        table.add_row(*row)
    return table


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list | tuple):
        out[prefix] = json.dumps(value, default=str)
    else:
        out[prefix] = value


def candidate_row(data: ReportData, i: int) -> dict[str, Any]:
    """One flat CSV row: identity, genes, objectives, flags, then dotted details/timings."""
    c = data.candidates[i]
    row: dict[str, Any] = {"architecture": c.arch.canonical(), "key": c.arch.key()}
    genes = c.arch.to_dict()
    row.update({g: genes[g] for g in (*GENES, "readout")})
    row.update({n: c.objectives.get(n, math.nan) for n in data.objective_names})
    row.update(
        generation=c.generation,
        feasible=c.feasible,
        on_front=i in data.front,
        knee=i == data.knee,
        most_accurate=i == data.most_accurate,
    )
    for b in data.hw_backends:
        row.update(_hw_columns(data.hw_result(i, b), b))
    layout, esp = placement(c)
    row.update(layout=json.dumps(layout), esp=esp)
    extra: dict[str, Any] = {}
    _flat("details", c.details, extra)
    _flat("timings", c.timings, extra)
    row.update(extra)
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _json_candidate(data: ReportData, i: int) -> dict[str, Any]:
    c = data.candidates[i]
    return {
        "architecture": c.arch.canonical(),
        "key": c.arch.key(),
        "genes": c.arch.to_dict(),
        "objectives": {n: _json_number(c.objectives.get(n, math.nan)) for n in data.objective_names},
        "details": c.details,
        "timings": c.timings,
        "generation": c.generation,
        "feasible": c.feasible,
        "on_front": i in data.front,
        "hardware": {b: _hw_json(r) for b, r in sorted(data.hardware.get(c.arch.canonical(), {}).items())},
    }


def _json_number(v: float) -> float | None:
    """JSON has no NaN/inf; a failed value is written as null rather than invalid JSON."""
    return float(v) if math.isfinite(v) else None


def report_json(data: ReportData) -> dict[str, Any]:
    def pick(i: int | None) -> dict[str, Any] | None:
        return None if i is None else _json_candidate(data, i)

    return {
        "objective_names": data.objective_names,
        "accuracy": data.accuracy_header(),
        "config": data.config,
        "n_candidates": len(data.candidates),
        "n_generations": len(data.generations),
        "normalisation": {"ideal": data.ideal, "nadir": data.nadir, "hv_reference": HV_REFERENCE},
        "hypervolume": [{"generation": g, "hypervolume": hv} for g, hv in data.hypervolumes],
        "hardware_backends": data.hw_backends,
        "knee": pick(data.knee),
        "most_accurate": pick(data.most_accurate),
        "front": [_json_candidate(data, i) for i in data.front],
        "candidates": [_json_candidate(data, i) for i in range(len(data.candidates))],
    }


# ------------------------------------------------------------------------ plots
def _pyplot() -> Any:
    """matplotlib with the file-only Agg backend, chosen per figure so no GUI is ever needed."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def log_axes(data: ReportData) -> list[bool]:
    """Per objective: plot on a log axis when its usable values are positive and span more than 100x.

    Feasible cut plans can multiply the runtime by up to max_gamma^2 (10^6), and on a linear axis those few
    points squash the whole front into one corner.
    """
    F = data.matrix()
    usable = np.array([c.usable for c in data.candidates], dtype=bool)
    out = []
    for j in range(F.shape[1]):
        col = F[usable, j]
        col = col[np.isfinite(col)]
        out.append(bool(col.size and col.min() > 0 and col.max() / col.min() > 100))
    return out


def _scatter_2d(data: ReportData, a: int, b: int, path: Path) -> None:
    plt = _pyplot()
    F = data.matrix()
    usable = np.array([c.usable for c in data.candidates], dtype=bool)
    on_front = np.zeros(len(data.candidates), dtype=bool)
    on_front[data.front] = True
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    try:
        rest = usable & ~on_front
        ax.scatter(F[rest, a], F[rest, b], s=16, c="0.65", label="candidates")
        if (~usable).any():
            bad = ~usable & np.isfinite(F[:, [a, b]]).all(axis=1)
            ax.scatter(F[bad, a], F[bad, b], s=16, marker="x", c="tab:gray", label="infeasible")
        if data.front:
            ax.scatter(F[on_front, a], F[on_front, b], s=30, c="tab:blue", label="Pareto front (all objectives)")
            # The 2-D front of this projection as a step line, for the eye.
            sub = np.array(data.front)[pareto_front(F[data.front][:, [a, b]])]
            order = sub[np.argsort(F[sub, a])]
            ax.step(F[order, a], F[order, b], where="post", c="tab:blue", lw=1, alpha=0.7)
        for label, idx, colour in (("knee", data.knee, "tab:red"), ("most accurate", data.most_accurate, "tab:green")):
            if idx is not None:
                ax.scatter(F[idx, a], F[idx, b], s=120, facecolors="none", edgecolors=colour, lw=2, label=label)
        ax.set_xlabel(data.objective_names[a])
        ax.set_ylabel(data.objective_names[b])
        log = log_axes(data)
        if log[a]:
            ax.set_xscale("log")
        if log[b]:
            ax.set_yscale("log")
        ax.set_title(f"{data.objective_names[b]} vs {data.objective_names[a]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _scatter_3d(data: ReportData, path: Path) -> None:
    plt = _pyplot()
    F = data.matrix()
    log = log_axes(data)  # mplot3d has no working log scale: plot log10 values and say so on the axis
    with np.errstate(divide="ignore", invalid="ignore"):
        F = np.where(log, np.log10(np.where(F > 0, F, np.nan)), F)
    names = [f"log10 {n}" if lg else n for n, lg in zip(data.objective_names, log, strict=True)]
    usable = np.array([c.usable for c in data.candidates], dtype=bool)
    on_front = np.zeros(len(data.candidates), dtype=bool)
    on_front[data.front] = True
    fig = plt.figure(figsize=(6, 5), dpi=110)
    try:
        ax = fig.add_subplot(projection="3d")
        rest = usable & ~on_front
        ax.scatter(F[rest, 0], F[rest, 1], F[rest, 2], s=10, c="0.7", label="candidates")
        ax.scatter(F[on_front, 0], F[on_front, 1], F[on_front, 2], s=28, c="tab:blue", label="Pareto front")
        for label, idx, colour in (("knee", data.knee, "tab:red"), ("most accurate", data.most_accurate, "tab:green")):
            if idx is not None:
                ax.scatter(F[idx, 0], F[idx, 1], F[idx, 2], s=120, c=colour, marker="*", label=label)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_zlabel(names[2])
        ax.set_title("Pareto front")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _hv_plot(data: ReportData, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    try:
        gens = [g for g, _ in data.hypervolumes]
        hvs = [hv for _, hv in data.hypervolumes]
        ax.plot(gens, hvs, marker="o")
        ax.set_xlabel("generation")
        ax.set_ylabel(f"hypervolume (normalised, ref={HV_REFERENCE})")
        ax.set_title("Hypervolume per generation")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------- summary
def _describe(data: ReportData, i: int | None) -> str:
    if i is None:
        return "none (no feasible candidate)"
    c = data.candidates[i]
    objs = ", ".join(f"{n}={_fmt(c.objectives[n])}" for n in data.objective_names)
    acc = (
        f" (validation accuracy {100 * (1 - c.objectives[ACCURACY_OBJECTIVE]):.2f}%)"
        if ACCURACY_OBJECTIVE in c.objectives
        else ""
    )
    return f"`{c.arch.canonical()}` ({c.arch.n_qubits} qubits, {c.arch.n_layers} layers): {objs}{acc}"


def _hardware_section(data: ReportData) -> list[str]:
    """Markdown table of every stored hardware result (latest per architecture and backend); none: no section."""
    if not data.hardware:
        return []
    pos = {c.arch.canonical(): i for i, c in enumerate(data.candidates)}
    lines = [
        "",
        "## Hardware evaluation",
        "",
        "Validation accuracy measured on the backend (front-end and head local, quantum layer sampled) next to the "
        "simulated accuracy of the same model on the same samples; seconds are provider QPU time when reported, "
        "else the jobs' wall time.",
        "",
        "| architecture | on front | backend | samples | sim val acc | hw val acc | shots | measured s |",
        "|---|:-:|---|---:|---:|---:|---:|---:|",
    ]
    order = sorted(data.hardware, key=lambda a: (a not in pos or pos[a] not in data.front, pos.get(a, len(pos)), a))
    pct = lambda v: "-" if v is None else f"{100 * float(v):.2f}%"  # noqa: E731
    for arch in order:
        on_front = "yes" if arch in pos and pos[arch] in data.front else ""
        for backend, r in sorted(data.hardware[arch].items()):
            seconds, source = measured_seconds(r)
            secs = "-" if seconds is None else f"{seconds:.2f} ({source})"
            lines.append(
                f"| `{_md_cell(arch)}` | {on_front} | {backend} | {r.get('n_samples', '-')} "
                f"| {pct(r.get('simulator_accuracy'))} | {pct(r.get('accuracy'))} | {r.get('shots', '-')} | {secs} |"
            )
    return lines


def _front_section(data: ReportData) -> list[str]:
    """The front as a Markdown table: objectives, where each candidate runs and its success probability."""
    if not data.front:
        return []
    names = data.objective_names
    lines = [
        "## Pareto front",
        "",
        "ESP: estimated success probability of the circuit as placed (product of 1 - error over its gates and "
        "measurements, from the device's calibration data); layout: the physical qubits it runs on.",
        "",
        "| architecture | " + " | ".join(names) + " | layout | ESP |",
        "|---|" + "---:|" * len(names) + "---|---:|",
    ]
    for i in sorted(data.front, key=lambda i: data.candidates[i].values(names)):
        c = data.candidates[i]
        layout, esp = placement(c)
        lines.append(
            f"| `{_md_cell(c.arch.canonical())}` | "
            + " | ".join(_fmt(v) for v in c.values(names))
            + f" | {layout if layout is not None else '-'} | {'-' if esp is None else f'{esp:.3f}'} |"
        )
    return [*lines, ""]


def _md_cell(text: str) -> str:
    """Canonical architectures contain '|', which ends a Markdown table cell even inside backticks."""
    return text.replace("|", "\\|")


def summary_markdown(data: ReportData, files: Sequence[Path] = ()) -> str:
    seed = data.config.get("seed", "not recorded")
    acc_name = ACCURACY_OBJECTIVE if ACCURACY_OBJECTIVE in data.objective_names else "the first objective"
    lines = [
        "# qnas-hw study report",
        "",
        f"- {data.accuracy_header()}",
        f"- objectives (all minimised): {', '.join(data.objective_names)}",
        f"- candidates evaluated: {len(data.candidates)} "
        f"({sum(not c.usable for c in data.candidates)} infeasible or failed)",
        f"- generations: {len(data.generations)}",
        f"- Pareto front size: {len(data.front)}",
        f"- seed: {seed}",
        "",
        "## Picks",
        "",
        f"- **knee** (best compromise; farthest from the plane through the normalised extremes): "
        f"{_describe(data, data.knee)}",
        f"- **most accurate** (lowest {acc_name}, ties by the other objectives): {_describe(data, data.most_accurate)}",
        "",
        *_front_section(data),
        "## Hypervolume",
        "",
        f"Normalised with ideal={[_fmt(v) for v in data.ideal]}, nadir={[_fmt(v) for v in data.nadir]} "
        f"(all feasible candidates), reference point {HV_REFERENCE} per objective.",
        "",
    ]
    if data.hypervolumes:
        lines += ["| generation | hypervolume |", "|---:|---:|"]
        lines += [f"| {g} | {hv:.4f} |" for g, hv in data.hypervolumes]
    else:
        lines.append("no generations recorded")
    lines += _hardware_section(data)
    lines += ["", "## Study configuration", "", "```json", json.dumps(data.config, indent=2, default=str), "```"]
    if files:
        lines += ["", "## Files", ""] + [f"- `{p.name}`" for p in files]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ entry
@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report` (plots: one PNG per objective pair, 3-D front, hypervolume)."""

    out_dir: Path
    candidates_csv: Path
    front_csv: Path
    report_json: Path
    summary_md: Path
    plots: list[Path]

    def all(self) -> list[Path]:
        return [self.candidates_csv, self.front_csv, self.report_json, self.summary_md, *self.plots]


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def write_report_data(data: ReportData, out_dir: Path | str) -> ReportFiles:
    """Write CSV, JSON, PNG plots and ``summary.md`` for already-analysed records."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cand_csv, front_csv = out / "candidates.csv", out / "front.csv"
    _write_csv(cand_csv, [candidate_row(data, i) for i in range(len(data.candidates))])
    _write_csv(front_csv, [candidate_row(data, i) for i in data.front])
    json_path = out / "report.json"
    json_path.write_text(json.dumps(report_json(data), indent=2, default=str))
    plots: list[Path] = []
    m = len(data.objective_names)
    if data.candidates:
        for a, b in itertools.combinations(range(m), 2):
            p = out / f"front_{_slug(data.objective_names[a])}_vs_{_slug(data.objective_names[b])}.png"
            _scatter_2d(data, a, b, p)
            plots.append(p)
        if m >= 3:
            p = out / "front_3d.png"
            _scatter_3d(data, p)
            plots.append(p)
    if data.hypervolumes:
        p = out / "hypervolume.png"
        _hv_plot(data, p)
        plots.append(p)
    summary = out / "summary.md"
    files = ReportFiles(out, cand_csv, front_csv, json_path, summary, plots)
    summary.write_text(summary_markdown(data, files.all()))
    logger.info("wrote report with %d files to %s", len(files.all()), out)
    return files


def study_report_data(study: Study) -> ReportData:
    """Analyse a study's stored records (front, knee, picks, hypervolume) and its hardware results."""
    return analyze(
        study.candidates(),
        study.generations(),
        study.objective_names,
        study.config,
        hardware=stored_hardware_results(study),
    )


def write_report(study: Study, out_dir: Path | str) -> ReportFiles:
    """Write the full report of ``study`` into ``out_dir`` (created if missing; files overwritten)."""
    return write_report_data(study_report_data(study), out_dir)
