"""What a report shows, computed once from a study's records.

:func:`analyze` turns the study's candidate and generation records into a
:class:`ReportData`: one record per architecture (its latest evaluation), the
non-dominated front, a knee pick (the best compromise), a most-accurate pick,
the hypervolume per generation (did the search still improve?) and the
stored hardware results.  The Pareto math itself lives in
:mod:`qnas_hw.search.pareto` (one definition for the search and the reports);
the renderers are :mod:`qnas_hw.reports.report` and :mod:`qnas_hw.reports.plots`.

* **Hypervolume history.** The ideal/nadir box is taken over *all* usable
  candidates of the study, so every generation is measured in the same box.
  The search stores each generation's value in the box it knew then; this
  module recomputes them in the final box so a flat tail means no progress.
* **Hardware results.** When ``qnas-hw hw-eval`` (or a search with
  ``hw_eval.enabled``) stored measured accuracies in the study's
  ``hw_eval_results`` table, each candidate gets its latest result per
  backend.  They are reported next to the objectives, never used to pick the
  front: they exist for a few candidates only and on different sample subsets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from qnas_hw.model.space import Architecture
from qnas_hw.search.pareto import HV_REFERENCE, box, hypervolume, knee_point, pareto_front
from qnas_hw.search.study import CandidateRecord, GenerationRecord, Study

#: The objective the "most accurate" pick minimises when the study has it.
ACCURACY_OBJECTIVE = "val_error"


def _size(arch: Architecture) -> tuple[int, int, int]:
    return arch.n_qubits, arch.n_layers, arch.n_weights


@dataclass
class ReportData:
    """Everything the writers need, computed once from the study's records."""

    objective_names: list[str]
    candidates: list[CandidateRecord]
    generations: list[GenerationRecord]
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


def placement(c: CandidateRecord) -> tuple[list[int] | None, float | None]:
    """A candidate's physical qubits and estimated success probability (noisy/device details, else transpilation)."""
    acc = (c.details.get("val_error") or {}).get("accuracy") or {}
    rt = c.details.get("runtime_s") or {}
    layout = acc.get("layout", rt.get("layout", rt.get("physical_qubits")))
    esp = acc.get("esp", rt.get("esp"))
    return (None if layout is None else list(layout)), (None if esp is None else float(esp))


def _latest_per_arch(records: Sequence[Any]) -> list[CandidateRecord]:
    """Keep one record per architecture (the last stored one), in first-seen order and generation.

    A study may re-evaluate an architecture (e.g. after a resume); the report
    shows its latest figures once rather than double-counting it on the front.
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


def _hv_box(F: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return box(F[usable])


def _generation_sets(cands: list[CandidateRecord], gens: list[GenerationRecord]) -> list[tuple[int, list[int]]]:
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
    cands: list[CandidateRecord], gens: list[GenerationRecord], names: list[str], reference: float
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


def _as_generation(g: Any) -> GenerationRecord:
    return GenerationRecord(
        index=int(g.index),
        population=list(g.population or []),
        front=list(g.front or []),
        hypervolume=None if g.hypervolume is None else float(g.hypervolume),
        finished_at=str(getattr(g, "finished_at", "") or ""),
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


def study_report_data(study: Study) -> ReportData:
    """Analyse a study's stored records (front, knee, picks, hypervolume) and its hardware results."""
    return analyze(
        study.candidates(),
        study.generations(),
        study.objective_names,
        study.config,
        hardware=stored_hardware_results(study),
    )
