"""CLI: exit codes and messages for bad input (no tracebacks), search/report/train/devices end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qnas_hw.cli import app
from qnas_hw.search.study import Study

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_bad_config_value_exits_1_with_message(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[search]\npop_size = 2\n")
    res = _invoke("search", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress")
    assert res.exit_code == 1
    assert "search.pop_size" in res.output and "bad.toml" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "run").exists()  # nothing created for a rejected config


def test_unknown_backend_and_budget_overrides_are_validated(tmp_path: Path) -> None:
    res = _invoke("search", "--backend", "fake_nowhere", "--out", str(tmp_path / "r"), "--no-progress")
    assert res.exit_code == 1 and "'fake_nowhere'" in res.output and "fake_kolkata" in res.output
    res = _invoke("search", "--qubit-budget", "0", "--out", str(tmp_path / "r"), "--no-progress")
    assert res.exit_code == 1 and "qubit_budget=0" in res.output


def test_missing_files_exit_1(tmp_path: Path) -> None:
    res = _invoke("report", str(tmp_path / "nope.sqlite"))
    assert res.exit_code == 1 and "does not exist" in res.output
    res = _invoke("search", "--resume", str(tmp_path / "nope.sqlite"), "--no-progress")
    assert res.exit_code == 1 and "does not exist" in res.output
    res = _invoke("train", "--arch", "angle-y|q9|bad", "--no-progress")
    assert res.exit_code == 1 and "cannot parse architecture" in res.output


def test_search_resume_report_train(tmp_path: Path, tiny_search_toml: str) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(tiny_search_toml)
    run = tmp_path / "run"
    res = _invoke("search", "--config", str(cfg), "--out", str(run), "--no-progress", "--seed", "7")
    assert res.exit_code == 0, res.output
    assert "Pareto front" in res.output and "candidates evaluated" in res.output
    assert "generation 2/2:" in res.output and "best val_error" in res.output  # one line per generation
    study = Study.open(run / "study.sqlite")
    assert study.config["seed"] == 7  # the --seed override is what the study records
    assert json.loads((run / "study.config.json").read_text())["seed"] == 7
    assert (run / "report" / "summary.md").is_file()
    n = study.n_candidates()
    assert len(study.generations()) == 2

    # resume refuses changed settings and never overwrites; a finished study resumes as a no-op
    res = _invoke("search", "--resume", str(run / "study.sqlite"), "--seed", "1", "--no-progress")
    assert res.exit_code == 1 and "--seed" in res.output
    res = _invoke("search", "--config", str(cfg), "--out", str(run), "--no-progress")
    assert res.exit_code == 1 and "already exists" in res.output
    res = _invoke("search", "--resume", str(run / "study.sqlite"), "--no-progress")
    assert res.exit_code == 0 and "0 candidates evaluated" in res.output
    res = _invoke("hw-eval", str(run / "study.sqlite"), "--max-cost", "-5")  # the flag is named, not a field
    assert res.exit_code == 1 and "--max-cost -5 must be >= 0" in res.output and "Budget." not in res.output
    assert Study.open(run / "study.sqlite").n_candidates() == n

    out = tmp_path / "rep"
    res = _invoke("report", str(run / "study.sqlite"), "--out", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["exact_front"]) == set(study.generations()[-1].front)
    front = report["front"]  # ties within resolution collapsed
    assert {f["architecture"] for f in front} <= set(report["exact_front"]) and front

    arch = front[0]["architecture"]
    res = _invoke(
        "train",
        "--arch",
        arch,
        "--study",
        str(run / "study.sqlite"),
        "--epochs",
        "2",
        "--out",
        str(tmp_path / "t"),
        "--no-progress",
    )
    assert res.exit_code == 0, res.output
    assert "validation accuracy" in res.output and "test accuracy" in res.output
    (summary,) = list((tmp_path / "t").glob("*.json"))
    data = json.loads(summary.read_text())
    assert data["architecture"] == arch and 0.0 <= data["test_acc"] <= 1.0 and data["epochs_run"] == 2
    res = _invoke("train", "--arch", arch, "--study", str(run / "study.sqlite"), "--config", str(cfg))
    assert res.exit_code == 1 and "either --config or --study" in res.output


def test_devices_lists_default_backend() -> None:
    res = _invoke("devices")
    assert res.exit_code == 0
    assert "fake_kolkata" in res.output and "ibm:<device>" in res.output


@pytest.mark.slow
def test_calibrate_quick_aer_ideal(tmp_path: Path) -> None:
    out = tmp_path / "aer_ideal.json"
    res = _invoke("calibrate", "--backend", "aer_ideal", "--quick", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert out.is_file() and "MAPE" in res.output


def test_version_flag_prints_the_installed_version() -> None:
    from importlib.metadata import version

    res = _invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"qnas-hw {version('qnas-hw')}"


def test_a_device_smaller_than_any_candidate_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    res = _invoke("search", "--backend", "fake_armonk", "--out", str(tmp_path / "run"), "--no-progress")
    assert res.exit_code == 1 and "fake_armonk has 1 qubit" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run" / "study.sqlite").exists()


def test_data_dir_flag_points_the_loader_at_a_directory(tmp_path: Path) -> None:
    cfg = tmp_path / "mnist.toml"
    cfg.write_text('[data]\ndataset = "mnist"\n')
    empty = tmp_path / "no-idx-here"
    empty.mkdir()
    res = _invoke("train", "--arch", "angle-y|q2|l1|ry|none|z", "--config", str(cfg), "--data-dir", str(empty))
    assert res.exit_code == 1 and str(empty) in res.output and "download = true" in res.output
    res = _invoke(
        "search", "--config", str(cfg), "--data-dir", str(empty), "--out", str(tmp_path / "r"), "--no-progress"
    )
    assert res.exit_code == 1 and str(empty) in res.output
    assert not (tmp_path / "r" / "study.sqlite").exists()


def test_data_download_is_a_config_key() -> None:
    from qnas_hw.config import RunConfig

    assert RunConfig.model_validate({"data": {"download": True}}).data.download is True
    assert RunConfig().data.download is False
