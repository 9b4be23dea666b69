"""``qnas-hw calibrate --from-study``: the cost model refitted on jobs a study already ran, offline.

References: the replayed IBM usage fixtures (``tests/data/ibm_usage_replay.json``, the jobs ``calibrate
--backend ibm:<device>`` itself is tested with, and ``tests/data/ibm_study_usage_replay.json``, 42 jobs of a
device study), whose usage was drawn from IBM's formula with KNOWN coefficients (``truth``) and whose jobs'
workloads the generators recorded.  The jobs run through the real executor on the real IBM adapter (replayed
``RuntimeJobV2`` s, see ``test_calibrate_replay.py``) into a real study's ledger; the refit reads that ledger.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from readonly import read_only_view
from test_calibrate_replay import FIXTURE, ReplayIBMBackend, ReplayRuntimeClient

from qnas_hw.config import default_config
from qnas_hw.hardware import calibrate
from qnas_hw.hardware.backends import SamplerPub
from qnas_hw.hardware.backends.base import JobTiming
from qnas_hw.hardware.calibrate import WARM_UP, MeasuredJob, RefitError, design, refit_from_jobs
from qnas_hw.hardware.cost import CostModel, Workload, mape
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.jobs import AsyncExecutor, JobLedger, JobSpec, RetryPolicy
from qnas_hw.jobs.guard import price_job
from qnas_hw.jobs.usage import compare_costs, job_costs, reported_cost
from qnas_hw.search.refit import refit_from_studies
from qnas_hw.search.study import Study

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_ibm_study_replay import study_jobs  # the generator's own job list

STUDY_FIXTURE = Path(__file__).parent / "data" / "ibm_study_usage_replay.json"
BACKEND = "ibm:ibm_sherbrooke"
BATCH = f"hw-eval|{BACKEND}|replay"


def _recording(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _backend(recording: dict[str, Any]) -> ReplayIBMBackend:
    return ReplayIBMBackend(recording["device"], "fake_sherbrooke", ReplayRuntimeClient(recording["jobs"]))


def _calibration_jobs(backend: ReplayIBMBackend, recording: dict[str, Any]) -> list[dict[str, Any]]:
    """``calibrate``'s own jobs (warm-up, then its quick design), as it submits them, for the executor to send."""
    seed = recording["design"]["seed"]
    transpiler = Transpiler(backend, optimization_level=1, seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for p in [WARM_UP, *design(seed, True, min(8, backend.num_qubits))]:
        circ = transpiler.transpile(p.arch()).circuit
        values = rng.uniform(0, 2 * np.pi, size=(p.rows, circ.num_parameters))
        out.append({"pubs": [SamplerPub(circ, values)] * p.pubs, "shots": p.shots, "kind": "calibration"})
    return out


def _run_into_study(backend: ReplayIBMBackend, jobs: list[dict[str, Any]], path: Path, **policy: float) -> Path:
    """The jobs, priced by the guard, through the executor into a new study's ledger (one at a time: the replay
    answers jobs in the recording's order)."""
    model = CostModel.for_backend(backend)
    specs = []
    for k, job in enumerate(jobs):
        spec = JobSpec(tuple(job["pubs"]), job["shots"], seed=k, label=f"job {k}", meta={"kind": job["kind"]})
        spec.meta.update(price_job(backend, spec, model))
        specs.append(spec)
    study = Study.create(path, default_config().resolved())
    ledger = JobLedger(study)
    try:
        executor = AsyncExecutor(
            backend, ledger, concurrency=1, batch=BATCH, policy=RetryPolicy.for_backend(backend, **policy)
        )
        executor.run_sync(specs)
    finally:
        ledger.close()
        study.close()
    return path


@pytest.fixture(scope="module")
def replay_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The calibration fixture's 13 jobs, run through the executor into a study (as a search's jobs would be)."""
    recording = _recording(FIXTURE)
    backend = _backend(recording)
    path = _run_into_study(
        backend, _calibration_jobs(backend, recording), tmp_path_factory.mktemp("s") / "study.sqlite"
    )
    assert backend.client.next == len(recording["jobs"])
    return path


@pytest.fixture(scope="module")
def big_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 42-job study fixture, run through the executor into a study."""
    recording = _recording(STUDY_FIXTURE)
    backend = _backend(recording)
    jobs = study_jobs(backend)
    path = _run_into_study(backend, jobs, tmp_path_factory.mktemp("big") / "study.sqlite")
    assert backend.client.next == len(recording["jobs"]) == len(jobs) >= 30
    return path


def _rows(path: Path) -> list[Any]:
    with Study.open(path) as study:
        ledger = JobLedger(study)
        try:
            return ledger.jobs()
        finally:
            ledger.close()


def test_each_device_job_s_row_keeps_its_workload_and_the_usage_ibm_reported(replay_study: Path) -> None:
    """meta.cost: the features the prediction used (against the generator's record); result.reported: the usage."""
    recording = _recording(FIXTURE)
    rows = sorted(_rows(replay_study), key=lambda r: int(r.label.split()[-1]))
    assert len(rows) == len(recording["jobs"])
    for row, job in zip(rows, recording["jobs"], strict=True):
        ref = job["workload"]
        works = [Workload.from_dict(w) for w in row.meta["cost"]["workloads"]]
        assert len(works) == job["point"]["pubs"]  # one workload per PUB
        assert sum(w.circuits for w in works) == ref["circuits"]
        assert sum(w.shots_total for w in works) == ref["executions"]
        for w in works:
            assert w.duration_s == pytest.approx(ref["duration_s"])
            assert w.rep_delay_s == pytest.approx(ref["rep_delay_s"])
            assert w.init_s == pytest.approx(ref["init_s"]) and w.init_s > 0
        assert row.meta["cost"]["timing_source"] == "device"
        assert row.meta["cost"]["pred_device_s"] == pytest.approx(row.meta["pred_seconds"])
        reported = row.result["reported"]
        assert reported["seconds"] == job["metrics"]["usage"]["qpu_charge_time_seconds"]
        assert reported["unit"] == "qpu" and reported["source"] == "metrics.usage.qpu_charge_time_seconds"


def test_refit_of_the_calibration_fixture_s_jobs_recovers_its_per_job_and_per_shot_time(
    replay_study: Path, tmp_path: Path
) -> None:
    """The fixture's truth (2.8 s per job, 1.3 x IBM's per-shot time) back within 5%, from the ledger alone."""
    truth = _recording(FIXTURE)["truth"]
    out = tmp_path / "cal.json"
    report = refit_from_studies(BACKEND, [replay_study], out)
    fitted = report.model.device
    assert fitted["per_job_s"] == pytest.approx(truth["per_job_s"], rel=0.05)
    assert fitted["duration_scale"] == pytest.approx(truth["duration_scale"], rel=0.05)  # per-shot time x scale
    assert report.written and report.fit.n_train + report.fit.n_heldout == 13

    loaded = CostModel.load(out, backend_name=BACKEND, max_age_days=None)
    assert loaded.device == pytest.approx(fitted) and loaded.fit == report.fit
    prov = loaded.provenance["calibration"]
    assert prov["fit_of"] == "device_model" and prov["source"] == "studies" and prov["jobs"] == 13
    assert prov["from_studies"][0]["study"] == str(replay_study) and prov["from_studies"][0]["jobs"] == 13
    first, last = (dt.datetime.fromisoformat(t) for t in prov["date_range"])
    assert first <= last and (dt.datetime.now(dt.UTC) - last).total_seconds() < 3600
    # every point: the job, its reported usage and the held-out mark; the stored MAPE is the held-out points' own
    held = [p for p in prov["points"] if p["heldout"]]
    assert len(held) == report.fit.n_heldout
    assert mape(np.array([p["measured_s"] for p in held]), np.array([p["predicted_s"] for p in held])) == (
        pytest.approx(report.fit.mape_heldout)
    )
    assert "--from-study" in loaded.provenance["device_model"]["source"]


def test_refit_of_a_42_job_study_is_no_worse_held_out_than_calibrate_s_own_design(
    big_study: Path, tmp_path: Path
) -> None:
    """The goal: on the same device (same truth, same noise), a refit on a study's 42 jobs generalises at least as
    well as ``calibrate``'s own 12-job design, by each fit's own held-out error and on each other's held-out jobs."""
    cal = _recording(FIXTURE)
    design_report = calibrate._calibrate(_backend(cal), tmp_path / "design.json", seed=0, quick=True, repeats=None)
    refit = refit_from_studies(BACKEND, [big_study], tmp_path / "refit.json")
    assert refit.fit.n_train + refit.fit.n_heldout == 42 and refit.fit.n_heldout >= 12
    assert refit.fit.mape_heldout <= design_report.fit.mape_heldout

    def predict(model: CostModel, X: np.ndarray) -> np.ndarray:
        d = model.device
        return X @ np.array([d["per_job_s"], d["per_circuit_s"], d["duration_scale"]])

    # the design's 4 held-out jobs, predicted by both models
    ms = [m for m in design_report.measurements if m.point.heldout]
    Xd = np.stack([m.workload.device_features() for m in ms])
    yd = np.array([m.seconds for m in ms])
    assert mape(yd, predict(refit.model, Xd)) <= mape(yd, predict(design_report.model, Xd))
    # the refit's held-out jobs: both models within a percentage point of the truth's own error there (whole-second
    # rounding of the usage alone costs the truth several percent)
    held = np.array(refit.heldout)
    X = np.stack([j.device_features() for j in refit.jobs])[held]
    y = np.array([j.seconds for j in refit.jobs])[held]
    truth = CostModel("t", "device", device=cal["truth"])
    floor = mape(y, predict(truth, X))
    assert mape(y, predict(refit.model, X)) <= floor + 0.01


def test_a_dry_run_fits_and_shows_but_writes_nothing(replay_study: Path, tmp_path: Path) -> None:
    out = tmp_path / "cal" / "ibm.json"
    before = replay_study.read_bytes()
    report = refit_from_studies(BACKEND, [replay_study], out, dry_run=True)
    assert not report.written and report.fit.n_heldout >= 2
    assert not out.parent.exists()  # not the file, not its lock, not a .rejected one
    assert replay_study.read_bytes() == before
    lines = calibrate.refit_summary_lines(report)
    assert any("dry run: nothing written" in ln for ln in lines) and any("per_job_s" in ln for ln in lines)


def test_a_worse_refit_is_refused_unless_forced_and_kept_beside_the_file(replay_study: Path, tmp_path: Path) -> None:
    out = tmp_path / "ibm.json"
    good = refit_from_studies(BACKEND, [replay_study], out)
    better = replace(good.fit, mape_heldout=good.fit.mape_heldout / 10)  # an existing fit it cannot beat
    data = json.loads(out.read_text())
    data["fit"] = better.to_dict()
    out.write_text(json.dumps(data))
    dry = refit_from_studies(BACKEND, [replay_study], out, dry_run=True)
    assert dry.would_refuse and not out.with_name(out.name + ".rejected").exists()
    with pytest.raises(calibrate.CalibrationRefused, match="the new fit is worse"):
        refit_from_studies(BACKEND, [replay_study], out)
    assert json.loads(out.read_text())["fit"] == better.to_dict()  # the better file was kept
    assert out.with_name(out.name + ".rejected").is_file()
    forced = refit_from_studies(BACKEND, [replay_study], out, force=True)
    assert forced.written and json.loads(out.read_text())["fit"] == forced.fit.to_dict()


def test_a_study_without_device_jobs_is_refused_naming_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "study.sqlite"
    Study.create(path, default_config().resolved()).close()
    with pytest.raises(RefitError, match=r"has no device jobs .*qnas-hw calibrate --backend ibm:ibm_sherbrooke"):
        refit_from_studies(BACKEND, [path], tmp_path / "cal.json")
    assert not (tmp_path / "cal.json").exists()


def test_a_study_of_another_backend_is_refused_naming_the_backend_it_ran_on(replay_study: Path, tmp_path: Path) -> None:
    with pytest.raises(
        RefitError,
        match=r"no finished jobs on fake_kolkata; its jobs ran on ibm:ibm_sherbrooke "
        r"\(13 finished jobs\): pass --backend ibm:ibm_sherbrooke",
    ):
        refit_from_studies("fake_kolkata", [replay_study], tmp_path / "cal.json")
    # rows handed to the fit directly are checked too
    job = MeasuredJob("k", "fake_kolkata", (Workload(1, 1, 100, 10, 2),), 3.0, "qpu", "2026-12-01")
    with pytest.raises(RefitError, match="ran on fake_kolkata"):
        refit_from_jobs(_backend(_recording(FIXTURE)), [job] * 8, tmp_path / "x.json", studies=["s"])


def test_too_few_jobs_are_refused_with_the_count_needed(tmp_path: Path) -> None:
    recording = _recording(FIXTURE)
    backend = _backend(recording)
    path = _run_into_study(backend, _calibration_jobs(backend, recording)[:5], tmp_path / "study.sqlite")
    with pytest.raises(RefitError, match=r"5 finished jobs on ibm:ibm_sherbrooke .* needs at least 8"):
        refit_from_studies(BACKEND, [path], tmp_path / "cal.json")
    assert not (tmp_path / "cal.json").exists()


def test_a_read_only_study_is_read_as_it_is_and_nothing_is_written_into_it(replay_study: Path, tmp_path: Path) -> None:
    """A refit only reads: a study in a read-only place gives the same fit; an --out there, or a write-ahead log the
    read-only place hides (jobs that could be missed), is refused before anything is fitted."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(replay_study, src / "study.sqlite")
    reference = refit_from_studies(BACKEND, [src / "study.sqlite"], tmp_path / "a.json", dry_run=True)
    with read_only_view(src, tmp_path / "ro") as ro:
        listing = sorted(p.name for p in ro.iterdir())
        report = refit_from_studies(BACKEND, [ro / "study.sqlite"], tmp_path / "b.json")
        assert report.written and report.model.device == pytest.approx(reference.model.device)
        assert sorted(p.name for p in ro.iterdir()) == listing  # no lock, no -wal, no -shm
        with pytest.raises(RefitError, match=r"cannot write the calibration file .* is read-only.*--out"):
            refit_from_studies(BACKEND, [ro / "study.sqlite"], ro / "cal.json")

    # a writer's un-checkpointed log next to the copy, then the directory made read-only
    live = sqlite3.connect(src / "study.sqlite")
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("PRAGMA wal_autocheckpoint=0")
    live.execute("CREATE TABLE later_writes (x)")
    live.commit()
    wal_src = tmp_path / "wal"
    wal_src.mkdir()
    for name in ("study.sqlite", "study.sqlite-wal"):
        shutil.copy(src / name, wal_src / name)
    live.close()
    hidden = r"study\.sqlite-wal that cannot be read in its read-only directory"
    with read_only_view(wal_src, tmp_path / "ro2") as ro, pytest.raises(RefitError, match=hidden):
        refit_from_studies(BACKEND, [ro / "study.sqlite"], tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()


def test_the_executor_waits_for_usage_ibm_still_computes(tmp_path: Path) -> None:
    """IBM fills a job's usage in after the job ends: the ledger row gets the final figure, not none."""
    recording = _recording(FIXTURE)
    backend = _backend(recording)
    jobs = _calibration_jobs(backend, recording)[:2]
    first = recording["jobs"][0]["job_id"]
    backend.client.pending_reads[first] = 3
    path = _run_into_study(backend, jobs, tmp_path / "study.sqlite", poll_interval_s=0.01, usage_wait_s=10.0)
    assert backend.client.metrics_reads[first] >= 4
    row = next(r for r in _rows(path) if r.provider_job_id == first)
    assert row.result["reported"]["seconds"] == recording["jobs"][0]["metrics"]["usage"]["qpu_charge_time_seconds"]


def test_braket_billed_seconds_and_tracker_dollars_are_reported_as_such() -> None:
    """The SDK's own Tracker hears a task complete while its result downloads and sums the billed duration."""
    from braket.tracking import Tracker
    from braket.tracking.tracking_context import broadcast_event
    from braket.tracking.tracking_events import _TaskCompletionEvent, _TaskCreationEvent

    from qnas_hw.hardware.backends.braket import BILLED_SECONDS, TRACKER_USD, _hearing, tracker_billed_seconds

    arn, sv1 = "arn:aws:braket:us-east-1:000000000000:quantum-task/t1", "arn:aws:braket:::device/quantum-simulator/sv1"
    tracker = Tracker()
    tracker.receive_event(_TaskCreationEvent(arn, 100, False, sv1))
    broadcast_event(_TaskCompletionEvent(arn, 4500.0, "COMPLETED"))  # not listening: unheard
    assert tracker_billed_seconds(tracker) is None
    with _hearing(tracker):  # what BraketCloudJob.counts() does around the downloads
        broadcast_event(_TaskCompletionEvent(arn, 4500.0, "COMPLETED"))
    assert tracker_billed_seconds(tracker) == pytest.approx(4.5)
    timing = JobTiming(None, 30.0, {BILLED_SECONDS: 4.5, TRACKER_USD: 0.00563})
    rep = reported_cost(timing, simulator=False)
    assert (rep["seconds"], rep["unit"], rep["usd"]) == (4.5, "billed", pytest.approx(0.00563))
    # a QPU task: no seconds (the 30 s wall clock includes the queue and is not billed), the Tracker's dollars kept
    qpu = reported_cost(JobTiming(None, 30.0, {BILLED_SECONDS: None, TRACKER_USD: 0.595}), simulator=False)
    assert qpu["seconds"] is None and qpu["unit"] is None and qpu["usd"] == pytest.approx(0.595)
    local = reported_cost(JobTiming(None, 0.8, {}), simulator=True)
    assert (local["seconds"], local["unit"]) == (0.8, "wall") and "wall clock" in local["source"]


def test_report_comparisons_of_the_replayed_jobs_match_the_ledger(replay_study: Path) -> None:
    with Study.open(replay_study) as study:
        ledger = JobLedger(study)
        try:
            costs = job_costs(ledger)
        finally:
            ledger.close()
    (comparison,) = compare_costs(costs)
    recording = _recording(FIXTURE)
    usage = sorted(float(j["metrics"]["usage"]["qpu_charge_time_seconds"]) for j in recording["jobs"])
    assert comparison.unit == "qpu" and sorted(comparison.reported) == usage
    # the guard's predictions (IBM's prior, 2 s + 1 x per-shot time) against the bill
    assert comparison.predicted == pytest.approx([c.predicted_s for c in costs])
    assert comparison.mape == pytest.approx(mape(comparison.reported, comparison.predicted))
