"""Backends against independent references: qiskit Statevector probabilities, the registry contract."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit.quantum_info import Statevector

from qnas_hw.hardware.backends import BackendError, SamplerPub, get_backend, known_backend_names, list_backends
from qnas_hw.hardware.backends.braket import to_braket
from qnas_hw.model.circuits import bind, build_circuit, parameter_values
from qnas_hw.model.space import Architecture

SHOTS = 4000
ARCH = Architecture("angle-y", 3, 1, "ry-rz", "linear")


@pytest.fixture()
def no_credentials(monkeypatch, tmp_path):
    """A home without saved accounts and no provider env vars."""
    from qiskit_ibm_runtime.accounts import management

    for var in (
        "QISKIT_IBM_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(management, "_DEFAULT_ACCOUNT_CONFIG_JSON_FILE", str(tmp_path / "none.json"))


def _reference(rows: np.ndarray, weights: np.ndarray) -> list[dict[str, float]]:
    return [Statevector(bind(build_circuit(ARCH), ARCH, f, weights)).probabilities_dict() for f in rows]


def _tv(counts: dict[str, int], probs: dict[str, float]) -> float:
    total = sum(counts.values())
    keys = set(counts) | set(probs)
    return 0.5 * sum(abs(counts.get(k, 0) / total - probs.get(k, 0.0)) for k in keys)


def _inputs(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.3, 2.8, size=(2, ARCH.n_qubits)), rng.uniform(0, 2 * np.pi, size=ARCH.n_weights)


def test_unknown_backend_names_bad_name_and_suggests_the_closest():
    with pytest.raises(BackendError) as err:
        get_backend("fake_kolkat")
    msg = str(err.value)
    # the three closest names, not all ~75: the one meant stands out; the full list is one command away
    assert "'fake_kolkat'" in msg and "did you mean 'fake_kolkata', " in msg and msg.count("'fake_") == 4
    assert "`qnas-hw devices --all`" in msg and "'ibm:<device>'" in msg
    with pytest.raises(BackendError) as err:
        get_backend("aer_idael")
    assert "did you mean 'aer_ideal'?" in str(err.value)
    with pytest.raises(BackendError) as err:
        get_backend("zzz")
    assert "did you mean" not in str(err.value) and "`qnas-hw devices --all`" in str(err.value)
    assert "fake_kolkata" in known_backend_names()
    with pytest.raises(BackendError, match="no device snapshot for Braket ARN"):
        get_backend("braket:arn:aws:braket:::device/qpu/acme/none")


def test_list_backends_rows_without_cloud_contact(no_credentials):
    rows = list_backends()
    by_name = {r["name"]: r for r in rows}
    assert by_name["fake_kolkata"]["qubits"] == 27 and by_name["fake_kolkata"]["topology"] == "heavy-hex"
    assert by_name["braket_iqm_garnet"]["qubits"] == 20
    assert by_name["braket_ionq_forte"]["topology"] == "all-to-all"
    cloud = [r for r in rows if r["name"].startswith(("ibm:", "braket:"))]
    assert cloud and all(r["credentials"] is False for r in cloud)
    for r in rows:
        assert {"name", "provider", "qubits", "topology", "credentials"} <= set(r)


def test_credentials_never_appear_in_describe(monkeypatch, tmp_path):
    secret_ibm, secret_aws = "ibm-secret-token-123456", "aws-secret-key-abcdef"
    monkeypatch.setenv("QISKIT_IBM_TOKEN", secret_ibm)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_aws)
    rows = list_backends()
    text = repr(rows)
    assert secret_ibm not in text and secret_aws not in text and "AKIAEXAMPLEKEY" not in text
    assert any(r["name"].startswith("ibm:") and r["credentials"] for r in rows)
    assert any(r["name"].startswith("braket:") and r["credentials"] for r in rows)


def test_cloud_backends_without_credentials_fail_clearly(no_credentials):
    ibm = get_backend("ibm:ibm_nowhere")
    pub = SamplerPub(build_circuit(ARCH, measure=True).assign_parameters([0.1] * 9))
    with pytest.raises(BackendError, match="QISKIT_IBM_TOKEN"):
        ibm.submit([pub], shots=10)
    aws = get_backend("braket:arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet")
    assert aws.num_qubits == 20 and not aws.is_simulator
    with pytest.raises(BackendError, match="AWS credentials"):
        aws.submit([pub], shots=10)


def test_local_jobs_cannot_be_reattached():
    with pytest.raises(BackendError, match="cannot be re-attached"):
        get_backend("aer_ideal").reattach("some-id")


@pytest.mark.parametrize(("name", "tol"), [("fake_kolkata", 0.12), ("aer_ideal", 0.05)])
def test_sampler_counts_match_statevector(name, tol):
    """Noisy snapshot within noise tolerance; ideal Aer within shot noise; per parameter row, in order."""
    backend = get_backend(name)
    feats, w = _inputs()
    tqc = backend.transpile(build_circuit(ARCH, measure=True), 1, 0)
    handle = backend.submit([SamplerPub(tqc, parameter_values(tqc, ARCH, feats, w))], shots=SHOTS, seed=7)
    counts = handle.counts()
    ref = _reference(feats, w)
    assert len(counts) == 1 and len(counts[0]) == 2
    for row, probs in zip(counts[0], ref, strict=True):
        assert sum(row.values()) == SHOTS
        assert _tv(row, probs) < tol
    # the two rows are genuinely different distributions, so a row swap would be caught
    assert _tv(counts[0][0], ref[1]) > tol
    assert handle.state().value == "done" and handle.timing().wall_seconds > 0


def test_braket_local_sv_matches_statevector():
    backend = get_backend("braket_local_sv")
    feats, w = _inputs(5)
    tqc = backend.transpile(build_circuit(ARCH, measure=True), 1, 0)
    counts = backend.submit([SamplerPub(tqc, parameter_values(tqc, ARCH, feats, w))], shots=SHOTS).counts()
    ref = _reference(feats, w)
    for row, probs in zip(counts[0], ref, strict=True):
        assert _tv(row, probs) < 0.05
    assert _tv(counts[0][0], ref[1]) > 0.05


@pytest.mark.parametrize("snapshot", ["braket_iqm_garnet", "braket_rigetti_ankaa3", "braket_ionq_forte"])
def test_native_gate_translation_is_exact(snapshot):
    """Transpile to the device's natives (PRX/CZ, RX/RZ/iSWAP, R/RZ/RZZ) on its physical layout, translate
    without noise, and run on Braket's state vector: must match qiskit's Statevector of the logical circuit."""
    from braket.devices import LocalSimulator
    from braket.program_sets import CircuitBinding, ProgramSet

    backend = get_backend(snapshot)
    feats, w = _inputs(11)
    tqc = backend.transpile(build_circuit(ARCH, measure=True), 1, 0)
    prog = to_braket(tqc, noise=None)
    inputs = prog.input_sets(tqc, parameter_values(tqc, ARCH, feats, w))
    ps = ProgramSet(CircuitBinding(prog.circuit, input_sets=inputs), shots_per_executable=SHOTS)
    result = LocalSimulator("braket_sv").run(ps, shots=SHOTS * 2).result()
    rows = [prog.qiskit_counts(dict(e.counts), list(e.measured_qubits)) for c in result.entries for e in c.entries]
    for row, probs in zip(rows, _reference(feats, w), strict=True):
        assert _tv(row, probs) < 0.05


def test_braket_snapshot_runs_noisy_on_density_matrix():
    backend = get_backend("braket_iqm_garnet")
    feats, w = _inputs(2)
    tqc = backend.transpile(build_circuit(ARCH, measure=True), 1, 0)
    handle = backend.submit([SamplerPub(tqc, parameter_values(tqc, ARCH, feats, w))], shots=2000)
    counts = handle.counts()
    for row, probs in zip(counts[0], _reference(feats, w), strict=True):
        assert sum(row.values()) == 2000
        assert _tv(row, probs) < 0.15  # depolarising + 2.5% readout noise from the snapshot
    assert backend.pricing is not None and backend.pricing.per_task_usd > 0


def test_unreachable_providers_are_reported_as_network_problems_not_bad_credentials(monkeypatch) -> None:
    """Real SDK calls through a proxy that refuses connections: the user is told the provider is unreachable."""
    import json

    from qnas_hw.hardware.backends import calibration_dir

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("QISKIT_IBM_TOKEN", "not-a-real-token-1234")
    with pytest.raises(BackendError, match="IBM Quantum is unreachable") as info:
        get_backend("ibm:ibm_brisbane").preflight()
    assert "credentials were not checked" in str(info.value) and "not-a-real-token-1234" not in str(info.value)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-north-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    arn = json.loads((calibration_dir() / "devices" / "iqm_garnet.json").read_text())["device_arn"]
    with pytest.raises(BackendError, match="Amazon Braket is unreachable") as info:
        get_backend(f"braket:{arn}").preflight()
    assert "not-a-real-secret" not in str(info.value)


def test_saved_ibm_account_is_found_through_the_public_api(no_credentials, caplog):
    from qiskit_ibm_runtime import QiskitRuntimeService

    from qnas_hw.hardware.backends.ibm import ibm_credentials_present

    assert not ibm_credentials_present()
    secret = "saved-token-" + "7" * 32
    QiskitRuntimeService.save_account(channel="ibm_quantum_platform", token=secret, set_as_default=True)
    assert ibm_credentials_present()
    assert secret not in caplog.text


def test_fake_ibm_runs_on_the_current_sampler_seeded_and_without_deprecations():
    """The client-side executor Sampler in local mode: no DeprecationWarning, and the seed fixes the counts."""
    import warnings

    backend = get_backend("fake_kolkata")
    feats, w = _inputs()
    tqc = backend.transpile(build_circuit(ARCH, measure=True), 1, 0)
    pub = SamplerPub(tqc, parameter_values(tqc, ARCH, feats, w))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        first = backend.submit([pub], shots=SHOTS, seed=3).counts()
        again = backend.submit([pub], shots=SHOTS, seed=3).counts()
        other = backend.submit([pub], shots=SHOTS, seed=4).counts()
    assert first == again and first != other
