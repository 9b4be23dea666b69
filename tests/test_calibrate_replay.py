"""``qnas-hw calibrate --backend ibm:<device>`` offline: recorded-shape job metrics replayed through the real path.

The replay backend is the real IBM adapter (``IBMRuntimeBackend``) with two
things swapped: its device description is qiskit-ibm-runtime's offline
``FakeSherbrooke`` snapshot, and ``submit`` returns real ``RuntimeJobV2``
objects whose REST client serves the payloads of
``tests/data/ibm_usage_replay.json`` instead of calling IBM.  Everything
else runs as it would against the service: the design, transpilation, the
job handle, ``RuntimeJobV2.result()/usage()/metrics()``, the NNLS fit, the
calibration file and ``CostModel.load``.  The payloads are synthetic (see the
fixture's ``source``): IBM's formula with known coefficients, seeded noise,
whole seconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qiskit.primitives import PrimitiveResult
from qiskit.primitives.containers import BitArray, DataBin, SamplerPubResult
from qiskit_ibm_runtime import RuntimeJobV2
from qiskit_ibm_runtime.json import RuntimeEncoder

from qnas_hw.hardware import calibrate
from qnas_hw.hardware.backends import SamplerPub, get_backend
from qnas_hw.hardware.backends.base import JobHandle
from qnas_hw.hardware.backends.ibm import IBMRuntimeBackend, fake_backend_instance
from qnas_hw.hardware.backends.primitives import PrimitiveJobHandle
from qnas_hw.hardware.cost import CostModel, Workload, mape

FIXTURE = Path(__file__).parent / "data" / "ibm_usage_replay.json"


class ReplayRuntimeClient:
    """The three ``RuntimeClient`` calls a finished ``RuntimeJobV2`` makes, answered from the recording."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = jobs
        self.by_id = {j["job_id"]: j for j in jobs}
        self.next = 0
        self.results: dict[str, str] = {}
        self.metrics_reads: dict[str, int] = {}
        self.pending_reads: dict[str, int] = {}  # job id -> how many first reads answer "pending"

    def take(self, pubs: Sequence[SamplerPub], shots: int) -> str:
        """The next recorded job, after checking it is the job the calibration submitted."""
        if self.next >= len(self.jobs):
            raise AssertionError(f"calibration submitted job {self.next + 1}; the recording has {len(self.jobs)}")
        job = self.jobs[self.next]
        p = job["point"]
        got = (shots, len(pubs), pubs[0].rows, pubs[0].circuit.num_parameters)
        want = (p["shots"], p["pubs"], p["rows"], job["num_parameters"])
        if got != want:
            raise AssertionError(
                f"job {self.next} submitted (shots, pubs, rows, parameters) = {got}, recording has {want}; the "
                "calibration design changed: re-run tests/data/make_ibm_usage_replay.py"
            )
        self.next += 1
        n_bits = pubs[0].circuit.num_clbits
        pub_results = [  # all-zero outcomes: calibration reads only how many shots came back
            SamplerPubResult(
                DataBin(
                    meas=BitArray(np.zeros((pub.rows, shots, (n_bits + 7) // 8), np.uint8), n_bits), shape=(pub.rows,)
                )
            )
            for pub in pubs
        ]
        self.results[job["job_id"]] = json.dumps(PrimitiveResult(pub_results), cls=RuntimeEncoder)
        return job["job_id"]

    # ---- what RuntimeJobV2 calls
    def job_get(self, job_id: str, exclude_params: bool = True) -> dict[str, Any]:
        return {"id": job_id, "state": {"status": "Completed"}, "program": {"id": "sampler"}}

    def job_results(self, job_id: str) -> str:
        return self.results[job_id]

    def job_metadata(self, job_id: str) -> dict[str, Any]:
        self.metrics_reads[job_id] = self.metrics_reads.get(job_id, 0) + 1
        if self.metrics_reads[job_id] <= self.pending_reads.get(job_id, 0):
            metrics = self.by_id[job_id]["metrics"]
            return {**metrics, "usage": {"qpu_charge_time_seconds": 0, "status": "pending"}}
        return json.loads(json.dumps(self.by_id[job_id]["metrics"]))  # a fresh copy, as each request would be


class ReplayIBMBackend(IBMRuntimeBackend):
    """``ibm:<device>`` whose description is the offline snapshot and whose jobs are replayed."""

    def __init__(self, device: str, snapshot: str, client: ReplayRuntimeClient) -> None:
        super().__init__(device)
        self._snapshot = fake_backend_instance(snapshot)
        self.client = client

    @property
    def _device(self) -> Any:
        return self._snapshot

    def submit(self, pubs: Sequence[SamplerPub], shots: int, seed: int | None = None) -> JobHandle:
        job_id = self.client.take(pubs, shots)
        job = RuntimeJobV2(backend=None, api_client=self.client, job_id=job_id, program_id="sampler", service=None)
        return PrimitiveJobHandle(job)


@pytest.fixture(scope="module")
def recording() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def _replay(recording: dict[str, Any]) -> ReplayIBMBackend:
    client = ReplayRuntimeClient(recording["jobs"])
    return ReplayIBMBackend(recording["device"], "fake_sherbrooke", client)


def test_fixture_is_marked_synthetic_and_has_the_shape_of_a_runtime_job_s_metrics(recording):
    """The replayed payloads have the keys and value types a qiskit-ibm-runtime job's metrics() returns."""
    assert recording["synthetic"] is True and "SYNTHETIC" in recording["source"]
    assert "qpu_charge_time_seconds" in recording["source"] and "033a72ba4c6e" in recording["source"]
    # the runtime's local mode returns, by its own documentation, the layout of a service job's metrics
    local = get_backend("fake_manila")
    qc = local.transpile(_bell(), 1, 0)
    reference = local.submit([SamplerPub(qc)], shots=16).timing().extra["metrics"]
    for job in recording["jobs"]:
        m = job["metrics"]
        assert set(m) == set(reference) and set(m["timestamps"]) == set(reference["timestamps"])
        assert set(m["usage"]) == set(reference["usage"])
        assert all(isinstance(v, str) and v.endswith("Z") for v in m["timestamps"].values())
        assert type(m["usage"]["qpu_charge_time_seconds"]) is type(reference["usage"]["qpu_charge_time_seconds"])
        assert m["usage"]["status"] == reference["usage"]["status"]


def _bell():
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def test_device_calibration_fits_ibm_usage_from_replayed_job_metrics(recording, tmp_path):
    """Design -> replayed jobs -> usage read by RuntimeJobV2 -> NNLS -> file -> CostModel.load: the truth comes back."""
    backend = _replay(recording)
    out = tmp_path / "ibm_ibm_sherbrooke.json"
    report = calibrate._calibrate(backend, out, seed=recording["design"]["seed"], quick=True, repeats=None)

    # every recorded job was submitted, in order, and none besides
    assert backend.client.next == len(recording["jobs"])
    design_jobs = [j for j in recording["jobs"] if not j["warm_up"]]

    # the measured seconds are the usage IBM reported (whole seconds), read through RuntimeJobV2.usage()'s field
    assert [m.seconds for m in report.measurements] == [
        float(j["metrics"]["usage"]["qpu_charge_time_seconds"]) for j in design_jobs
    ]

    # the fit recovers the device the usage came from (not IBM's prior 2 s / 0 / 1); the usage is reported in
    # whole seconds and most design jobs take 3-4 s, so the per-job term is known to a few tenths of a second
    truth = recording["truth"]
    fitted = report.model.device
    assert report.model.timing_source == "device" and report.model.provenance["device_model"]["fitted"] is True
    assert fitted["per_job_s"] == pytest.approx(truth["per_job_s"], abs=0.3)
    assert fitted["duration_scale"] == pytest.approx(truth["duration_scale"], rel=0.05)
    assert fitted["per_circuit_s"] <= truth["per_circuit_s"] + 0.01

    # held-out jobs: predicted from their own features, compared with their reported usage (rounding alone costs
    # about 0.25 s of 3-4 s, i.e. ~7%)
    fit = report.fit
    assert fit.n_heldout == sum(j["point"]["heldout"] for j in design_jobs) == 4
    assert fit.mape_heldout < 0.10

    # the calibration file: reloaded and validated, same coefficients, every point with its job and usage field
    loaded = CostModel.load(out, backend_name="ibm:ibm_sherbrooke", max_age_days=None)
    assert loaded.device == pytest.approx(fitted) and loaded.fit == fit
    points = loaded.provenance["calibration"]["points"]
    assert [p["job"]["job_id"] for p in points] == [j["job_id"] for j in design_jobs]
    assert {p["job"]["usage_source"] for p in points} == {"metrics.usage.qpu_charge_time_seconds"}
    for p, job in zip(points, design_jobs, strict=True):
        w = job["workload"]
        assert p["init_s"] == pytest.approx(w["init_s"]) and p["init_s"] > 0  # the reset duration IBM adds per shot
        assert p["job"]["running_to_finished_s"] == pytest.approx(job["usage_noisy_s"], abs=1e-5)

    # prediction of a held-out job by hand from the recorded formula inputs, against the loaded model
    job = next(j for j in design_jobs if j["point"]["heldout"])
    w = job["workload"]
    by_hand = (
        fitted["per_job_s"]
        + fitted["per_circuit_s"] * w["circuits"]
        + fitted["duration_scale"] * w["executions"] * (w["duration_s"] + w["rep_delay_s"] + w["init_s"])
    )
    work = Workload(
        jobs=1,
        circuits=w["circuits"],
        shots=job["point"]["shots"],
        n_gates=0,
        width=0,
        duration_s=w["duration_s"],
        rep_delay_s=w["rep_delay_s"],
        init_s=w["init_s"],
    )
    assert loaded.predict(work) == pytest.approx(by_hand)
    # the held-out error recomputed from the file's own points agrees with the stored figure
    held = [p for p in points if p["heldout"]]
    assert mape(np.array([p["measured_s"] for p in held]), np.array([p["predicted_s"] for p in held])) == (
        pytest.approx(fit.mape_heldout)
    )
    # and the search picks the fitted model up instead of the prior
    chosen = CostModel.for_backend(backend, directory=tmp_path, max_age_days=None)
    assert chosen.device == pytest.approx(fitted)


def test_usage_still_pending_is_waited_for_and_a_zero_usage_is_refused(recording, tmp_path, monkeypatch):
    """IBM fills the usage in after the job ends: calibration asks again, and never fits a missing figure."""
    monkeypatch.setattr(calibrate, "USAGE_POLL_S", 0.0)
    backend = _replay(recording)
    first = recording["jobs"][1]["job_id"]
    backend.client.pending_reads[first] = 2  # IBM still computing this job's usage on the first two requests
    report = calibrate._calibrate(backend, tmp_path / "a.json", seed=recording["design"]["seed"], quick=True, repeats=1)
    assert backend.client.metrics_reads[first] == 3
    assert report.measurements[0].seconds == recording["jobs"][1]["metrics"]["usage"]["qpu_charge_time_seconds"]

    # a final usage of 0 (IBM's figure for a job that failed on its side) cannot be fitted: the error names the job
    broken = json.loads(json.dumps(recording))
    broken["jobs"][1]["metrics"]["usage"]["qpu_charge_time_seconds"] = 0
    with pytest.raises(RuntimeError, match=rf"job {first} reported no QPU usage .*qpu_charge_time_seconds = 0"):
        calibrate._calibrate(_replay(broken), tmp_path / "b.json", seed=0, quick=True, repeats=1)
