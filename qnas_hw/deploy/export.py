"""A study's pick written as a self-contained bundle (see :mod:`qnas_hw.deploy.bundle` for the files).

Why re-transpile instead of storing circuits during the search: the search
keeps figures, not circuits.  What it ran is rebuilt here with the search's
own objects (:func:`~qnas_hw.search.building.make_hardware`: the study's
backend, transpiler settings and seed, cut planner; a
:class:`~qnas_hw.hardware.execution.ProgramBuilder` with the study's shots),
which are deterministic, and the result is checked against what the study
stored for the candidate (placement and estimated success probability).  A
mismatch (another qiskit, a changed snapshot) is refused rather than
exported as if it were the scored circuit.

Weights: by default (``weights="auto"``) the retrain of the pick that
``qnas-hw train --study`` keeps in ``<run>/trained/`` when there is one (its
validation and test figures go in the manifest), else the search's
fine-tuned weights (``<run>/weights/``, validation figures only: the search
never reads the test split).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qnas_hw.atomic_write import nearest_existing
from qnas_hw.deploy.bundle import (
    CIRCUIT_QASM3,
    CIRCUIT_QPY,
    CLASSICAL,
    CUT_PLAN,
    CUT_QPY,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    METADATA_KEY,
    OBSERVABLES,
    QASM_INPUT,
    seal,
)

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

    from qnas_hw.hardware.execution import CandidateProgram
    from qnas_hw.model.space import Architecture
    from qnas_hw.search.study import CandidateRecord, Study

log = logging.getLogger(__name__)

PICKS = ("knee", "most-accurate")
WEIGHT_SOURCES = ("auto", "search", "trained")
#: versions recorded in the manifest (what made the bundle; a reader compares them with its own)
VERSIONED = (
    "qnas-hw",
    "qiskit",
    "qiskit-aer",
    "qiskit-ibm-runtime",
    "qiskit-addon-cutting",
    "amazon-braket-sdk",
    "mthree",
    "torch",
    "numpy",
)


class ExportError(ValueError):
    """A pick that cannot be exported as asked; the message says why and what to do instead."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest: dict[str, Any]


# ------------------------------------------------------------------ the pick
def resolve_pick(study: Study, pick: str) -> tuple[CandidateRecord, str]:
    """The candidate record of ``knee``, ``most-accurate`` (the report's picks) or a canonical architecture."""
    from qnas_hw.model.space import Architecture, SpaceError
    from qnas_hw.reports.data import study_report_data

    if pick in PICKS:
        data = study_report_data(study)
        index = data.knee if pick == "knee" else data.most_accurate
        if index is None:
            raise ExportError(
                f"{study.path} has no {pick} pick yet (no feasible candidate on its front); run or resume the search"
            )
        return data.candidates[index], pick
    try:
        arch = Architecture.parse(pick)
    except SpaceError as exc:
        raise ExportError(f"--pick must be knee, most-accurate or an architecture: {exc}") from None
    records = [c for c in study.candidates() if c.arch.canonical() == arch.canonical()]
    if not records:
        raise ExportError(f"{arch.canonical()} was never evaluated in {study.path}; pick one of its candidates")
    record = records[-1]
    if not record.usable:
        raise ExportError(
            f"{arch.canonical()} is {record.outcome} in {study.path} (no usable objectives), so there is nothing "
            "the search measured to export; pick a feasible candidate"
        )
    return record, "architecture"


# ------------------------------------------------------------------ weights
def _trained_result(run_dir: Path, arch: Architecture, config: Any) -> tuple[Path, dict[str, Any]] | None:
    """``qnas-hw train --study``'s kept retrain of ``arch`` (figures JSON and weights), if it is there and fits."""
    folder = run_dir / "trained"
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.json")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(summary, dict) or summary.get("architecture") != arch.canonical():
            continue
        cfg = summary.get("config") or {}
        same = (cfg.get("data") or {}).get("dataset") == config.data.dataset and (cfg.get("model") or {}).get(
            "frontend"
        ) == config.model.frontend
        weights = path.with_suffix(".pt")
        if same and weights.is_file():
            return weights, summary
        log.warning("ignoring %s: another data set or front-end than the study's, or no weights beside it", path)
    return None


def _load_model(study: Study, config: Any, arch: Architecture, weights: str) -> tuple[Any, dict[str, Any]]:
    """The model to export and where its weights come from (with the figures measured for those weights)."""
    from qnas_hw.atomic_write import read_torch
    from qnas_hw.model.hqnn import HQNN
    from qnas_hw.search.building import _build_accuracy_objective, _use_threads, load_splits
    from qnas_hw.search.hw_eval import _candidate_model, _verify_supercircuit

    _use_threads(config)
    run_dir = study.path.parent
    trained = _trained_result(run_dir, arch, config) if weights in ("auto", "trained") else None
    if weights == "trained" and trained is None:
        raise ExportError(
            f"no retrain of {arch.canonical()} in {run_dir / 'trained'}; run `qnas-hw train --study {study.path} "
            f"--arch '{arch.canonical()}'` first, or export the search's weights (--weights search)"
        )
    if trained is not None:
        path, summary = trained
        splits = load_splits(config)
        model = HQNN(
            arch, tuple(splits.input_shape), splits.n_classes, frontend=config.model.frontend, seed=config.seed
        )
        model.load_state_dict(read_torch(path, f"retrained weights of {arch.canonical()}"))  # type: ignore[arg-type]
        model.eval()
        return model, {"source": "train", "file": str(path), "summary": summary, "splits": splits}
    splits = load_splits(config)
    objective = _build_accuracy_objective(config, run_dir, False, None, splits)
    _verify_supercircuit(study, objective.supercircuit.fingerprint())
    model = _candidate_model(study, objective, arch)
    return model, {"source": "search", "file": str(run_dir / "weights" / f"{arch.key()}.pt"), "splits": splits}


def figures(record: CandidateRecord, weights: dict[str, Any]) -> dict[str, Any]:
    """Validation figures of the exported weights, and test figures only where ``train`` measured them."""
    if weights["source"] == "train":
        s = weights["summary"]
        test: dict[str, Any] = {"accuracy": s.get("test_acc"), "accuracy_mode": s.get("test_accuracy_mode", "ideal")}
        noisy = s.get("noisy_test")
        if noisy:
            test["noisy"] = {k: noisy.get(k) for k in ("test_acc", "backend", "samples", "shots", "mitigation")}
        return {
            "validation": {
                "accuracy": s.get("best_val_acc"),
                "accuracy_mode": "ideal",
                "best_epoch": s.get("best_epoch"),
            },
            "test": test,
            "measured_by": "qnas-hw train",
        }
    ve = record.details.get("val_error") or {}
    acc = ve.get("accuracy") or {}
    return {
        "validation": {
            "accuracy": ve.get("val_acc"),
            "accuracy_mode": acc.get("accuracy_mode", "ideal"),
            "samples": ve.get("n_scored"),
            "exact_accuracy": ve.get("ideal_val_acc", ve.get("val_acc")),
        },
        "test": None,
        "measured_by": "qnas-hw search (the test split is never read by a search)",
    }


# ------------------------------------------------------------------ circuits
def bind_weights(circuit: QuantumCircuit, weights: Any) -> QuantumCircuit:
    """``circuit`` with every ``w[i]`` bound to the trained value; the inputs ``x`` stay parameters."""
    import numpy as np

    from qnas_hw.model.circuits import WEIGHT_NAME

    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    values = {p: float(w[p.index]) for p in circuit.parameters if p.vector.name == WEIGHT_NAME}
    return circuit.assign_parameters(values) if values else circuit.copy()


def _with_physical_layout(circuit: QuantumCircuit) -> QuantumCircuit:
    """Mark a placed circuit's qubits as physical, so OpenQASM 3 names them ``$p`` (what a device runs)."""
    from qiskit.transpiler import Layout, TranspileLayout

    if circuit.layout is None:
        layout = Layout.generate_trivial_layout(*circuit.qregs)
        # QuantumCircuit has no public layout setter; this is the attribute transpile() itself fills
        circuit._layout = TranspileLayout(
            initial_layout=layout,
            input_qubit_mapping={q: i for i, q in enumerate(circuit.qubits)},
            _input_qubit_count=circuit.num_qubits,
            _output_qubit_list=list(circuit.qubits),
        )
    return circuit


def _tag(circuit: QuantumCircuit, arch: Architecture, backend: str, kind: str, **extra: Any) -> QuantumCircuit:
    from qnas_hw.hardware.transpilation import active_qubits

    circuit.metadata = {
        "architecture": arch.canonical(),
        METADATA_KEY: {
            "architecture": arch.canonical(),
            "backend": backend,
            "kind": kind,
            "physical_qubits": list(active_qubits(circuit)),
            **extra,
        },
    }
    return circuit


def qasm3_text(circuit: QuantumCircuit) -> str:
    """OpenQASM 3 of ``circuit`` with input ``x[i]`` declared as ``input float[64] x_<i>``."""
    from qiskit import qasm3
    from qiskit.circuit import Parameter

    from qnas_hw.model.circuits import INPUT_NAME

    renamed = circuit.assign_parameters(
        {p: Parameter(QASM_INPUT.format(p.index)) for p in circuit.parameters if p.vector.name == INPUT_NAME}
    )
    return qasm3.dumps(renamed)


def observables_of(measured: tuple[int | None, ...], n_qubits: int) -> list[dict[str, Any]]:
    """Output ``q`` is ``<Z>`` of the physical qubit measured into clbit ``q``, written as a full-width label too."""
    out = []
    for q, p in enumerate(measured):
        if p is None:  # pragma: no cover - measure_all writes every clbit
            raise ExportError(f"output {q} is never measured in the placed circuit")
        label = ["I"] * n_qubits
        label[n_qubits - 1 - int(p)] = "Z"
        out.append({"output": q, "physical_qubit": int(p), "pauli": "Z", "label": "".join(label)})
    return out


def _reference_circuit(program: CandidateProgram, transpiler: Any) -> Any:
    """The placed uncut circuit: the program's own for an uncut candidate; for a cut one, the same transpiler's
    placement of the whole circuit when the device holds it (exact evaluation, estimators), else None."""
    if program.cut is None:
        return program.runs[0].record
    arch = program.arch
    if arch.n_qubits > transpiler.backend.num_qubits:
        return None
    return transpiler.transpile(arch)


def _cut_plan(program: CandidateProgram, planner: Any, backend: Any, shots: int, cut_shots: str) -> dict[str, Any]:
    """What ``predict`` needs to run and reconstruct a cut candidate, and what a reader needs to check it."""
    cut = program.cut
    assert cut is not None
    runs = []
    for run in program.runs:
        label, k = run.label.rsplit(":", 1)
        match = next(lab for lab in cut.experiments if str(lab) == label)
        runs.append(
            {
                "label": label,
                "experiment": int(k),
                "term": cut.term_of(match, int(k)),
                "shots": run.shots,
                "measured_qubits": list(run.measured_qubits),
            }
        )
    return {
        "planner": {"qubit_budget": planner.qubit_budget, "seed": planner.seed, "max_qubits": backend.num_qubits},
        "plan": cut.plan.to_dict(),
        "shots": shots,
        "cut_shots": cut_shots,
        "labels": [str(lab) for lab in cut.labels],
        "subobservables": {str(lab): [p.to_label() for p in obs] for lab, obs in cut.subobservables.items()},
        "coefficients": [[float(c), getattr(w, "name", str(w))] for c, w in cut.addon_coefficients],
        "term_map_ids": [list(m) for m in cut.term_map_ids],
        "input_dependent_cuts": sum(op is not None for op in cut.cut_ops),
        "runs": runs,
        "note": (
            "coefficients are the QPD term coefficients of the plan; where input_dependent_cuts > 0 (a cut "
            "RZZ(x_i x_j)) they change per sample and predict recomputes them from the inputs"
        ),
    }


# ------------------------------------------------------------------ facts
def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def calibration_date(backend: Any) -> str | None:
    """When the backend's calibration data was taken: a Braket snapshot's retrieval date, an IBM snapshot's (or
    device's) ``last_update_date``; None for simulators without calibration data."""
    retrieved = backend.describe().get("retrieved") if backend.provider == "braket" else None
    if retrieved:
        return str(retrieved)
    device = getattr(backend, "_device", None)  # the qiskit BackendV2 behind an IBM adapter
    try:
        props = device.properties() if device is not None and hasattr(device, "properties") else None
    except Exception as exc:  # a real device's properties need the service; the export goes on without the date
        log.warning("could not read %s's calibration date: %s", backend.name, exc)
        return None
    date = getattr(props, "last_update_date", None)
    return None if date is None else date.isoformat() if hasattr(date, "isoformat") else str(date)


def _check_scored_placement(program: CandidateProgram, record: CandidateRecord) -> None:
    """Refuse when the rebuilt placement is not the one the study stored for the candidate (if it stored one)."""
    acc = (record.details.get("val_error") or {}).get("accuracy") or {}
    if "layout" not in acc:
        return
    now = program.details()
    if list(now.get("layout") or []) != list(acc.get("layout") or []) or (
        acc.get("esp") is not None and now.get("esp") is not None and abs(float(now["esp"]) - float(acc["esp"])) > 1e-9
    ):
        raise ExportError(
            f"{program.arch.canonical()} is placed on {now.get('layout')} (ESP {now.get('esp')}) now, but the search "
            f"scored it on {acc.get('layout')} (ESP {acc.get('esp')}): the transpiler or the backend snapshot "
            "changed since the search; export with the qiskit and qiskit-ibm-runtime versions the study was made with"
        )


# ------------------------------------------------------------------ export
def export_pick(
    study_path: Path | str, pick: str, out: Path | str, *, weights: str = "auto", force: bool = False
) -> ExportResult:
    """Write the bundle of ``pick`` (``knee``, ``most-accurate`` or an architecture) of a study to ``out``.

    The study is only read.  ``out`` must not exist, be empty, or (with
    ``force``) be an earlier bundle, replaced only once the new one is
    complete.  Raises :class:`ExportError` for a pick that cannot be exported.
    """
    from qnas_hw.config import stored_config
    from qnas_hw.search.study import Study

    if weights not in WEIGHT_SOURCES:
        raise ExportError(f"--weights must be one of {', '.join(WEIGHT_SOURCES)}, got {weights!r}")
    out = Path(out)
    _check_target(out, force)
    with Study.open(study_path) as study:
        config = stored_config(study.config, source=f"configuration stored in {study.path}")
        record, pick_kind = resolve_pick(study, pick)
        model, source = _load_model(study, config, record.arch, weights)
        manifest = _write(out, study, config, record, pick_kind, model, source)
    log.info("exported %s of %s to %s", record.arch.canonical(), study_path, out)
    return ExportResult(out, manifest)


def _check_target(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that cannot take a bundle before the study's model is loaded (seconds to minutes)."""
    existing = nearest_existing(out.parent)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write the bundle to {out} ({existing} is not writable); pass another --out")
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory; pass another --out")
    if any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise ExportError(f"{out} is a non-empty directory that is not a bundle; pass an empty or new --out")
        if not force:
            raise ExportError(f"{out} already holds a bundle; pass --force to replace it, or another --out")


def _write(
    out: Path, study: Study, config: Any, record: CandidateRecord, pick: str, model: Any, source: dict[str, Any]
) -> dict[str, Any]:
    """Build every file in a temporary directory beside ``out``, seal it, then move it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = _build(tmp, study, config, record, pick, model, source)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _build(
    folder: Path, study: Study, config: Any, record: CandidateRecord, pick: str, model: Any, source: dict[str, Any]
) -> dict[str, Any]:
    import torch
    from qiskit import qpy

    from qnas_hw.atomic_write import atomic_write_text
    from qnas_hw.hardware.backends import get_backend
    from qnas_hw.hardware.execution import ProgramBuilder
    from qnas_hw.hardware.transpilation import gate_counts
    from qnas_hw.model.circuits import PRODUCT_STATE, build_circuit, n_input_params
    from qnas_hw.search.building import make_hardware

    arch = record.arch
    backend = get_backend(config.hardware.backend)
    hw = make_hardware(config, backend)
    assert hw is not None  # a backend was given
    s = config.search
    builder = ProgramBuilder(
        backend, hw.transpiler, hw.planner, s.shots, s.cut_shots, max_cut_experiments=s.cut_max_experiments
    )
    reason = builder.unrunnable(arch)
    if reason is not None:
        raise ExportError(f"{arch.canonical()} cannot run on {backend.name}: {reason}")
    program = builder.build(arch)
    _check_scored_placement(program, record)
    weights = model.quantum_weights().detach().cpu().double().numpy()

    ref = _reference_circuit(program, hw.transpiler)
    if ref is not None:
        from qnas_hw.hardware.execution import measured_qubits

        measured = measured_qubits(ref.circuit)
        circuit = bind_weights(ref.circuit, weights).remove_final_measurements(inplace=False)
        placed = True
    else:  # a cut candidate wider than the device: the logical circuit (only the cut plan runs on the device)
        circuit = bind_weights(build_circuit(arch), weights)
        measured = tuple(range(arch.n_qubits))
        placed = False
    circuit = _tag(_with_physical_layout(circuit), arch, backend.name, "circuit", placed=placed)
    observables = observables_of(measured, circuit.num_qubits)
    with open(folder / CIRCUIT_QPY, "wb") as fh:
        qpy.dump(circuit, fh)
    atomic_write_text(folder / CIRCUIT_QASM3, qasm3_text(circuit))
    atomic_write_text(folder / OBSERVABLES, json.dumps({"observables": observables}, indent=1) + "\n")
    state = {f"frontend.{k}": v for k, v in model.frontend.state_dict().items()}
    state.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
    torch.save(state, folder / CLASSICAL)
    files = [CIRCUIT_QPY, CIRCUIT_QASM3, OBSERVABLES, CLASSICAL]

    cut = None
    if program.cut is not None:
        (folder / CUT_QPY).parent.mkdir()
        subs = [
            _tag(bind_weights(run.circuit, weights), arch, backend.name, "subexperiment", label=run.label)
            for run in program.runs
        ]
        with open(folder / CUT_QPY, "wb") as fh:
            qpy.dump(subs, fh)
        cut_plan = _cut_plan(program, hw.planner, backend, s.shots, s.cut_shots)
        atomic_write_text(folder / CUT_PLAN, json.dumps(cut_plan, indent=1, default=str) + "\n")
        files += [CUT_QPY, CUT_PLAN]
        cut = {
            "subexperiments": len(subs),
            "subcircuits": len(program.cut.labels),
            "sampling_overhead": program.cut.plan.sampling_overhead,
            "qubit_budget": hw.planner.qubit_budget,
            "subcircuit_layouts": program.subcircuit_layouts(),
        }

    n1, n2 = gate_counts(circuit)
    details = program.details()
    splits = source["splits"]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "architecture": arch.canonical(),
        "architecture_key": arch.key(),
        "pick": pick,
        "study": {"path": str(study.path), "objectives": dict(record.objectives), "generation": record.generation},
        "backend": {
            "name": backend.name,
            "provider": backend.provider,
            "num_qubits": backend.num_qubits,
            "calibration_date": calibration_date(backend),
            "basis_gates": backend.basis_gates,
        },
        "placement": {
            "layout": [ob["physical_qubit"] for ob in observables] if placed else None,
            "physical_qubits": sorted({int(q) for q in details.get("layout") or []}),
            "esp": details.get("esp"),
            "optimization_level": config.hardware.optimization_level,
            "layout_method": config.hardware.layout,
            "transpiler_seed": config.seed,
        },
        "execution": {
            "shots": int(s.shots),
            "readout_mitigation": "mthree" if s.readout_mitigation else "none",
            "accuracy_mode": s.accuracy,
            "cut_shots": s.cut_shots,
            "circuits_per_sample": program.circuits_per_row,
            "shots_per_sample": program.shots_per_row,
        },
        "figures": figures(record, source),
        "circuit": {
            "qubits": arch.n_qubits,
            "device_qubits": circuit.num_qubits,
            "placed": placed,
            "two_qubit_gates": n2,
            "one_qubit_gates": n1,
            "depth": int(circuit.depth()),
            "entangling": n2 > 0,
            "note": PRODUCT_STATE if n2 == 0 else None,
            "inputs": {"name": "x", "length": n_input_params(arch), "qasm3": QASM_INPUT.format("<i>")},
            "cut": cut,
        },
        "model": {
            "frontend": config.model.frontend,
            "input_shape": list(splits.input_shape),
            "n_classes": int(splits.n_classes),
            "embedding": arch.embedding,
            "n_features": int(model.n_features),
        },
        "data": {
            "dataset": config.data.dataset,
            "val_fraction": config.data.val_fraction,
            "seed": config.seed,
            "limit_train": config.data.limit_train,
        },
        "weights": {"source": source["source"], "file": source["file"]},
        "versions": versions(),
    }
    return seal(folder, manifest, files)
