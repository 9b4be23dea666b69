"""``compute.device`` / ``--device``: validated, stored as asked, resolved when a run starts, refused clearly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from qnas_hw.cli import app
from qnas_hw.config import ConfigError, config_from_dict, default_config, resolve_device, with_overrides

runner = CliRunner()
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible: nothing to refuse")


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_device_is_stored_as_asked_and_old_studies_read_as_auto():
    cfg = default_config()
    assert cfg.compute.device == "auto" and cfg.resolved()["compute"]["device"] == "auto"
    stored = cfg.resolved()
    del stored["compute"]["device"]  # a study written before compute.device existed
    old = config_from_dict(stored, source="an old study")
    assert old.compute.device == "auto" and old.resolved() == cfg.resolved()
    assert with_overrides(cfg, **{"compute.device": "cpu"}).compute.device == "cpu"


def test_an_unknown_device_names_the_value_and_the_choices():
    with pytest.raises(ConfigError, match=r"compute\.device: Input should be 'auto', 'cpu' or 'cuda' \(got 'gpu'\)"):
        with_overrides(default_config(), **{"compute.device": "gpu"})
    with pytest.raises(ConfigError, match="'tpu' is not supported"):
        resolve_device("tpu")


def test_auto_and_cpu_resolve_to_what_torch_has():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@needs_no_cuda
def test_cuda_without_a_cuda_device_is_refused_by_name():
    with pytest.raises(ConfigError) as info:
        resolve_device("cuda")
    message = str(info.value)
    assert "compute.device = 'cuda' was asked for" in message
    assert "no CUDA device is visible" in message and "use device 'cpu', or 'auto'" in message
    # a study that asked for cuda still opens (for a report) on this machine: only running it is refused
    assert config_from_dict({"compute": {"device": "cuda"}}).compute.device == "cuda"


@needs_no_cuda
def test_cli_refuses_cuda_before_anything_is_created(tmp_path: Path):
    run = tmp_path / "run"
    res = _invoke("search", "--device", "cuda", "--out", str(run), "--no-progress")
    assert res.exit_code == 1 and "no CUDA device is visible" in res.output and "Traceback" not in res.output
    assert not (run / "study.sqlite").exists()
    res = _invoke("train", "--arch", "angle-y|q2|l1|ry|none|z", "--device", "cuda", "--no-progress")
    assert res.exit_code == 1 and "compute.device = 'cuda' was asked for" in res.output


def test_cli_device_flag_is_validated_and_cannot_change_on_resume(tmp_path: Path):
    res = _invoke("search", "--device", "gpu", "--out", str(tmp_path / "r"), "--no-progress")
    assert res.exit_code == 1 and "compute.device" in res.output and "'gpu'" in res.output
    res = _invoke("search", "--resume", str(tmp_path / "study.sqlite"), "--device", "cpu", "--no-progress")
    assert res.exit_code == 1 and "drop --device" in res.output


def test_train_on_the_cpu_gives_the_same_result_as_the_default(tmp_path: Path):
    arch = "angle-y|q2|l1|ry|ring|z"
    default = _invoke("train", "--arch", arch, "--epochs", "2", "--no-progress")
    on_cpu = _invoke("train", "--arch", arch, "--epochs", "2", "--device", "cpu", "--no-progress")
    assert default.exit_code == 0 and on_cpu.exit_code == 0, default.output + on_cpu.output

    def accuracies(output: str) -> list[str]:  # the result line without its wall time
        return [re.sub(r"[\d.]+ s,", "", line) for line in output.splitlines() if "best validation accuracy" in line]

    assert accuracies(default.output) and accuracies(default.output) == accuracies(on_cpu.output)
    assert "test accuracy" in accuracies(on_cpu.output)[0]
