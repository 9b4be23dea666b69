"""A start that fails after its study exists: the same command continues it; another configuration replaces it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import qnas_hw.model.supercircuit as supercircuit
from qnas_hw.cli import app
from qnas_hw.search.study import Study

runner = CliRunner()


def _search(cfg: Path, out: Path, *extra: str):
    return runner.invoke(app, ["search", "--config", str(cfg), "--out", str(out), "--no-progress", *extra])


def _fail_in_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SuperCircuit training dies (as a crash or a provider outage would) after the study was created."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected failure during SuperCircuit training")

    monkeypatch.setattr(supercircuit, "train_supercircuit", broken)


def _start_that_fails(tmp_path: Path, toml: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Run the tiny search with a training failure injected; returns its config file and run directory."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(toml.replace("[search]\n", '[search]\nproxy = "inherited"\n'))  # the proxy that trains it
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _fail_in_training(m)
        assert _search(cfg, out).exit_code != 0
    return cfg, out


def test_the_same_command_continues_a_failed_start(
    tmp_path: Path, tiny_search_toml: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, out = _start_that_fails(tmp_path, tiny_search_toml, monkeypatch)
    with Study.open(out / "study.sqlite") as s:  # the failed start left an empty study behind
        assert not s.holds_results()
    res = _search(cfg, out)  # the same command, not --resume
    assert res.exit_code == 0, res.output
    assert "already exists" not in res.output
    with Study.open(out / "study.sqlite") as s:
        assert s.holds_results() and len(s.generations()) == 2

    reference = tmp_path / "reference"
    assert _search(cfg, reference).exit_code == 0
    with Study.open(out / "study.sqlite") as a, Study.open(reference / "study.sqlite") as b:
        assert [(c.arch.canonical(), c.objectives) for c in a.candidates()] == [
            (c.arch.canonical(), c.objectives) for c in b.candidates()
        ]


def test_another_configuration_replaces_an_empty_study_but_never_a_used_one(
    tmp_path: Path, tiny_search_toml: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, out = _start_that_fails(tmp_path, tiny_search_toml, monkeypatch)
    res = _search(cfg, out, "--seed", "11")
    assert res.exit_code == 0, res.output
    with Study.open(out / "study.sqlite") as s:
        assert s.config["seed"] == 11 and s.holds_results()
    res = _search(cfg, out, "--seed", "12")  # now it holds results: refused, never replaced
    assert res.exit_code == 1 and "already exists" in res.output
    with Study.open(out / "study.sqlite") as s:
        assert s.config["seed"] == 11
