"""``qnas-hw export`` / ``inspect`` / ``predict`` and ``qnas_hw.load_export``: a pick leaves the study and still
computes what the project computed.

Reference everywhere: the project's own model of the pick (the fine-tuned
candidate the search scored, :func:`qnas_hw.search.evaluation.load_candidate`),
its circuit simulated by the project's torch statevector in float64.  Each
interoperability path (a fresh process reading the QPY file with qiskit and
Aer only, OpenQASM 3 through ``qiskit_qasm3_import``, Amazon Braket's local
simulator, qiskit-machine-learning's ``EstimatorQNN``) must give the same
``<Z>`` (exactly, or within shot noise) and the same predictions.  Nothing is
submitted to a cloud.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from qnas_hw.cli import app

runner = CliRunner()
#: the tiny study's device: 5 qubits, so full-width operators and statevectors stay small
BACKEND = "fake_quito"


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiny_search_toml: str) -> Path:
    """conftest's tiny search (Iris, 2-3 qubits, qubit budget 2, noisy scoring) on fake_quito."""
    tmp = tmp_path_factory.mktemp("export")
    cfg = tmp / "tiny.toml"
    # the inherited proxy, whose knee here is an uncut 2-qubit circuit (the cut bundle has its own test below)
    cfg.write_text(tiny_search_toml.replace("[search]\n", '[search]\nproxy = "inherited"\n'))
    res = _invoke("search", "--config", str(cfg), "--backend", BACKEND, "--out", str(tmp / "run"), "--no-progress")
    assert res.exit_code == 0, res.output
    return tmp / "run" / "study.sqlite"


@pytest.fixture(scope="module")
def bundle(study: Path) -> Path:
    out = study.parent.parent / "knee"
    res = _invoke("export", str(study), "--pick", "knee", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert f"bundle: {out}" in res.output
    return out


@pytest.fixture(scope="module")
def reference(study: Path, bundle: Path) -> dict:
    """The project's model of the pick and 50 inputs: its float64 ``<Z>`` and its predictions."""
    from qnas_hw.config import config_from_dict
    from qnas_hw.model.circuits import circuit_inputs
    from qnas_hw.model.simulator import QuantumLayer
    from qnas_hw.model.space import Architecture
    from qnas_hw.search.building import _build_accuracy_objective, load_splits
    from qnas_hw.search.evaluation import load_candidate
    from qnas_hw.search.study import Study

    with Study.open(study) as s:
        config = config_from_dict(s.config)
    splits = load_splits(config)
    objective = _build_accuracy_objective(config, study.parent, False, None, splits)
    arch = Architecture.parse(json.loads((bundle / "manifest.json").read_text())["architecture"])
    model = load_candidate(objective.supercircuit, arch, objective.weights_dir)
    X = torch.cat([splits.train.tensors[0], splits.test.tensors[0]])[:50]
    exact = QuantumLayer(arch, dtype=torch.float64)
    with torch.no_grad():
        exact.weight.copy_(model.quantum.weight.double())
        features = model.encode(X).double()
        z = exact(features).numpy()
        predictions = model(X).argmax(dim=-1).numpy()
    return {
        "arch": arch,
        "model": model,
        "X": X,
        "y": torch.cat([splits.train.tensors[1], splits.test.tensors[1]])[:50].numpy(),
        "x": circuit_inputs(arch, features.numpy()),
        "z": z,
        "predictions": predictions,
        "test": splits.test.tensors,
    }


# ------------------------------------------------------------------ the bundle
def test_bundle_holds_the_placed_circuit_weights_and_a_complete_manifest(study: Path, bundle: Path) -> None:
    from qnas_hw.reports.data import study_report_data
    from qnas_hw.search.study import Study

    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert files == ["circuit.qasm3", "circuit.qpy", "classical.pt", "manifest.json", "observables.json"]
    m = json.loads((bundle / "manifest.json").read_text())
    with Study.open(study) as s:
        data = study_report_data(s)
        knee = data.candidates[data.knee]
    assert m["architecture"] == knee.arch.canonical() and m["pick"] == "knee"
    acc = knee.details["val_error"]["accuracy"]
    assert m["backend"]["name"] == BACKEND and m["backend"]["calibration_date"].startswith("20")
    assert m["placement"]["physical_qubits"] == acc["layout"] and m["placement"]["esp"] == pytest.approx(acc["esp"])
    assert m["execution"] == {**m["execution"], "shots": 1024, "readout_mitigation": "mthree", "accuracy_mode": "noisy"}
    assert m["figures"]["validation"]["accuracy"] == pytest.approx(knee.details["val_error"]["val_acc"])
    assert m["figures"]["test"] is None  # the search never reads the test split; `train` did not run
    assert m["circuit"]["qubits"] == knee.arch.n_qubits
    assert (m["circuit"]["note"] == "product state (classically simulable)") == (m["circuit"]["two_qubit_gates"] == 0)
    assert {"qiskit", "torch", "qnas-hw", "qiskit-aer"} <= set(m["versions"])
    assert set(m["files"]) == set(files) - {"manifest.json"}
    text = (bundle / "circuit.qasm3").read_text()
    assert "input float[64] x_0;" in text and "$" in text  # named inputs, physical qubits


def test_inspect_verifies_and_describes_a_bundle(bundle: Path) -> None:
    res = _invoke("inspect", str(bundle))
    assert res.exit_code == 0, res.output
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["architecture"] in res.output and "checksums verified" in res.output and BACKEND in res.output


def test_load_export_gives_the_project_models_logits(bundle: Path, reference: dict) -> None:
    import qnas_hw

    model = qnas_hw.load_export(bundle)
    with torch.no_grad():
        z = model.quantum(model.encode(reference["X"]).double()).numpy()
        logits = model(reference["X"])
        expected = reference["model"](reference["X"])
    assert np.abs(z - reference["z"]).max() < 1e-6
    assert torch.allclose(logits, expected, atol=1e-5)
    assert np.array_equal(logits.argmax(dim=-1).numpy(), reference["predictions"])


# ------------------------------------------------------------------ interoperability
_FRESH_PROCESS = """
import json, sys
import numpy as np
from qiskit import qpy
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer.primitives import EstimatorV2

bundle, inputs, out = sys.argv[1:4]
with open(f"{bundle}/circuit.qpy", "rb") as fh:
    (circuit,) = qpy.load(fh)
obs = json.load(open(f"{bundle}/observables.json"))["observables"]
x = np.load(inputs)
values = x[:, [p.index for p in circuit.parameters]]  # every parameter is an element of the vector x
estimator = EstimatorV2(options={"default_precision": 0.0, "backend_options": {"method": "statevector"}})
result = estimator.run([(circuit, [[SparsePauliOp(o["label"])] for o in obs], values)]).result()[0]
np.save(out, np.asarray(result.data.evs).T)
print(json.dumps({"vector": sorted({p.vector.name for p in circuit.parameters}), "rows": len(values)}))
"""


def test_qpy_in_a_fresh_process_on_noiseless_aer_matches_the_project(bundle: Path, reference: dict, tmp_path) -> None:
    """Only qiskit, qiskit-aer and numpy in the child: the file alone carries the circuit and its weights."""
    np.save(tmp_path / "x.npy", reference["x"])
    res = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(bundle), str(tmp_path / "x.npy"), str(tmp_path / "z.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info == {"vector": ["x"], "rows": 50}
    z = np.load(tmp_path / "z.npy")
    assert np.abs(z - reference["z"]).max() < 1e-6
    head = reference["model"].head
    with torch.no_grad():
        predictions = head(torch.as_tensor(z, dtype=torch.float32)).argmax(dim=-1).numpy()
    assert np.array_equal(predictions, reference["predictions"])


def _on_physical_qubits(imported, width: int):
    """An OpenQASM-3-imported circuit (hardware qubits ``$p``) as a circuit of ``width`` qubits indexed by p."""
    from qiskit import QuantumCircuit

    physical = {imported.find_bit(q).index: p for p, q in imported.layout.initial_layout.get_physical_bits().items()}
    out = QuantumCircuit(width)
    out.compose(imported, qubits=[physical[i] for i in range(imported.num_qubits)], inplace=True)
    return out


def test_openqasm3_parses_to_the_same_operator_as_the_qpy_circuit(bundle: Path, reference: dict) -> None:
    import qiskit_qasm3_import
    from qiskit import qpy
    from qiskit.quantum_info import Operator

    from qnas_hw.hardware.layout import deflate

    with open(bundle / "circuit.qpy", "rb") as fh:
        (circuit,) = qpy.load(fh)
    imported = qiskit_qasm3_import.parse((bundle / "circuit.qasm3").read_text())
    by_name = {p.name: p for p in imported.parameters}
    assert sorted(by_name) == sorted(f"x_{p.index}" for p in circuit.parameters)
    for row in reference["x"][:3]:
        values = {p: row[p.index] for p in circuit.parameters}
        ours = circuit.assign_parameters(values)
        theirs = _on_physical_qubits(
            imported.assign_parameters({by_name[f"x_{p.index}"]: v for p, v in values.items()}), ours.num_qubits
        )
        (small_ours, active), (small_theirs, active_theirs) = deflate(ours), deflate(theirs)
        assert active == active_theirs
        # OpenQASM 3 has no global phase statement; qiskit keeps it in the circuit
        expected = np.exp(-1j * ours.global_phase) * Operator(small_ours).data
        assert np.allclose(expected, np.exp(-1j * theirs.global_phase) * Operator(small_theirs).data, atol=1e-9)


def test_braket_local_simulator_runs_the_openqasm3_bundle(bundle: Path, reference: dict) -> None:
    """Exactly (shots=0 expectation results) and, sampled, within shot noise."""
    from braket.devices import LocalSimulator
    from braket.ir.openqasm import Program

    from qnas_hw.deploy.bundle import braket_openqasm

    obs = json.loads((bundle / "observables.json").read_text())["observables"]
    source = braket_openqasm((bundle / "circuit.qasm3").read_text(), obs)
    device = LocalSimulator("braket_sv")
    shots = 4000
    for row, z in zip(reference["x"][:4], reference["z"][:4], strict=True):
        inputs = {f"x_{i}": float(v) for i, v in enumerate(row)}
        exact = np.array(device.run(Program(source=source, inputs=inputs), shots=0).result().values)
        assert np.abs(exact - z).max() < 1e-6
        sampled = np.array(device.run(Program(source=source, inputs=inputs), shots=shots).result().values)
        assert np.all(np.abs(sampled - z) <= 5 * np.sqrt((1 - z**2) / shots) + 1e-9)


def test_qiskit_machine_learning_estimator_qnn_gives_the_load_export_logits(bundle: Path, reference: dict) -> None:
    pytest.importorskip("qiskit_machine_learning", reason="qiskit-machine-learning is in the test extra")
    from qiskit import qpy
    from qiskit.quantum_info import SparsePauliOp
    from qiskit_machine_learning.connectors import TorchConnector
    from qiskit_machine_learning.neural_networks import EstimatorQNN

    import qnas_hw

    with open(bundle / "circuit.qpy", "rb") as fh:
        (circuit,) = qpy.load(fh)
    obs = json.loads((bundle / "observables.json").read_text())["observables"]
    qnn = EstimatorQNN(
        circuit=circuit,
        observables=[SparsePauliOp(o["label"]) for o in obs],
        input_params=list(circuit.parameters),
        weight_params=[],
    )
    state = torch.load(bundle / "classical.pt", weights_only=True)
    head_state = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    head = torch.nn.Linear(len(obs), head_state["weight"].shape[0], bias="bias" in head_state)
    head.load_state_dict(head_state)
    connector = TorchConnector(qnn)
    model = qnas_hw.load_export(bundle)
    x = reference["x"][:, [p.index for p in circuit.parameters]]
    with torch.no_grad():
        logits = head(connector(torch.as_tensor(x)).float())
        expected = model(reference["X"])
    assert torch.allclose(logits, expected, atol=1e-5)
    assert np.array_equal(logits.argmax(dim=-1).numpy(), reference["predictions"])


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("damage", ["checksum", "missing", "manifest", "resealed-backend"])
def test_a_tampered_bundle_is_refused_with_a_clear_error(bundle: Path, tmp_path: Path, damage: str) -> None:
    from qnas_hw.deploy.bundle import BundleError, manifest_checksum, open_bundle
    from qnas_hw.deploy.runtime import load_export

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    if damage == "checksum":
        (copy / "classical.pt").write_bytes((copy / "classical.pt").read_bytes() + b"\0")
        expected = "classical.pt does not match the checksum"
    elif damage == "missing":
        (copy / "observables.json").unlink()
        expected = "missing observables.json"
    elif damage == "manifest":
        manifest["backend"]["name"] = "fake_kolkata"
        (copy / "manifest.json").write_text(json.dumps(manifest))
        expected = "manifest.json was changed after export"
    else:  # edited and re-sealed by hand: the circuit still names the device it was placed for
        manifest["backend"]["name"] = "fake_kolkata"
        manifest["manifest_checksum"] = manifest_checksum(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        expected = "was placed for backend 'fake_quito' but the manifest says 'fake_kolkata'"
    with pytest.raises(BundleError, match=expected.replace("(", r"\(")):
        load_export(copy) if damage == "resealed-backend" else open_bundle(copy)
    res = _invoke("predict", str(copy), "--dataset", "iris", "--dry-run")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert expected.split(" ")[0] in res.output


def test_predict_refuses_a_device_the_bundle_was_not_placed_for(bundle: Path) -> None:
    res = _invoke("predict", str(bundle), "--dataset", "iris", "--backend", "fake_kolkata", "--dry-run")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "was placed for fake_quito" in res.output and "not on fake_kolkata" in res.output


# ------------------------------------------------------------------ predict
def test_predict_dry_run_guard_then_run_then_resume(bundle: Path, tmp_path: Path) -> None:
    """The ledger and guard of a device search: a dry run submits nothing, a limit refuses before anything is
    submitted, a repeat without --resume is refused, --resume reuses every job."""
    from qnas_hw.jobs import JobLedger

    out = tmp_path / "pred"
    args = ["predict", str(bundle), "--dataset", "iris", "--out", str(out)]
    res = _invoke(*args, "--dry-run")
    assert res.exit_code == 0 and "dry run: nothing was submitted" in res.output and "readout-cal" in res.output
    res = _invoke(*args, "--max-shots", "100")
    assert res.exit_code == 1 and "--max-shots 100" in res.output and "Nothing was submitted" in res.output
    ledger = JobLedger(out / "ledger.sqlite")
    assert ledger.jobs() == []
    ledger.close()
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    assert "30 inputs classified on fake_quito: accuracy" in res.output and "95% CI" in res.output
    summary = json.loads((out / "predict.json").read_text())
    assert summary["samples"] == 30 and summary["mitigation"] == "mthree" and len(summary["accuracy_ci95"]) == 2
    lo, hi = summary["accuracy_ci95"]
    assert lo <= summary["accuracy"] <= hi
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("index,prediction,label,correct,z_0") and len(rows) == 31
    res = _invoke(*args)
    assert res.exit_code == 1 and "--resume" in res.output
    res = _invoke(*args, "--resume")
    assert res.exit_code == 0, res.output
    assert (out / "predictions.csv").read_text().splitlines() == rows  # the same jobs' counts, reused
    ledger = JobLedger(out / "ledger.sqlite")
    assert all(n == 1 for n in ledger.submission_counts().values())  # nothing ran twice
    ledger.close()


def _shot_noise_check(z: np.ndarray, exact: np.ndarray, shots: int) -> None:
    assert z.shape == exact.shape
    assert np.all(np.abs(z - exact) <= 5 * np.sqrt((1 - exact**2) / shots) + 1e-9)


@pytest.mark.parametrize("backend", ["aer_ideal", "braket_local_sv"])
def test_predict_on_a_noiseless_simulator_agrees_within_shot_noise(bundle: Path, tmp_path, backend: str) -> None:
    from qnas_hw.deploy.bundle import open_bundle
    from qnas_hw.deploy.predict import PredictSettings, backend_for, predict
    from qnas_hw.deploy.runtime import model_from_bundle
    from qnas_hw.jobs import JobLedger

    opened = open_bundle(bundle)
    model = model_from_bundle(opened)
    X = torch.randn(12, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exact = model.quantum(model.encode(X).double()).numpy()
    shots = 2000
    ledger = JobLedger(tmp_path / "ledger.sqlite")
    try:
        report = predict(opened, X.numpy(), None, backend_for(opened, backend), ledger, PredictSettings(shots=shots))
    finally:
        ledger.close()
    assert report.details["mitigation"] == "none"  # no readout error to mitigate
    _shot_noise_check(report.expectations, exact, shots)
    assert report.accuracy is None and len(report.predictions) == 12


def test_predict_on_the_snapshot_agrees_with_its_noisy_simulation(bundle: Path, reference: dict, tmp_path) -> None:
    """fake_quito runs as the noisy search scores: readout-mitigated ``<Z>`` near the exact ones."""
    from qnas_hw.deploy.bundle import open_bundle
    from qnas_hw.deploy.predict import backend_for, predict
    from qnas_hw.jobs import JobLedger

    opened = open_bundle(bundle)
    ledger = JobLedger(tmp_path / "ledger.sqlite")
    try:
        report = predict(opened, reference["X"].numpy(), reference["y"], backend_for(opened, BACKEND), ledger)
    finally:
        ledger.close()
    assert report.details["mitigation"] == "mthree" and report.n == 50
    # device noise (gate errors, relaxation) shrinks <Z>; mitigation removes the readout part only
    assert np.abs(report.expectations - reference["z"]).mean() < 0.15
    assert (report.predictions == reference["predictions"]).mean() >= 0.8


# ------------------------------------------------------------------ cut candidates
@pytest.fixture(scope="module")
def cut_bundle(study: Path) -> Path:
    """A cut candidate of the tiny study (3 qubits, budget 2) with the fewest subexperiments."""
    from qnas_hw.deploy.export import export_pick
    from qnas_hw.search.study import Study

    with Study.open(study) as s:
        cut = [
            c
            for c in s.candidates()
            if c.usable and c.details.get("val_error", {}).get("accuracy", {}).get("cut_experiments")
        ]
    if not cut:
        pytest.skip("the tiny study has no feasible cut candidate")
    pick = min(cut, key=lambda c: c.details["val_error"]["accuracy"]["cut_experiments"])
    out = study.parent.parent / "cut"
    export_pick(study, pick.arch.canonical(), out)
    return out


def test_a_cut_candidate_exports_its_subexperiments_and_predict_reconstructs(cut_bundle: Path, tmp_path) -> None:
    from qnas_hw.deploy.bundle import open_bundle
    from qnas_hw.deploy.predict import PredictSettings, backend_for, predict
    from qnas_hw.deploy.runtime import model_from_bundle
    from qnas_hw.jobs import JobLedger

    opened = open_bundle(cut_bundle)
    plan = opened.cut_plan()
    assert (
        opened.is_cut
        and len(opened.subexperiments()) == len(plan["runs"]) == opened.manifest["circuit"]["cut"]["subexperiments"]
    )
    assert plan["coefficients"] and plan["subobservables"] and plan["labels"]
    model = model_from_bundle(opened)
    X = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact = model.quantum(model.encode(X).double()).numpy()
    shots = 2000
    ledger = JobLedger(tmp_path / "ledger.sqlite")
    try:
        report = predict(
            opened, X.numpy(), None, backend_for(opened, "aer_ideal"), ledger, PredictSettings(shots=shots)
        )
    finally:
        ledger.close()
    assert report.details["circuits_per_row"] == len(plan["runs"])
    # a cut plan's estimate has sampling overhead gamma: its shots are scaled by it, so the uncut noise bound holds
    _shot_noise_check(report.expectations, exact, shots)


def test_export_refuses_what_it_cannot_export(study: Path, tmp_path: Path) -> None:
    res = _invoke("export", str(study), "--pick", "angle-x|q2|l6|ry|ring|z", "--out", str(tmp_path / "b"))
    assert res.exit_code == 1 and "never evaluated" in res.output
    res = _invoke("export", str(study), "--pick", "knee", "--out", str(tmp_path / "c"), "--weights", "trained")
    assert res.exit_code == 1 and "qnas-hw train --study" in res.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    res = _invoke("export", str(study), "--pick", "knee", "--out", str(tmp_path / "full"))
    assert res.exit_code == 1 and "not a bundle" in res.output
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_new_commands_answer_help_without_heavy_imports(tmp_path: Path) -> None:
    probe = (
        "import json, sys\nfrom qnas_hw.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(json.dumps([m for m in ('torch', 'qiskit', 'braket') if m in sys.modules]))"
    )
    for command in ("export", "inspect", "predict"):
        res = subprocess.run(
            [sys.executable, "-c", probe, command, "--help"], capture_output=True, text=True, timeout=120, check=False
        )
        assert json.loads(res.stdout.strip().splitlines()[-1]) == [], command


def test_braket_tracker_spend_is_kept_in_the_ledger_beside_the_prediction(tmp_path: Path) -> None:
    """A Braket cloud job reports the SDK Tracker's estimate with its timing; the ledger keeps it with the job's
    counts (next to the guard's pred_usd in its meta) and predict / device scoring sum it.  No AWS call: the tasks
    and the tracker are stand-ins with the SDK's method names."""
    from decimal import Decimal

    from qnas_hw.hardware.backends.braket import TRACKER_USD, BraketCloudJob, tracker_usd
    from qnas_hw.jobs import JobLedger
    from qnas_hw.jobs.executor import _timing_dict
    from qnas_hw.search.scoring import reported_usd

    class Task:
        id = "arn:aws:braket:eu-north-1:000000000000:quantum-task/1"

        def metadata(self) -> dict:
            return {"shots": 1000, "status": "COMPLETED"}

    class Tracker:
        def qpu_tasks_cost(self) -> Decimal:
            return Decimal("0.595")

        def simulator_tasks_cost(self) -> Decimal:
            return Decimal(0)

    class Offline(Tracker):
        def qpu_tasks_cost(self) -> Decimal:
            raise ConnectionError("price list unreachable")

    timing = BraketCloudJob([Task()], None, Tracker()).timing()
    assert timing.extra[TRACKER_USD] == pytest.approx(0.595)
    assert tracker_usd(Offline()) is None and tracker_usd(None) is None
    ledger = JobLedger(tmp_path / "ledger.sqlite")
    for key, usd in (("a", timing), ("b", BraketCloudJob([Task()], None, None).timing())):
        ledger.plan(key, batch="b", label=key, backend="braket:x", shots=1, n_pubs=1, n_rows=1, meta={"pred_usd": 0.6})
        ledger.mark_done(key, {"counts": [], "timing": _timing_dict(usd)})
    assert reported_usd(ledger, ["a", "b"]) == pytest.approx(0.595)  # the re-attached job ("b") reports nothing
    assert reported_usd(ledger, ["b"]) is None
    ledger.close()


@pytest.mark.slow
def test_a_cut_of_an_input_dependent_gate_is_reconstructed_per_sample(study: Path, tmp_path: Path) -> None:
    """IQP's cut RZZ(x_i x_j): its QPD coefficients change with every input, and predict recomputes them from the
    inputs with the search's seeded planner (about a minute: 72 subexperiments per sample)."""
    from qnas_hw.deploy.bundle import open_bundle
    from qnas_hw.deploy.export import export_pick
    from qnas_hw.deploy.predict import PredictSettings, backend_for, predict
    from qnas_hw.deploy.runtime import model_from_bundle
    from qnas_hw.jobs import JobLedger
    from qnas_hw.search.study import Study

    with Study.open(study) as s:
        cut = [
            c
            for c in s.candidates()
            if c.usable and c.arch.embedding == "iqp" and c.details["val_error"]["accuracy"].get("cut_experiments")
        ]
    if not cut:
        pytest.skip("the tiny study has no feasible IQP cut candidate")
    pick = min(cut, key=lambda c: c.details["val_error"]["accuracy"]["cut_experiments"])
    opened = open_bundle(export_pick(study, pick.arch.canonical(), tmp_path / "iqp").path)
    assert opened.cut_plan()["input_dependent_cuts"] > 0
    model = model_from_bundle(opened)
    X = torch.randn(2, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact = model.quantum(model.encode(X).double()).numpy()
    shots = 1024
    ledger = JobLedger(tmp_path / "ledger.sqlite")
    try:
        report = predict(
            opened, X.numpy(), None, backend_for(opened, "aer_ideal"), ledger, PredictSettings(shots=shots)
        )
    finally:
        ledger.close()
    # scaled cut shots give about the uncut circuit's precision; the bound allows the estimator's extra spread
    assert np.abs(report.expectations - exact).max() < 6 / np.sqrt(shots)
