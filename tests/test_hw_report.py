"""Hardware results in reports, and ``hw_eval.enabled`` in ``qnas-hw search``, end to end on a local backend.

Reference: the rows the hardware evaluation stored (read back through
:func:`qnas_hw.search.hw_eval.stored_results`, the writer's own reader);
the report files must carry exactly those figures.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qnas_hw.cli import app
from qnas_hw.jobs import JobLedger
from qnas_hw.reports.data import latest_hardware, measured_seconds
from qnas_hw.search.hw_eval import stored_results
from qnas_hw.search.study import Study

runner = CliRunner()

#: Added to conftest's tiny search (Iris, 2-3 qubits, 4 x 2 candidates): a cheap hardware evaluation of the front.
HW_EVAL_TOML = """
[hw_eval]
enabled = true
shots = 64
max_samples = 6
chunk_rows = 6
"""
BACKEND = "fake_kolkata"


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def _stored(path: Path) -> list[dict]:
    ledger = JobLedger(path)
    try:
        return stored_results(ledger)
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory: pytest.TempPathFactory, tiny_search_toml: str) -> tuple[Path, str]:
    """One search with ``hw_eval.enabled``: search, then the front measured on fake_kolkata, then the report."""
    tmp = tmp_path_factory.mktemp("hw")
    cfg = tmp / "tiny.toml"
    cfg.write_text(tiny_search_toml + HW_EVAL_TOML)
    res = _invoke("search", "--config", str(cfg), "--backend", BACKEND, "--out", str(tmp / "run"), "--no-progress")
    assert res.exit_code == 0, res.output
    return tmp / "run", res.output


def test_search_with_hw_eval_enabled_reports_the_stored_results(evaluated_run: tuple[Path, str]) -> None:
    run, output = evaluated_run
    with Study.open(run / "study.sqlite") as study:
        front = set(study.generations()[-1].front)
    stored = _stored(run / "study.sqlite")
    assert {r["arch"] for r in stored} == front  # which = "front": every front member, nothing else
    assert all(r["backend"] == BACKEND and r["n_samples"] == 6 for r in stored)
    # an uncut candidate spends rows x shots; a cut one (wider than the 2-qubit budget) at least that per circuit
    assert all(r["shots"] == 6 * 64 for r in stored if r["circuits_per_sample"] == 1)
    assert all(r["shots"] >= 6 * 64 * r["circuits_per_sample"] for r in stored)
    # (a 3-qubit candidate running through its cut plan: the `--which all` batch of the next test)
    assert "hardware validation accuracy" in output and "Pareto front" in output  # (narrow test terminal: headers cut)
    by_arch = {r["arch"]: r for r in stored}

    rep = run / "report"
    rows = {r["architecture"]: r for r in csv.DictReader((rep / "front.csv").open())}
    # hw-eval measures the front the report shows (ties within resolution collapsed): its rows, no more, no fewer
    assert rows and set(rows) == front
    assert {f["architecture"] for f in json.loads((rep / "report.json").read_text())["front"]} == front
    for arch, r in by_arch.items():
        if arch not in rows:
            continue
        assert float(rows[arch][f"hw_acc@{BACKEND}"]) == pytest.approx(r["accuracy"])
        assert int(rows[arch][f"hw_shots@{BACKEND}"]) == r["shots"]
        assert float(rows[arch][f"hw_seconds@{BACKEND}"]) == pytest.approx(r["wall_seconds"])  # no QPU time locally

    data = json.loads((rep / "report.json").read_text())
    assert data["hardware_backends"] == [BACKEND]
    for cand in data["front"]:
        hw = cand["hardware"][BACKEND]
        ref = by_arch[cand["architecture"]]
        assert hw["accuracy"] == pytest.approx(ref["accuracy"])
        assert hw["simulator_accuracy"] == pytest.approx(ref["simulator_accuracy"])
        assert (hw["shots"], hw["n_samples"], hw["batch"]) == (ref["shots"], 6, ref["batch"])
        assert hw["seconds_source"] == "wall"
    off_front = [c for c in data["candidates"] if c["architecture"] not in front]  # hw-eval ran the report's front
    assert off_front and all(c["hardware"] == {} for c in off_front)

    summary = (rep / "summary.md").read_text()
    assert "## Hardware evaluation" in summary
    for arch, r in by_arch.items():
        escaped = arch.replace("|", "\\|")  # a bare '|' would split the Markdown cell
        line = next(
            ln for ln in summary.splitlines() if ln.startswith(f"| `{escaped}` |") and f"| {BACKEND} |" in ln
        )  # (its row of the hardware table; the front table above lists it too)
        assert len(line.replace("\\|", "").split("|")) == 10  # 8 cells
        assert f"| {BACKEND} |" in line and f"| {100 * r['accuracy']:.2f}% |" in line
        assert f"| {100 * r['simulator_accuracy']:.2f}% |" in line and f"| {r['shots']} |" in line

    # resuming the finished search re-runs the enabled evaluation from the ledger: nothing submitted again
    ledger = JobLedger(run / "study.sqlite")
    try:
        jobs_before = {j.key: j.provider_job_id for j in ledger.jobs()}
    finally:
        ledger.close()
    res = _invoke("search", "--resume", str(run / "study.sqlite"), "--no-progress")
    assert res.exit_code == 0, res.output
    assert "0 candidates evaluated" in res.output
    ledger = JobLedger(run / "study.sqlite")
    try:
        assert {j.key: j.provider_job_id for j in ledger.jobs()} == jobs_before
    finally:
        ledger.close()
    again = {r["arch"]: r for r in _stored(run / "study.sqlite")}
    assert {a: (r["accuracy"], r["job_ids"]) for a, r in again.items()} == {
        a: (r["accuracy"], r["job_ids"]) for a, r in by_arch.items()
    }
    assert all(r["reused_jobs"] == r["jobs"] for r in again.values())


def test_hw_eval_command_dry_run_then_new_batch_updates_the_report(evaluated_run: tuple[Path, str]) -> None:
    run, _ = evaluated_run
    path = run / "study.sqlite"
    before = _stored(path)
    res = _invoke("hw-eval", str(path), "--dry-run", "--shots", "32")
    assert res.exit_code == 0, res.output
    assert "dry run: nothing was submitted" in res.output and _stored(path) == before

    # a second batch (other shots, every feasible candidate): the report shows the latest result of each
    res = _invoke("hw-eval", str(path), "--which", "all", "--shots", "32", "--max-samples", "4")
    assert res.exit_code == 0, res.output
    latest = latest_hardware(_stored(path))
    assert all(v[BACKEND]["shots"] >= 4 * 32 * v[BACKEND]["circuits_per_sample"] for v in latest.values())
    assert any(v[BACKEND]["circuits_per_sample"] > 1 for v in latest.values())  # a 3-qubit one ran as its cut plan
    assert "report:" in res.output  # hw-eval rewrote the study's report
    rows = {r["architecture"]: r for r in csv.DictReader((run / "report" / "front.csv").open())}
    assert set(rows) <= set(latest)
    for arch, per_backend in latest.items():
        if arch not in rows:  # measured by `--which all`, not on the report's front
            continue
        assert int(rows[arch][f"hw_shots@{BACKEND}"]) == latest[arch][BACKEND]["shots"] >= 4 * 32
        assert float(rows[arch][f"hw_acc@{BACKEND}"]) == pytest.approx(per_backend[BACKEND]["accuracy"])


def test_budget_refusal_after_search_exits_1_and_keeps_the_search(tmp_path: Path, tiny_search_toml: str) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(tiny_search_toml + HW_EVAL_TOML + "max_shots = 10\n")  # the [hw_eval] table comes last
    run = tmp_path / "run"
    res = _invoke("search", "--config", str(cfg), "--backend", BACKEND, "--out", str(run), "--no-progress")
    assert res.exit_code == 1
    assert "max-shots" in res.output and "search itself is complete" in res.output and "Traceback" not in res.output
    assert "Pareto front" in res.output  # the front was printed and the report written before the refusal
    with Study.open(run / "study.sqlite") as study:
        assert len(study.generations()) == 2 and study.n_candidates() == 8
    assert (run / "report" / "summary.md").is_file()
    assert "Hardware evaluation" not in (run / "report" / "summary.md").read_text()
    assert "hw_eval_results" not in _tables(run / "study.sqlite")  # nothing was submitted or stored
    res = _invoke("hw-eval", str(run / "study.sqlite"), "--dry-run")
    assert res.exit_code == 0 and "would refuse" in res.output and "max-shots" in res.output

    # reporting a study without hardware results works and adds no table to it
    res = _invoke("report", str(run / "study.sqlite"), "--out", str(tmp_path / "rep"))
    assert res.exit_code == 0, res.output
    assert "hw_acc" not in (tmp_path / "rep" / "front.csv").read_text()
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["hardware_backends"] == []
    assert "hw_eval_results" not in _tables(run / "study.sqlite")


def test_latest_hardware_keeps_the_newest_row_per_backend() -> None:
    rows = [  # newest first, as stored_results returns them
        {"arch": "a", "backend": "x", "accuracy": 0.9, "shots": 1, "wall_seconds": 2.0, "quantum_seconds": None},
        {"arch": "a", "backend": "y", "accuracy": 0.5, "shots": 2, "wall_seconds": 3.0, "quantum_seconds": 1.5},
        {"arch": "a", "backend": "x", "accuracy": 0.1, "shots": 3, "wall_seconds": 4.0, "quantum_seconds": None},
    ]
    latest = latest_hardware(rows)
    assert latest["a"]["x"]["accuracy"] == 0.9 and latest["a"]["y"]["accuracy"] == 0.5
    assert measured_seconds(latest["a"]["y"]) == (1.5, "QPU") and measured_seconds(latest["a"]["x"]) == (2.0, "wall")
    with pytest.raises(ValueError, match="'backend'"):
        latest_hardware([{"arch": "a"}])


def test_hw_eval_config_as_objective_is_gone_but_old_studies_load() -> None:
    from qnas_hw.config import ConfigError, config_from_dict

    stored = config_from_dict({"hw_eval": {"as_objective": False, "max_samples": 5}})  # a pre-removal study config
    assert stored.hw_eval.max_samples == 5 and "as_objective" not in stored.model_dump()["hw_eval"]
    with pytest.raises(ConfigError, match=r"as_objective=True is not supported.*search.accuracy = 'device'"):
        config_from_dict({"hw_eval": {"as_objective": True}})
    with pytest.raises(ConfigError, match="chunk_rows=0"):
        config_from_dict({"hw_eval": {"chunk_rows": 0}})
