"""Progress displays: a bar on a terminal, plain throttled lines in a redirected log (never carriage returns)."""

from __future__ import annotations

import io

import torch

from qnas_hw import progress as progress_mod
from qnas_hw.data import load_dataset
from qnas_hw.model.hqnn import HQNN
from qnas_hw.model.space import Architecture, SearchSpace
from qnas_hw.model.supercircuit import SuperCircuit, SuperTrainConfig, train_supercircuit
from qnas_hw.model.training import TrainConfig, train_model
from qnas_hw.progress import HEARTBEAT_S, LINE_INTERVAL_S, Progress, track, use_bars


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_only_a_terminal_gets_bars() -> None:
    assert use_bars(True, _Terminal())
    assert not use_bars(True, io.StringIO())  # a file, a pipe, a CI log
    assert not use_bars(False, _Terminal())


def test_off_a_terminal_lines_are_throttled_and_the_last_state_is_printed() -> None:
    out, clock = io.StringIO(), _Clock()
    display = Progress("device jobs", 10, unit="jobs done", stream=out, clock=clock)
    display.set(completed=0, status="10 waiting")  # the first state: at once
    clock.now = 1.0
    display.set(completed=3, status="2 running")  # changed, but within the interval: held back
    clock.now = LINE_INTERVAL_S + 0.5
    display.tick()  # the interval has passed: the held-back change shows
    clock.now = LINE_INTERVAL_S + 2.0
    display.set(completed=4)
    display.tick()  # 4 is new, but within the interval of the last line: held back
    clock.now = LINE_INTERVAL_S + 2.0 + HEARTBEAT_S
    display.set(completed=9)
    clock.now += 0.5
    display.set(completed=10, status="done")
    display.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("device jobs: 0/10 jobs done (10 waiting)")
    assert lines[1].startswith("device jobs: 3/10 jobs done (2 running)")
    assert lines[2].startswith("device jobs: 9/10")
    assert lines[-1].startswith("device jobs: 10/10 jobs done (done)")  # the final state, printed at close
    assert len(lines) == 4


def test_a_heartbeat_line_when_nothing_changes_for_long() -> None:
    out, clock = io.StringIO(), _Clock()
    display = Progress("device jobs", 2, stream=out, clock=clock)
    display.set(completed=0)
    clock.now = HEARTBEAT_S - 1
    display.tick()
    clock.now = HEARTBEAT_S + 1
    display.tick()  # a job queued for minutes: still alive
    display.close()  # nothing changed since: no repeated final line
    assert len(out.getvalue().splitlines()) == 2


def test_silent_off_a_terminal_when_the_caller_prints_its_own_lines() -> None:
    out = io.StringIO()
    with Progress("NSGA-II generations", 3, stream=out, lines=False) as display:
        display.update(1)
    assert out.getvalue() == ""


def test_a_bar_on_a_terminal() -> None:
    out = _Terminal()
    with Progress("epoch 1", 3, unit="batches", stream=out) as display:
        display.update(3, status="loss=0.5")
    assert "\r" in out.getvalue() and "3/3" in out.getvalue()  # tqdm redraws in place there


def test_track_closes_its_display_when_the_loop_breaks(monkeypatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(progress_mod.sys, "stderr", out)
    for i in track(range(5), "loop", unit="items"):
        if i == 2:
            break
    assert out.getvalue().splitlines()[-1].startswith("loop: 2/5 items")


def test_training_bars_become_plain_lines_in_a_log(capfd) -> None:
    """SuperCircuit training and ``train`` with progress on, stderr redirected: lines, no carriage returns."""
    splits = load_dataset("iris", seed=0)
    space = SearchSpace(embeddings=("angle-y",), qubits=(2, 2), layers=(1, 1))
    sc = SuperCircuit(space, tuple(splits.input_shape), splits.n_classes, frontend="linear", seed=0)
    train_supercircuit(sc, splits, SuperTrainConfig(epochs=1, batch_size=16, seed=0), progress=True)
    model = HQNN(Architecture("angle-y", 2, 1, "ry", "linear"), tuple(splits.input_shape), splits.n_classes, seed=0)
    torch.manual_seed(0)
    train_model(model, splits, TrainConfig(epochs=1, batch_size=16, seed=0), progress=True)
    err = capfd.readouterr().err
    assert "\r" not in err
    assert "supercircuit epoch 1/1: " in err and "batches (loss=" in err
    assert "epoch 1: " in err
