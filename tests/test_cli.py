"""CLI: exit codes and messages for bad input (no tracebacks), search/report/train/devices end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qnas_hw.cli import _NON_GATES, app
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
    res = _invoke("search", "--backend", "fake_belm", "--out", str(tmp_path / "r"), "--no-progress")
    assert res.exit_code == 1 and "'fake_belm'" in res.output and "Traceback" not in res.output
    assert "did you mean 'fake_belem', " in res.output and "`qnas-hw devices --all`" in res.output
    assert "fake_kolkata" not in res.output  # three suggestions, not the ~75 names
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
    front = report["front"]  # ties within resolution collapsed: the front the study's generation records hold
    assert [f["architecture"] for f in front] == study.generations()[-1].front
    assert {f["architecture"] for f in front} <= set(report["exact_front"]) and front
    assert [g["generation"] for g in report["generations"]] == [1, 2]  # numbered as the console lines above

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


# ------------------------------------------------------------ consoles that explain themselves
@pytest.fixture(scope="module")
def narrow_run(tmp_path_factory: pytest.TempPathFactory, tiny_search_toml: str):
    """The tiny search run once on an 80-column console: (its output, the run directory)."""
    from rich.console import Console

    import qnas_hw.cli.common as cli

    tmp = tmp_path_factory.mktemp("narrow")
    cfg = tmp / "tiny.toml"
    cfg.write_text(tiny_search_toml)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "out_console", Console(width=80, soft_wrap=True))
        res = _invoke("search", "--config", str(cfg), "--out", str(tmp / "run"), "--no-progress")
    assert res.exit_code == 0, res.output
    return res.output, tmp / "run"


@pytest.fixture
def console_80(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's stdout console at 80 columns (what an 80-column terminal gets)."""
    from rich.console import Console

    import qnas_hw.cli.common as cli

    monkeypatch.setattr(cli, "out_console", Console(width=80, soft_wrap=True))


def test_search_console_and_summary_count_candidates_alike(narrow_run) -> None:
    import re

    output, run = narrow_run
    assert "Traceback" not in output
    summary = (run / "report" / "summary.md").read_text()
    pattern = r"study holds \d+ candidates \(\d+ feasible, \d+ infeasible, \d+ failed\)"
    (in_summary,) = re.findall(pattern, summary)
    on_console = re.findall(pattern, output)
    # the last generation's line, the closing summary and summary.md: one classification, one wording
    assert on_console[-2:] == [in_summary, in_summary] and len(on_console) == 3
    assert "generation 2/2: " + in_summary in output
    infeasible = int(re.search(r"(\d+) infeasible", in_summary).group(1))
    assert infeasible > 0  # the tiny study has cut plans too large to score: infeasible, not failed
    assert "infeasible because" in output and "infeasible because" in summary
    assert "re-proposed architectures answered from stored results (not re-run)" in output
    assert "reused from the study" not in output and "taken from the study" not in output


def test_search_front_table_fits_80_columns_with_whole_architectures(narrow_run) -> None:
    output, run = narrow_run
    table = output[output.index("Pareto front") : output.index("this run:")]
    assert max(len(line) for line in table.splitlines()) <= 80
    front = json.loads((run / "report" / "report.json").read_text())["front"]
    for f in front:
        assert any(f["architecture"] in line for line in table.splitlines()), f["architecture"]
    assert "…" not in table


def test_devices_fits_80_columns_and_says_na_for_local_backends(console_80) -> None:
    from qnas_hw.hardware.backends import list_backends

    res = _invoke("devices")
    assert res.exit_code == 0 and "Traceback" not in res.output
    lines = res.output.splitlines()
    table = lines[: next(i for i, line in enumerate(lines) if line.startswith("note:"))]
    assert max(len(line) for line in table) <= 80
    rows = {line.split()[0]: line for line in table if line.strip() and line.split()[0] in _local_names()}
    assert rows["fake_kolkata"].split()[1:5] == ["snapshot", "27", "heavy-hex", "n/a"]
    assert rows["aer_ideal"].split()[1] == "simulator" and " n/a " in rows["aer_ideal"]
    assert all(" n/a " in row for row in rows.values()) and "True" not in res.output and "False" not in res.output
    assert "missing" in res.output or "found" in res.output  # the cloud rows still say whether an account exists
    # every gate of every local backend is on screen (wrapped onto continuation lines, never cropped)
    start = next(line for line in table if " gates" in line).index("gates")
    for r in list_backends():
        if r["name"] in rows:
            at = table.index(rows[r["name"]])
            block = [table[at], *itertools.takewhile(lambda line: not line[:start].strip(), table[at + 1 :])]
            shown = " ".join(line[start:] for line in block).split()
            assert [g for g in r["basis"] if g not in _NON_GATES] == shown, (r["name"], block)


def _local_names() -> set[str]:
    from qnas_hw.hardware.backends import known_backend_names

    return set(known_backend_names())


def test_devices_all_lists_every_fake_backend_the_registry_accepts(console_80) -> None:
    from qnas_hw.hardware.backends.ibm import fake_names

    res = _invoke("devices", "--all")
    assert res.exit_code == 0 and "Traceback" not in res.output
    listed = {line.split()[0] for line in res.output.splitlines() if line.strip().startswith("fake_")}
    assert listed == set(fake_names()) and len(listed) > 6
    assert "UserWarning" not in res.output  # construction warnings become notes
    short = _invoke("devices")
    assert len({line.split()[0] for line in short.output.splitlines() if line.startswith(" fake_")}) < len(listed)
    assert "qnas-hw devices --all" in short.output


def test_train_outside_the_study_space_warns_and_still_keeps_the_result(narrow_run) -> None:
    _, run = narrow_run
    outside = "angle-x|q2|l1|ry|none|z"  # the tiny space has angle-y and iqp embeddings only
    res = _invoke("train", "--arch", outside, "--study", str(run / "study.sqlite"), "--epochs", "1", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    assert "warning:" in res.output and "outside the search space" in res.output and "'angle-x'" in res.output
    assert "saved the weights to " in res.output and list((run / "trained").glob("angle-x_q2_l1_ry_none_z-*.pt"))

    inside = json.loads((run / "report" / "report.json").read_text())["front"][0]["architecture"]
    res = _invoke("train", "--arch", inside, "--study", str(run / "study.sqlite"), "--epochs", "1", "--no-progress")
    assert res.exit_code == 0 and "warning:" not in res.output and "Traceback" not in res.output


def test_train_out_names_files_by_architecture_and_key(narrow_run, tmp_path: Path) -> None:
    from qnas_hw.model.space import Architecture

    _, run = narrow_run
    arch = Architecture.parse("iqp|q2|l1|ry|ring|z")
    res = _invoke(
        "train", "--arch", arch.canonical(), "--study", str(run / "study.sqlite"), "--epochs", "1",
        "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    stem = f"iqp_q2_l1_ry_ring_z-{arch.key()}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{stem}.json", f"{stem}.pt"]
    assert json.loads((tmp_path / f"{stem}.json").read_text())["architecture"] == arch.canonical()


# ------------------------------------------------------------ the qubit budget says where it comes from
def test_search_says_which_qubit_budget_it_uses_and_why(narrow_run) -> None:
    res = _invoke("search", "--dry-run", "--backend", "fake_belem")
    assert res.exit_code == 0, res.output
    assert "qubit budget 5 (follows fake_belem's 5 qubits)" in res.output  # not the default job's 2
    res = _invoke("search", "--dry-run")
    assert res.exit_code == 0 and "qubit budget 2 (the default job's, for fake_kolkata)" in res.output
    res = _invoke("search", "--dry-run", "--backend", "fake_belem", "--qubit-budget", "3")
    assert res.exit_code == 0 and "qubit budget 3 (--qubit-budget)" in res.output
    output, _ = narrow_run  # a real search's start line: the tiny config sets its budget
    assert "; qubit budget 2 (set by hardware.qubit_budget))" in output


# ------------------------------------------------------------ a closed pipe is not a failure
@pytest.mark.parametrize("args", [["--version"], ["--help"], ["devices"]], ids=["version", "help", "devices"])
def test_a_reader_closing_the_pipe_early_ends_quietly_with_status_0(args: list[str]) -> None:
    """`qnas-hw devices --all | head`: the reader leaves before the output ends; a Unix tool then exits 0, silently."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "qnas_hw.cli", *args], stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    os.close(read_end)  # closed before the command prints: its first write meets a pipe without a reader
    _, err = proc.communicate(timeout=300)
    assert (proc.returncode, err.decode()) == (0, "")


# ------------------------------------------------------------ train keeps its result and says what it measured
def test_train_keeps_its_result_in_the_study_run_directory(narrow_run) -> None:
    import torch

    from qnas_hw.model.space import Architecture

    _, run = narrow_run
    arch = Architecture.parse("angle-y|q2|l1|ry|ring|z")
    args = ("train", "--arch", arch.canonical(), "--study", str(run / "study.sqlite"), "--epochs", "1", "--no-progress")
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    stem = f"angle-y_q2_l1_ry_ring_z-{arch.key()}"
    weights, figures = run / "trained" / f"{stem}.pt", run / "trained" / f"{stem}.json"
    assert f"saved the weights to {weights} and the figures to {figures}" in res.output
    assert torch.load(weights)  # a state dict
    data = json.loads(figures.read_text())
    assert data["architecture"] == arch.canonical() and data["study"] == str(run / "study.sqlite")
    assert data["test_accuracy_mode"] == "ideal" and data["noisy_test"] is None
    # it says the test accuracy is exact, and how to get it under the target's noise
    assert f"test accuracy {100 * data['test_acc']:.2f}% (exact: noise-free simulator)" in res.output
    assert "`--accuracy noisy` also scores it under fake_kolkata's noise model" in res.output
    again = _invoke(*args)
    assert again.exit_code == 0 and "(replacing an earlier retrain of this architecture)" in again.output


def test_train_accuracy_noisy_scores_the_test_split_as_the_search_scores_noisy(narrow_run, tmp_path: Path) -> None:
    import torch

    from qnas_hw.config import config_from_dict
    from qnas_hw.data import load_dataset, stratified_subset
    from qnas_hw.model.hqnn import HQNN
    from qnas_hw.model.space import Architecture
    from qnas_hw.search.building import make_hardware, make_scorer

    _, run = narrow_run
    arch = Architecture.parse("iqp|q2|l1|ry|ring|z")
    res = _invoke(
        "train", "--arch", arch.canonical(), "--study", str(run / "study.sqlite"), "--epochs", "1",
        "--accuracy", "noisy", "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    noisy = data["noisy_test"]
    assert noisy["backend"] == "fake_kolkata" and noisy["accuracy_mode"] == "noisy" and noisy["shots"] == 1024
    assert noisy["samples"] == noisy["test_samples"] > 0  # the whole (small) test split: fewer than val_samples
    assert 0.0 <= noisy["test_acc"] <= 1.0
    assert f"test accuracy under fake_kolkata's noise: {100 * noisy['test_acc']:.2f}% (" in res.output
    assert f"exact (noise-free simulator): {100 * data['test_acc']:.2f}%" in res.output  # reported beside it

    # the number is the search's noisy score (NoisyScorer on the study's backend) of the saved weights
    with Study.open(run / "study.sqlite") as study:
        cfg = config_from_dict(study.config)
    assert cfg.search.accuracy == "noisy"
    d = cfg.data
    splits = load_dataset(d.dataset, d.data_dir, val_fraction=d.val_fraction, seed=cfg.seed, limit_train=d.limit_train)
    model = HQNN(arch, tuple(splits.input_shape), splits.n_classes, frontend=cfg.model.frontend, seed=cfg.seed)
    model.load_state_dict(torch.load(tmp_path / f"iqp_q2_l1_ry_ring_z-{arch.key()}.pt"))
    hw = make_hardware(cfg)
    scorer = make_scorer(cfg, hw.backend, hw.transpiler, hw.planner)
    X, y = splits.test.tensors
    idx = torch.as_tensor(stratified_subset(y.numpy(), cfg.search.val_samples, cfg.seed))
    assert scorer.score(arch, model, X[idx], y[idx])[0] == noisy["test_acc"]


def test_train_accuracy_refusals_come_before_any_training(narrow_run, tmp_path: Path) -> None:
    _, run = narrow_run
    study = ("--study", str(run / "study.sqlite"), "--out", str(tmp_path), "--no-progress")
    res = _invoke("train", "--arch", "iqp|q2|l1|ry|ring|z", *study, "--accuracy", "device")
    assert res.exit_code == 1 and "'device' is not supported by train" in res.output and "hw-eval" in res.output
    # 3 qubits on the study's 2-qubit budget: a cut plan far beyond search.cut_max_experiments
    res = _invoke("train", "--arch", "iqp|q3|l1|ry|ring|z", *study, "--accuracy", "noisy")
    assert res.exit_code == 1 and "cannot be scored under fake_kolkata's noise with qubit budget 2" in res.output
    ideal = tmp_path / "ideal.toml"
    ideal.write_text('[data]\ndataset = "iris"\n[hardware]\nbackend = "aer_ideal"\n')
    res = _invoke("train", "--arch", "iqp|q2|l1|ry|ring|z", "--config", str(ideal), "--out", str(tmp_path),
                  "--accuracy", "noisy", "--no-progress")  # fmt: skip
    assert res.exit_code == 1 and "backend 'aer_ideal' has none" in res.output
    assert "validation accuracy" not in res.output and list(tmp_path.iterdir()) == [ideal]  # nothing trained
