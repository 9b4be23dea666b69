"""What a report shows, computed once from a study's records.

:func:`analyze` turns the study's candidate and generation records into a
:class:`ReportData`: one record per architecture (its latest evaluation), the
front within resolution with the exact front beside it, a knee pick (the best
compromise), a most-accurate pick, the front size and hypervolume per
generation (did the search still improve?) and the stored hardware results.
The front is :func:`qnas_hw.search.fronts.study_front`'s, the one the search's
console line, the study's generation records and ``hw-eval --which front``
use, and the Pareto math lives in :mod:`qnas_hw.search.pareto`; the renderers
are :mod:`qnas_hw.reports.report` and :mod:`qnas_hw.reports.plots`.

* **Generation numbers.** Records store 0-based generation indices; every
  output (console, summary.md, report.json, CSV, plots) prints the 1-based
  :func:`~qnas_hw.search.study.generation_number` ("generation 1" is the
  initial population).

* **Hypervolume history.** The ideal/nadir box is taken over *all* usable
  candidates of the study, so every generation is measured in the same box.
  The search stores each generation's value in the box it knew then; this
  module recomputes them in the final box so a flat tail means no progress.
* **Hardware results.** When ``qnas-hw hw-eval`` (or a search with
  ``hw_eval.enabled``) stored measured accuracies in the study's
  ``hw_eval_results`` table, each candidate gets its latest result per
  backend.  They are reported next to the objectives, never used to pick the
  front: they exist for a few candidates only and on different sample subsets.
* **Provenance and counts.** :class:`StudyContext` says where the figures
  come from (data set, backend, qubit budget, the runtime cost model: fitted
  with its held-out quality or a documented prior, prices of billed
  backends), and :attr:`ReportData.outcomes` counts candidates as feasible,
  infeasible or failed exactly as the search's console lines do.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qnas_hw.jobs.ledger import JobLedger
from qnas_hw.jobs.usage import CostComparison, compare_costs, job_costs
from qnas_hw.model.space import Architecture
from qnas_hw.search.fronts import latest_per_arch, preference, study_front
from qnas_hw.search.pareto import (
    HV_BOX_META,
    Axis,
    HypervolumeBox,
    Resolution,
    archive_front,
    best_within_resolution,
    front_hypervolume,
    knee_point,
)
from qnas_hw.search.study import CandidateRecord, GenerationRecord, OutcomeCounts, Study, generation_number
from qnas_hw.text import plural

logger = logging.getLogger(__name__)

#: The objective the "most accurate" pick minimises when the study has it.
ACCURACY_OBJECTIVE = "val_error"
#: Objectives that only take whole values: their plot axes get integer ticks.
INTEGER_OBJECTIVES = frozenset({"subcircuits"})


@dataclass(frozen=True)
class GenerationFront:
    """One generation as the console line, summary.md and report.json show it.

    ``index`` is the stored, 0-based generation index; :attr:`number` is the
    1-based number every output prints ("generation 1/5" is the initial
    population, see :func:`~qnas_hw.search.study.generation_number`).
    """

    index: int
    #: size of the front within resolution after this generation (the one every table shows)
    front: int
    #: size of the exact Pareto front after it
    exact_front: int
    #: hypervolume of the exact front after it, in the report's box
    hypervolume: float

    @property
    def number(self) -> int:
        return generation_number(self.index)


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
    #: ``(stored 0-based generation index, hypervolume)``; renderers print :func:`generation_number` of the index
    hypervolumes: list[tuple[int, float]] = field(default_factory=list)
    #: per generation: front sizes and hypervolume (summary.md's and report.json's per-generation table)
    history: list[GenerationFront] = field(default_factory=list)
    #: the study's fixed hypervolume box (None for studies made before boxes were stored: a box of the data)
    box: HypervolumeBox | None = None
    box_source: str = ""
    #: each objective's resolution: values closer than this tie on the front and in the picks
    resolutions: dict[str, Resolution] = field(default_factory=dict)
    #: the exact Pareto front (no resolution), indices into candidates; ``front`` is the one shown
    exact_front: list[int] = field(default_factory=list)
    #: constraint name -> number of candidates that violate it
    violations: dict[str, int] = field(default_factory=dict)
    #: latest stored hardware result per architecture (canonical) and backend, see :func:`latest_hardware`
    hardware: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: where the figures come from (data set, backend, cost model, prices), see :func:`study_context`
    context: StudyContext | None = None
    #: how the SuperCircuit trained (``proxy``, ``trained``, ``epochs``, ``final_loss``, ``chance_loss``); empty
    #: for studies that did not record it
    supercircuit: dict[str, Any] = field(default_factory=dict)
    #: the study's device jobs, predicted against reported (per backend and unit; Braket Tracker dollars), see
    #: :func:`study_job_costs`; empty for a study that ran no device job
    job_costs: list[CostComparison] = field(default_factory=list)

    @property
    def proxy(self) -> str:
        """How ``val_error`` was estimated (``search.proxy``; studies from before it existed inherited weights)."""
        return str((self.config.get("search") or {}).get("proxy") or "inherited")

    def proxy_line(self) -> str:
        """One sentence: the proxy, and for the weight-shared one how its SuperCircuit trained against chance."""
        search = self.config.get("search") or {}
        if self.proxy == "inherited":
            text = f"val_error proxy: inherited SuperCircuit weights + {search.get('finetune_epochs', '?')} epoch(s)"
        elif self.proxy == "halving":
            h = search.get("halving") or {}
            first = (
                f"a first stage by {h['screen'].upper()} (before any training), then "
                if h.get("screen", "none") != "none"
                else ""
            )
            text = (
                f"val_error proxy: successive halving of each generation's new candidates: {first}training from "
                f"scratch to rungs {h.get('rungs')} epochs, the best {h.get('keep')} going on at each stage; only "
                "candidates scored at the last rung can be feasible"
            )
        else:
            epochs = self.proxy.removeprefix("scratch-")
            text = f"val_error proxy: {self.proxy} (each candidate trained from scratch for {epochs} epochs)"
        sc = self.supercircuit
        if sc.get("trained") and sc.get("final_loss") is not None:
            text += (
                f"; SuperCircuit: {sc['epochs']} epochs, final training loss {sc['final_loss']:.3f} against chance "
                f"ln C = {sc['chance_loss']:.3f}"
            )
        elif sc and not sc.get("trained"):
            text += "; SuperCircuit not trained (no candidate inherits from it)"
        return text

    @property
    def outcomes(self) -> OutcomeCounts:
        """Feasible / infeasible / failed counts, the same classification the search's console lines use."""
        return OutcomeCounts.of(self.candidates)

    @property
    def timing(self) -> str | None:
        """``device`` (QPU seconds) or ``wall`` (simulator seconds) for ``runtime_s``; None without it."""
        return self.context.timing if self.context is not None else None

    def label(self, name: str) -> str:
        """An objective's axis label: what it measures and in which unit (see :func:`objective_label`)."""
        return objective_label(name, self.timing)

    def dollars(self, i: int) -> float | None:
        """The provider's price of one evaluation of candidate ``i`` (priced backends only), else None."""
        return candidate_dollars(self.candidates[i])

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
    if mode == "noisy":  # studies from before these settings ran Aer without idle noise
        simulator = "batched trajectories" if search.get("noisy_simulator", "aer") == "trajectories" else "Aer"
        idle = f"idle noise: {search.get('idle_schedule', 'alap')}" if search.get("idle_noise") else "no idle noise"
        where = f"{where} by {simulator}, {idle}"
    samples = search.get("val_samples")
    mitigation = "readout mitigation: mthree" if search.get("readout_mitigation", True) else "no readout mitigation"
    on = "every validation sample" if samples is None else f"up to {plural(samples, 'validation sample')}"
    return (
        f"accuracy: {mode} ({where}; {search.get('shots', '?')} shots per sample on {on}; {mitigation}; "
        f"layout: {hw.get('layout', 'calibrated')})"
    )


def placement(c: CandidateRecord) -> tuple[list[int] | None, float | None]:
    """A candidate's physical qubits and estimated success probability (noisy/device details, else transpilation)."""
    acc = (c.details.get("val_error") or {}).get("accuracy") or {}
    rt = c.details.get("runtime_s") or {}
    layout = acc.get("layout", rt.get("layout", rt.get("physical_qubits")))
    esp = acc.get("esp", rt.get("esp"))
    return (None if layout is None else list(layout)), (None if esp is None else float(esp))


def two_qubit_gates(c: CandidateRecord) -> int:
    """Two-qubit gates of the candidate after transpilation: the device's count (routing SWAPs included) where
    the runtime objective stored it, else the architecture's own (:func:`~qnas_hw.model.circuits.entangling_gates`).
    """
    stored = (c.details.get("runtime_s") or {}).get("n_2q")
    if stored is not None:
        return int(stored)
    from qnas_hw.model.circuits import entangling_gates

    return entangling_gates(c.arch)


def circuit_class(c: CandidateRecord) -> str:
    """``"product state (classically simulable)"`` for a candidate without a two-qubit gate, else ``"entangling"``."""
    from qnas_hw.model.circuits import PRODUCT_STATE

    return PRODUCT_STATE if two_qubit_gates(c) == 0 else "entangling"


def two_qubit_text(c: CandidateRecord) -> str:
    """The tables' cell: the count, marked where it is a product state (the tables' notes say what that means)."""
    n = two_qubit_gates(c)
    return f"{n} (product)" if n == 0 else str(n)


def subcircuit_layouts(c: CandidateRecord) -> list[list[int]]:
    """Each subcircuit's physical qubits for a cut candidate (stored by noisy/device scoring), else ``[]``."""
    acc = (c.details.get("val_error") or {}).get("accuracy") or {}
    return [[int(q) for q in qubits] for qubits in acc.get("subcircuit_layouts") or []]


def n_subcircuits(c: CandidateRecord) -> int | None:
    """How many pieces the candidate's cut plan has (1: runs uncut); None when the study did not plan cuts."""
    value = c.objectives.get("subcircuits", (c.details.get("subcircuits") or {}).get("n_subcircuits"))
    return None if value is None or not math.isfinite(float(value)) else int(value)


def subcircuit_name(k: int) -> str:
    """``A``, ``B``, ... for subcircuit ``k`` of a cut plan (``S27`` past the alphabet)."""
    return chr(ord("A") + k) if k < 26 else f"S{k + 1}"


def layout_text(c: CandidateRecord) -> str:
    """The report's layout cell: the physical qubits the candidate runs on, every subcircuit's for a cut one.

    ``[3,5,8]`` for an uncut candidate, ``A:[24,25] B:[3,5,8]`` for one cut
    into subcircuits (each placed on its own, so the union of their qubits
    says nothing about any one of them).  Studies scored before
    per-subcircuit placements were stored kept only that union, shown as
    such; a cut candidate whose subcircuits were never placed (``accuracy =
    "ideal"``) says so rather than showing the uncut circuit's placement,
    which is not what runs; ``-`` when nothing was placed at all.
    """
    pieces = subcircuit_layouts(c)
    if pieces:
        return " ".join(f"{subcircuit_name(k)}:{_qubit_list(q)}" for k, q in enumerate(pieces))
    n = n_subcircuits(c)
    if n is not None and n > 1:
        acc = (c.details.get("val_error") or {}).get("accuracy") or {}
        if acc.get("cut_experiments") and acc.get("layout"):
            return f"{plural(n, 'subcircuit')}, together on {_qubit_list(acc['layout'])}"
        return f"{plural(n, 'subcircuit')}, placements not stored"
    layout, _ = placement(c)
    return "-" if layout is None else _qubit_list(layout)


def _qubit_list(qubits: Sequence[int]) -> str:
    return "[" + ",".join(str(int(q)) for q in qubits) + "]"


#: What each objective measures and in which unit; ``runtime_s`` depends on the cost model's currency.
_OBJECTIVE_MEANINGS = {
    "val_error": "validation error (fraction)",
    "subcircuits": "subcircuits after cutting (count)",
    "cost_usd": "price per evaluation (USD, provider prices)",
}
_RUNTIME_MEANINGS = {
    "device": "device runtime per evaluation (QPU s, cost model)",
    "wall": "simulator runtime per evaluation (wall s, cost model)",
}
#: Short units for table headers, where the full meaning does not fit.
_UNITS = {"val_error": "fraction", "subcircuits": "count", "cost_usd": "USD"}


def objective_label(name: str, timing: str | None = None) -> str:
    """``val_error`` -> ``validation error (fraction)``: plots and tables say what a number is, not only its key.

    ``runtime_s`` is QPU seconds for device cost models and local wall seconds
    for simulators (``timing``); mixing them up misreads a front by orders of
    magnitude, so the label names the currency.  Unknown names stay as they are.
    """
    if name == "runtime_s":
        return _RUNTIME_MEANINGS.get(timing or "device", _RUNTIME_MEANINGS["device"])
    return _OBJECTIVE_MEANINGS.get(name, name)


def objective_header(name: str, timing: str | None = None) -> str:
    """A table header: the objective's key and its unit (``runtime_s (QPU s)``)."""
    unit = ("wall s" if timing == "wall" else "QPU s") if name == "runtime_s" else _UNITS.get(name)
    return f"{name} ({unit})" if unit else name


def short_name(arch: Architecture) -> str:
    """``iqp|q2|l1|rx-ry-rz|ring|z`` -> ``iqp q2 l1 rx-ry-rz ring``: a plot label that is still the architecture.

    The readout is dropped while ``z`` is the only one; the separators become
    spaces so the label reads as words and wraps nowhere odd.
    """
    parts = arch.canonical().split("|")
    if arch.readout == "z":
        parts = parts[:-1]
    return " ".join(parts)


def candidate_dollars(c: CandidateRecord) -> float | None:
    """The provider's price of one evaluation: the ``cost_usd`` objective, else the runtime objective's figure."""
    if "cost_usd" in c.objectives:
        return float(c.objectives["cost_usd"])
    value = (c.details.get("runtime_s") or {}).get("dollars")
    return None if value is None else float(value)


def _skip_reason(text: str) -> str:
    """A stored "not scored" reason without its per-candidate numbers, so equal causes are counted together."""
    if "cut_max_experiments" in text:
        return "cut plan needs more subexperiments than search.cut_max_experiments"
    if text.startswith("cut plan infeasible"):
        return "cut plan infeasible"
    if text.startswith("screened out before training"):
        return text
    if "mid-circuit" in text:
        return "cut plan needs mid-circuit measurements the backend cannot run"
    return re.sub(r"\d+(\.\d+)?", "N", text)


#: why a successive-halving candidate is off the front (the ``top_rung`` constraint), in the reports' words
_RUNG_REASON = "stopped at a lower halving rung (not scored at the last rung)"


def infeasible_reasons(cands: Sequence[CandidateRecord]) -> dict[str, int]:
    """Why the infeasible candidates are off the front: violated constraints and unscored objectives, with counts.

    A candidate can have several reasons, so the counts may add up to more
    than the number of infeasible candidates.
    """
    out: dict[str, int] = {}
    for c in cands:
        if c.outcome != "infeasible":
            continue
        reasons = [
            _RUNG_REASON if name == "top_rung" else f"constraint {name} violated"
            for name, value in (c.details.get("constraints") or {}).items()
            if name not in ("G", "evaluation") and isinstance(value, int | float) and value > 0
        ]
        for name, value in c.objectives.items():
            if not math.isfinite(float(value)):
                skipped = ((c.details.get(name) or {}).get("accuracy") or {}).get("skipped")
                reasons.append(f"{name} not scored: {_skip_reason(str(skipped))}" if skipped else f"{name} is {value}")
        for reason in reasons or ["marked infeasible (no reason stored)"]:
            out[reason] = out.get(reason, 0) + 1
    return out


# ------------------------------------------------------------------ provenance
@dataclass(frozen=True)
class StudyContext:
    """Where a report's figures come from: the header of summary.md and the titles of the plots.

    Read from the study's configuration and, for the cost model and prices,
    from the calibration files and backend snapshots as they are *now* (the
    study does not store them; the header says so).
    """

    dataset: str | None = None
    backend: str | None = None
    qubit_budget: int | None = None
    #: ``device`` / ``wall``: the currency of ``runtime_s`` (None: no runtime objective)
    timing: str | None = None
    #: one sentence: fitted (with fit quality) or documented prior (with its source); "" when not used
    cost_model: str = ""
    #: the backend's published prices, one sentence; None for backends that do not bill per task/shot
    pricing: str | None = None


def study_context(
    config: dict[str, Any], candidates: Sequence[CandidateRecord], objectives: Sequence[str]
) -> StudyContext:
    """The report's provenance from the study's configuration (nothing is contacted; unknowns stay None)."""
    hw = config.get("hardware") or {}
    data = config.get("data") or {}
    backend_name = hw.get("backend")
    timing = next(
        (str(t) for c in candidates if (t := (c.details.get("runtime_s") or {}).get("timing_source")) is not None),
        None,
    )
    info = _backend_facts(str(backend_name)) if backend_name else {}
    if timing is None and "runtime_s" in objectives:
        timing = info.get("timing")
    if "runtime_s" in objectives and backend_name:
        cost_model = describe_cost_model(str(backend_name))
    elif backend_name:
        cost_model = "not used (runtime_s is not an objective of this study)"
    else:
        cost_model = ""
    budget = hw.get("qubit_budget")
    return StudyContext(
        dataset=data.get("dataset"),
        backend=None if backend_name is None else str(backend_name),
        qubit_budget=None if budget is None else int(budget),
        timing=timing,
        cost_model=cost_model,
        pricing=info.get("pricing"),
    )


def _backend_facts(name: str) -> dict[str, Any]:
    """Provider, timing currency and prices of a backend, without contacting any cloud.

    Real IBM devices (``ibm:``) are not built: reading their repetition delay
    would contact IBM, and the report must work offline.
    """
    if name.startswith("ibm:"):
        return {"provider": "ibm", "timing": "device", "pricing": None}
    from qnas_hw.hardware.backends import BackendError, get_backend

    try:
        backend = get_backend(name)
    except BackendError:
        logger.warning("report: backend %s is not known to this installation; no prices or cost-model source", name)
        return {}
    price = backend.pricing
    pricing = None
    if price is not None:
        pricing = f"${price.per_task_usd:g} per task + ${price.per_shot_usd:g} per shot"
        pricing += f" ({price.source})" if price.source else ""
    return {"provider": backend.provider, "timing": backend.timing_source, "pricing": pricing}


def describe_cost_model(backend_name: str) -> str:
    """Where ``runtime_s`` comes from, in one sentence: a fit (with its held-out quality) or a documented prior.

    The model is the one :meth:`~qnas_hw.hardware.cost.CostModel.for_backend`
    gives today (the study does not store it).  Real IBM devices are not
    built (their repetition delay would be read from IBM): their calibration
    file is read directly, else IBM's documented prior is named.
    """
    from qnas_hw.hardware.backends import BackendError, get_backend
    from qnas_hw.hardware.cost import IBM_PRIOR, CostModel, CostModelError, calibration_path

    try:
        if backend_name.startswith("ibm:"):
            path = calibration_path(backend_name)
            if not path.is_file():
                return str(IBM_PRIOR["source"])
            model = CostModel.load(path, backend_name=backend_name, max_age_days=None)
        else:
            model = CostModel.for_backend(get_backend(backend_name), max_age_days=None)
    except BackendError:
        return f"unknown: backend {backend_name} is not known to this installation"
    except CostModelError as exc:
        return f"could not be loaded: {exc}"
    return cost_model_text(model)


def cost_model_text(model: Any) -> str:
    """One sentence on a :class:`~qnas_hw.hardware.cost.CostModel`: fitted (file, date, held-out fit) or the prior.

    A calibration file of a device snapshot carries a *wall-clock* fit next
    to a device prior; its fit quality is not the device model's and is not
    quoted for it.
    """
    fitted_model = "device_model" if model.timing_source == "device" else "wall_model"
    prov = model.provenance.get(fitted_model) or {}
    if not prov.get("fitted", model.fit is not None):
        return str(prov.get("source") or "prior, not fitted (no source recorded)")
    what = "QPU seconds" if model.timing_source == "device" else "local wall-clock seconds"
    where = model.path.name if model.path is not None else "no file"
    text = f"fitted on measured {what} by `qnas-hw calibrate` ({where}, created {str(model.created)[:10]})"
    fit_of = (model.provenance.get("calibration") or {}).get("fit_of", fitted_model)
    if model.fit is None or fit_of != fitted_model:
        return text + "; no fit quality recorded"
    f = model.fit
    return text + (
        f": held-out R^2 {f.r2_heldout:.2f}, MAPE {100 * f.mape_heldout:.1f}% on {f.n_heldout} held-out runs "
        f"({f.n_train} used for the fit)"
    )


def _as_generation(g: Any) -> GenerationRecord:
    return GenerationRecord(
        index=int(g.index),
        population=list(g.population or []),
        front=list(g.front or []),
        hypervolume=None if g.hypervolume is None else float(g.hypervolume),
        finished_at=str(getattr(g, "finished_at", "") or ""),
    )


#: Objectives measured in money or time: log-scaled in the knee and in a data-derived box.
_LOG_OBJECTIVES = frozenset({"runtime_s", "cost_usd"})


def data_box(records: Sequence[CandidateRecord], names: Sequence[str]) -> HypervolumeBox:
    """A box from the usable records themselves (studies made before boxes were stored; knee normalisation).

    Unlike a study's fixed box it moves when an outlier arrives, so it is
    labelled as such wherever it is reported.
    """
    usable = [r for r in records if r.usable]
    F = np.array([r.values(names) for r in usable], dtype=float).reshape(len(usable), len(names))
    axes = []
    for j, n in enumerate(names):
        col = F[:, j] if len(F) else np.array([0.0, 1.0])
        log = n in _LOG_OBJECTIVES and bool(len(col)) and float(col.min()) > 0
        lo, hi = float(col.min()), float(col.max())
        if log:
            hi = hi if hi > lo else lo * 10.0
        elif hi <= lo:
            hi = lo + 1.0
        axes.append(Axis(n, lo, hi, log=log))
    return HypervolumeBox(tuple(axes))


def hypervolume_history_from_records(
    candidates: Sequence[Any],
    generations: Sequence[Any],
    objective_names: Sequence[str],
    box: HypervolumeBox | None = None,
) -> list[tuple[int, float]]:
    """``[(generation, hypervolume)]``: the archive front after each generation, in one box.

    Exactly what the search stores per generation (:func:`~qnas_hw.search.pareto.front_hypervolume`
    of every record first evaluated up to that generation) when ``box`` is
    the study's stored box, so the log, the study and the report agree.
    Without it, the box of all usable records (a moving frame, see
    :func:`data_box`).  Non-decreasing by construction.
    """
    names = list(objective_names)
    cands = latest_per_arch(candidates)
    if not cands or not names:
        return []
    box = box if box is not None else data_box(cands, names)
    indices = sorted({int(g.index) for g in generations} | {c.generation for c in cands})
    history = []
    for g in indices:
        upto = [c for c in cands if c.generation <= g]
        value = front_hypervolume(upto, archive_front(upto, names), names, box)
        history.append((g, 0.0 if value is None else value))
    return history


def hypervolume_history(study: Study) -> list[tuple[int, float]]:
    """Per-generation hypervolume of ``study`` in its stored box (see :func:`hypervolume_history_from_records`)."""
    stored = study.meta_json(HV_BOX_META)
    box = HypervolumeBox.from_dict(stored) if stored is not None else None
    return hypervolume_history_from_records(study.candidates(), study.generations(), study.objective_names, box)


def analyze(
    candidates: Sequence[Any],
    generations: Sequence[Any],
    objective_names: Sequence[str],
    config: dict[str, Any] | None = None,
    hardware: Sequence[dict[str, Any]] = (),
    box: HypervolumeBox | None = None,
) -> ReportData:
    """Front, knee, most-accurate pick and hypervolume history from study records.

    ``candidates``/``generations`` are the study's ``CandidateRecord`` /
    ``GenerationRecord`` objects (anything with the same attributes);
    ``hardware`` the stored hardware results, newest first (see
    :func:`stored_hardware_results`); ``box`` the study's hypervolume box.

    The front shown is :func:`~qnas_hw.search.fronts.study_front`'s, the one
    the search's console line, the study's generation records and ``hw-eval
    --which front`` use: candidates that differ from a better one by less
    than each objective's resolution are ties, and ties go to fewer qubits,
    then fewer subcircuits, then lower cost.  The most accurate pick is the
    preferred candidate among those within resolution of the best validation
    error; the knee is the front's best compromise
    (:func:`~qnas_hw.search.pareto.knee_point`) with runtime and dollars on a
    log scale.
    """
    names = list(objective_names)
    if not names:
        raise ValueError("the study has no objective names; was it created by `qnas-hw search`?")
    fronts = study_front(candidates, names)
    cands = fronts.candidates
    gens = [_as_generation(g) for g in generations]
    data = ReportData(
        objective_names=names,
        candidates=cands,
        generations=gens,
        config=dict(config or {}),
        hardware=latest_hardware(hardware),
    )
    data.box = box.for_names(names) if box is not None else data_box(cands, names)
    data.box_source = "fixed when the study was created" if box is not None else "range of this study's candidates"
    data.resolutions = fronts.resolutions
    data.violations = _violations(cands)
    data.context = study_context(data.config, cands, names)
    data.exact_front, data.front = list(fronts.exact), list(fronts.shown)
    if data.front:
        F = data.matrix()
        Z = data.box.normalize(F[data.front])
        data.knee = data.front[knee_point(Z)]
        acc_col = names.index(ACCURACY_OBJECTIVE) if ACCURACY_OBJECTIVE in names else 0
        res = data.resolutions[names[acc_col]]
        data.most_accurate = best_within_resolution(F, data.front, acc_col, res, preference(cands, names))
    data.hypervolumes = hypervolume_history_from_records(cands, gens, names, box)
    data.history = generation_history(cands, names, data.hypervolumes)
    return data


def generation_history(
    candidates: Sequence[Any], names: Sequence[str], hypervolumes: Sequence[tuple[int, float]]
) -> list[GenerationFront]:
    """Each generation's front sizes (within resolution and exact) next to its hypervolume.

    The sizes are :func:`~qnas_hw.search.fronts.study_front` of the records
    first evaluated up to that generation: what the search's console line
    said after it, so summary.md's per-generation table repeats the console.
    """
    out = []
    for index, hv in hypervolumes:
        fronts = study_front(candidates, names, upto=index)
        out.append(GenerationFront(index, len(fronts.shown), len(fronts.exact), hv))
    return out


def _violations(cands: list[CandidateRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in cands:
        for name, value in (c.details.get("constraints") or {}).items():
            if name != "G" and isinstance(value, int | float) and value > 0:
                out[name] = out.get(name, 0) + 1
    return out


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
    stored = study.meta_json(HV_BOX_META)
    data = analyze(
        study.candidates(),
        study.generations(),
        study.objective_names,
        study.config,
        hardware=stored_hardware_results(study),
        box=HypervolumeBox.from_dict(stored) if stored is not None else None,
    )
    data.supercircuit = dict((study.meta_json("supercircuit") or {}).get("training") or {})
    data.job_costs = study_job_costs(study)
    return data


def study_job_costs(study: Study) -> list[CostComparison]:
    """Every finished device job of the study (search, hw-eval, predict), predicted against reported.

    Read-only, as the hardware results are: a study that never ran a job
    reads as an empty ledger, and reporting adds no table to it.
    """
    ledger = JobLedger(study, read_only=True)
    try:
        return compare_costs(job_costs(ledger))
    finally:
        ledger.close()


def val_error_se(c: CandidateRecord) -> float | None:
    """Standard error of a candidate's ``val_error``: the stored one, or (older studies) the binomial over the samples
    it was scored on.

    Under ``noisy`` and ``device`` each sample's correctness is itself random (finite shots), and the binomial
    over the scored samples already holds that variance: sqrt(e (1 - e) / n).
    """
    stored = (c.details.get(ACCURACY_OBJECTIVE) or {}).get("val_error_se")
    if stored is not None:  # stored beside the score since the proxy release
        return float(stored)
    e = c.objectives.get(ACCURACY_OBJECTIVE)
    n = (c.details.get(ACCURACY_OBJECTIVE) or {}).get("n_scored")
    if e is None or not n or not math.isfinite(float(e)):
        return None
    from qnas_hw.search.evaluation import binomial_se  # lazy: that module imports torch

    return binomial_se(1.0 - float(e), int(n))  # the same figure: sqrt(e (1 - e) / n)
