"""A device-mode search on a fake backend run locally, then its jobs: refitted, reported, and shown by hw-eval.

The search is the shared small ``accuracy = "device"`` search (tests/configs.py) with 3 validation samples per
job, so its ledger holds enough jobs (33) to refit ``fake_kolkata``'s 8-coefficient wall model.  References: the
executor's own timing of each job (``result.timing.wall_seconds``), the shipped calibration file's model applied
to the stored workloads, and the files on disk before and after a dry run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from configs import DEVICE_BACKEND, device_search_config
from typer.testing import CliRunner

from qnas_hw.cli import app
from qnas_hw.hardware.backends import calibration_dir
from qnas_hw.hardware.cost import CostModel, Workload, mape
from qnas_hw.jobs import JobLedger, LedgerState
from qnas_hw.reports.plots import JOB_COST_PNG
from qnas_hw.reports.report import write_report
from qnas_hw.search.nsga import run_search
from qnas_hw.search.study import Study

runner = CliRunner()
#: Set to a directory to keep the rendered plot there for a person to look at.
PLOT_DIR_ENV = "QNAS_TEST_PLOT_DIR"


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def device_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("device-search")
    run_search(device_search_config(device={"chunk_rows": 3}), out, progress=False).close()
    return out / "study.sqlite"


def _done_rows(path: Path, batch_prefix: str = "search") -> list:
    with Study.open(path) as study:
        ledger = JobLedger(study)
        try:
            return [r for r in ledger.jobs() if r.state is LedgerState.DONE and r.batch.startswith(batch_prefix)]
        finally:
            ledger.close()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_local_device_job_keeps_its_workload_and_its_wall_seconds_marked_as_such(device_study: Path) -> None:
    rows = _done_rows(device_study)
    assert len(rows) >= 30
    shipped = CostModel.load(calibration_dir() / f"{DEVICE_BACKEND}.json", max_age_days=None)
    for row in rows:
        cost, reported = row.meta["cost"], row.result["reported"]
        works = [Workload.from_dict(w) for w in cost["workloads"]]
        assert len(works) == row.n_pubs and sum(w.circuits for w in works) == row.n_rows
        assert sum(w.shots_total for w in works) == row.meta["pred_shots"]
        # a fake backend run locally reports no QPU time: the row's figure is the executor's wall clock, marked
        assert reported["unit"] == "wall" and "wall clock" in reported["source"]
        assert reported["seconds"] == row.result["timing"]["wall_seconds"] > 0
        assert row.result["timing"]["quantum_seconds"] is None
        # both predictions of the day, from the model the search used (the shipped file)
        assert cost["pred_wall_s"] == pytest.approx(sum(shipped.predict_wall(w) for w in works))
        assert cost["pred_device_s"] == pytest.approx(sum(shipped.predict_device(w) for w in works))
        assert cost["pred_device_s"] == pytest.approx(row.meta["pred_seconds"])  # runtime_s is in QPU seconds


def test_calibrate_from_the_study_writes_the_fit_with_provenance_and_a_dry_run_changes_nothing(
    device_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_dir = tmp_path / "user-calibration"
    monkeypatch.setenv("QNAS_CALIBRATION_DIR", str(user_dir))
    res = _invoke("calibrate", "--backend", DEVICE_BACKEND, "--from-study", str(device_study))
    assert res.exit_code == 0, res.output
    n = len(_done_rows(device_study))
    assert f"refit of the wall model on {n} jobs" in res.output and "overrides the shipped" in res.output
    path = user_dir / f"{DEVICE_BACKEND}.json"
    assert f"wrote {path}" in res.output.replace("\n", "")

    model = CostModel.load(path, backend_name=DEVICE_BACKEND, max_age_days=None)
    assert model.wall is not None and model.provenance["wall_model"]["fitted"] is True
    shipped = CostModel.load(calibration_dir() / f"{DEVICE_BACKEND}.json", max_age_days=None)
    assert model.device == shipped.device  # the QPU model of a snapshot is not what local jobs measure
    prov = model.provenance["calibration"]
    assert prov["source"] == "studies" and prov["jobs"] == n == model.fit.n_train + model.fit.n_heldout
    assert prov["from_studies"] == [
        {
            "study": str(device_study),
            "jobs": n,
            "first": prov["date_range"][0],
            "last": prov["date_range"][1],
            "batches": [f"search|{DEVICE_BACKEND}|seed=3"],
        }
    ]
    rows = {r.key: r for r in _done_rows(device_study)}
    assert {p["key"] for p in prov["points"]} == set(rows)
    assert all(p["measured_s"] == rows[p["key"]].result["timing"]["wall_seconds"] for p in prov["points"])
    assert prov["date_range"] == [min(r.updated_at for r in rows.values()), max(r.updated_at for r in rows.values())]

    before = {"calibration": _files(user_dir), "study": _files(device_study.parent)}
    res = _invoke(
        "calibrate", "--backend", DEVICE_BACKEND, "--from-study", str(device_study), "--dry-run", "--seed", "1"
    )
    assert res.exit_code == 0, res.output
    assert "dry run: nothing written" in res.output and "held-out MAPE" in res.output
    assert {"calibration": _files(user_dir), "study": _files(device_study.parent)} == before


def test_cli_refusals_name_the_problem(device_study: Path, tmp_path: Path) -> None:
    res = _invoke(
        "calibrate", "--backend", "aer_ideal", "--from-study", str(device_study), "--out", str(tmp_path / "x")
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"no finished jobs on aer_ideal; its jobs ran on {DEVICE_BACKEND}" in res.output.replace("\n", " ")
    res = _invoke("calibrate", "--backend", "aer_ideal", "--dry-run")
    assert res.exit_code == 1 and "--from-study" in res.output
    assert not (tmp_path / "x").exists()


def test_the_report_shows_predicted_against_reported_per_job(device_study: Path, tmp_path: Path) -> None:
    with Study.open(device_study) as study:
        files = write_report(study, tmp_path / "report")
    data = json.loads(files.report_json.read_text())
    (comparison,) = [c for c in data["job_costs"] if c["backend"] == DEVICE_BACKEND and c["unit"] == "wall"]
    rows = {r.key: r for r in _done_rows(device_study, "")}
    assert comparison["jobs"] == len(comparison["rows"]) == len(rows)
    for r in comparison["rows"]:
        assert r["reported"] == rows[r["key"]].result["timing"]["wall_seconds"]
        assert r["predicted"] == rows[r["key"]].meta["cost"]["pred_wall_s"]
    reported = np.array([r["reported"] for r in comparison["rows"]])
    predicted = np.array([r["predicted"] for r in comparison["rows"]])
    assert comparison["mape"] == pytest.approx(mape(reported, predicted))

    summary = files.summary_md.read_text()
    assert "## Job cost: predicted against reported" in summary
    assert f"| {DEVICE_BACKEND} | wall s (local run) | {len(rows)} |" in summary
    assert f"{100 * comparison['mape']:.1f}%" in summary
    png = files.out_dir / JOB_COST_PNG
    assert png in files.plots and png.stat().st_size > 10_000
    if os.environ.get(PLOT_DIR_ENV):  # for a person to look at
        Path(os.environ[PLOT_DIR_ENV]).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(os.environ[PLOT_DIR_ENV]) / JOB_COST_PNG)


def test_hw_eval_prints_its_jobs_predicted_against_reported(device_study: Path, tmp_path: Path) -> None:
    study = tmp_path / "copy" / "study.sqlite"
    shutil.copytree(device_study.parent, study.parent)
    res = _invoke("hw-eval", str(study), "--shots", "32", "--max-samples", "4", "--chunk-rows", "2")
    assert res.exit_code == 0, res.output
    rows = _done_rows(study, "hw-eval")
    assert rows and all(r.meta["cost"]["workloads"] and r.result["reported"]["unit"] == "wall" for r in rows)
    text = " ".join(res.output.split())
    assert f"cost model against the provider: {DEVICE_BACKEND}: {len(rows)} jobs, wall s (local run)" in text
    assert "per job MAPE" in text
