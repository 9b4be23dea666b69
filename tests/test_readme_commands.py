"""The README's ``qnas-hw`` commands are a tested contract.

Every ``qnas-hw …`` line of the README's code blocks is extracted and must
have a rule below (a new command without one fails
:func:`test_every_readme_command_has_a_rule`).  Commands that read or write
an existing study run on five study states: a finished search, the same
after ``hw-eval``, a search killed by SIGKILL mid-way, a study in a read-only
directory, and a damaged file.  Commands that start a new study run as
``--dry-run`` (they check data, backend, credentials and budget; a full
search is the default job's own test).  Each run asserts the exit code, that
no traceback is printed, and that a dry run (or a report) changes no file of
the study's directory.

The references are the README itself (what users copy) and the file system
before and after each command.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from readonly import read_only_view
from typer.testing import CliRunner

from qnas_hw.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
REPO = README.parent
STATES = ("fresh", "after-hw-eval", "killed", "read-only", "damaged")

runner = CliRunner()


def readme_commands() -> list[list[str]]:
    """The argument lists of every ``qnas-hw`` command in the README's bash blocks (comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                tokens = shlex.split(part, comments=True)
                if tokens and Path(tokens[0]).name == "qnas-hw":
                    commands.append(tokens[1:])
    return commands


# ------------------------------------------------------------------ rules
@dataclass(frozen=True)
class Rule:
    """How a README command is run in the tests: on every study state, once as a dry run, or once as written."""

    kind: str  # "study" | "new-search" | "once"
    #: expected exit code per study state (kind "study"), or {"": code} for the others
    exits: dict[str, int]
    #: the command must leave every file of the study directory as it was
    writes_nothing: bool = False


#: what a command that needs an account or a network does offline: one clear line, exit 1
OFFLINE = {"": 1}


def _has(args: list[str], flag: str) -> bool:
    return flag in args


def rule_for(args: list[str]) -> Rule | None:
    """The rule of one README command, or None when the command is new to these tests (a failure)."""
    cmd, rest = args[0], args[1:]
    needs_account = any(a.startswith(("ibm:", "braket:", "ray://")) for a in rest)
    if cmd == "devices":
        return Rule("once", {"": 0})
    if cmd == "calibrate" and _has(rest, "--from-study"):
        # no state holds device jobs (the tiny search scores under noise): refused, naming why, writing nothing
        return Rule("study", dict.fromkeys(STATES, 1), writes_nothing=True)
    if cmd == "calibrate":
        return Rule("once", {"": 0})
    if cmd == "search" and _has(rest, "--resume"):
        return Rule(
            "study",
            {"fresh": 0, "after-hw-eval": 0, "killed": 0, "read-only": 1, "damaged": 1},
        )
    if cmd == "search" and any(a.startswith("ray://") for a in rest):
        return Rule("once", OFFLINE)  # run as written: an unreachable cluster is refused before a study exists
    if cmd == "search":
        return Rule("new-search", OFFLINE if needs_account else {"": 0})
    if cmd == "report":
        return Rule(
            "study",
            # read-only: the README's --out is inside the study's directory, so the report cannot be written there
            {"fresh": 0, "after-hw-eval": 0, "killed": 0, "read-only": 1, "damaged": 1},
            writes_nothing=True,  # to the study: the report's files are left out of the comparison
        )
    if cmd == "train":
        # read-only: without --out, train keeps its model in the study's directory, which it cannot write there
        return Rule("study", {"fresh": 0, "after-hw-eval": 0, "killed": 0, "read-only": 1, "damaged": 1})
    if cmd == "hw-eval" and needs_account:
        # no account offline: refused before the study is opened for writing, so not even its lock file changes
        return Rule("study", dict.fromkeys(STATES, 1), writes_nothing=True)
    if cmd == "hw-eval" and _has(rest, "--dry-run"):
        return Rule(
            "study",
            {"fresh": 0, "after-hw-eval": 0, "killed": 0, "read-only": 0, "damaged": 1},
            writes_nothing=True,
        )
    if cmd == "export":
        # read-only: the README's --out is inside the study's directory; killed: its first generation has a knee
        return Rule("study", {"fresh": 0, "after-hw-eval": 0, "killed": 0, "read-only": 1, "damaged": 1})
    if cmd in ("inspect", "predict"):
        # they read a bundle, not a study (tests/test_export.py runs them on exported bundles); here no state holds
        # one, and each must refuse in one clear line without touching anything
        return Rule("study", dict.fromkeys(STATES, 1), writes_nothing=True)
    return None


# ------------------------------------------------------------------ states
TINY = """
seed = 5
[data]
dataset = "iris"
val_fraction = 0.2
[space]
qubits = [2, 3]
layers = [1, 1]
embeddings = ["angle-y", "iqp"]
[supercircuit]
epochs = 1
[search]
pop_size = 4
generations = {generations}
finetune_epochs = 1
objectives = ["val_error", "runtime_s", "subcircuits"]
val_samples = 24
shots = 256
[hardware]
qubit_budget = 2
[hw_eval]
shots = 256
max_samples = 8
"""


def _invoke(args: list[str]):
    return runner.invoke(app, args, catch_exceptions=True)


def _search(tmp: Path, out: Path, generations: int) -> Path:
    config = tmp / f"tiny-{generations}.toml"
    config.write_text(TINY.format(generations=generations))
    result = _invoke(["search", "--config", str(config), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    return out / "study.sqlite"


def _killed_search(tmp: Path, out: Path) -> Path:
    """A search in its own process, SIGKILLed once its study holds a candidate (a real kill, not a simulation)."""
    config = tmp / "tiny-long.toml"
    config.write_text(TINY.format(generations=4))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qnas_hw.cli", "search", "--config", str(config), "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    study = out / "study.sqlite"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if study.exists() and _candidates(study) >= 6:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the search ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    return study


def _candidates(study: Path) -> int:
    try:
        conn = sqlite3.connect(f"{study.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            return int(conn.execute("SELECT count(*) FROM candidates").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _damage(study: Path) -> None:
    """Overwrite the middle of the file with garbage: the pages of candidate rows, not only the header."""
    data = bytearray(study.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = os.urandom(min(4096, len(data) - middle))
    study.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Each study state, as a run directory that no command of these tests changes (commands run on copies)."""
    tmp = tmp_path_factory.mktemp("states")
    fresh = _search(tmp, tmp / "fresh", generations=2).parent
    after = tmp / "after-hw-eval"
    shutil.copytree(fresh, after)
    result = _invoke(["hw-eval", str(after / "study.sqlite")])
    assert result.exit_code == 0, result.output
    killed = _killed_search(tmp, tmp / "killed").parent
    damaged = tmp / "damaged"
    shutil.copytree(fresh, damaged)
    _damage(damaged / "study.sqlite")
    yield {"fresh": fresh, "after-hw-eval": after, "killed": killed, "damaged": damaged}


@pytest.fixture
def state_dir(request: pytest.FixtureRequest, states: dict[str, Path], tmp_path: Path) -> Iterator[Path]:
    """A private copy of the asked state's run directory (read-only: a read-only view of a fresh study)."""
    name = request.param
    source = states["fresh" if name == "read-only" else name]
    run = tmp_path / "run"
    shutil.copytree(source, run)
    if name == "read-only":
        with read_only_view(run, tmp_path / "ro") as ro:
            yield ro
        return
    yield run


# ------------------------------------------------------------------ running
def _substitute(args: list[str], run: Path | None, scratch: Path) -> list[str]:
    """README paths -> the test's: ``runs/X/study.sqlite`` -> the state's study, other ``runs/…`` -> scratch."""
    out = []
    for a in args:
        m = re.fullmatch(r"runs/[^/]+(/.*)?", a)
        if m is None:
            out.append(a)
        elif run is not None and (m.group(1) or "").startswith("/study.sqlite"):
            out.append(str(run / "study.sqlite"))
        elif run is not None and m.group(1):
            out.append(str(run / m.group(1).lstrip("/")))
        else:
            out.append(str(scratch / a))
    return [str(REPO / a) if a.startswith("examples/") else a for a in out]


def _snapshot(directory: Path) -> dict[str, str]:
    """Every file's hash, less what a reader may touch: a report's own output, and the WAL index (``-shm``) of a
    study whose writer was killed (SQLite rebuilds that index to read the WAL it left; the data files stay)."""
    files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}
    crashed = {name[: -len("-wal")] for name in files if name.endswith("-wal")}
    return {
        name: hashlib.sha256(p.read_bytes()).hexdigest()
        for name, p in files.items()
        if not name.startswith("report/") and not (name.endswith("-shm") and name[: -len("-shm")] in crashed)
    }


def _check(result, expected: int, args: list[str]) -> None:
    shown = " ".join(shlex.quote(a) for a in args)
    assert "Traceback" not in result.output, f"qnas-hw {shown} printed a traceback:\n{result.output}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"qnas-hw {shown} raised {result.exception!r}:\n{result.output}")
    assert result.exit_code == expected, (
        f"qnas-hw {shown}: exit {result.exit_code}, expected {expected}\n{result.output}"
    )
    if expected != 0:
        assert "error" in result.output.lower(), f"qnas-hw {shown} failed without saying why:\n{result.output}"


STUDY_COMMANDS = [a for a in readme_commands() if (r := rule_for(a)) is not None and r.kind == "study"]
OTHER_COMMANDS = [a for a in readme_commands() if (r := rule_for(a)) is not None and r.kind != "study"]


def _id(args: list[str]) -> str:
    return " ".join(args)[:70]


def test_every_readme_command_has_a_rule() -> None:
    commands = readme_commands()
    assert len(commands) >= 15, commands  # the parser still finds the README's commands
    missing = [" ".join(a) for a in commands if rule_for(a) is None]
    assert not missing, f"README commands without a rule in {__file__}: {missing}"
    assert {rule_for(a).kind for a in commands} == {"study", "new-search", "once"}


@pytest.mark.parametrize("state_dir", STATES, indirect=True)
@pytest.mark.parametrize("args", STUDY_COMMANDS, ids=_id)
def test_readme_command_on_each_study_state(
    args: list[str], state_dir: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    state = request.node.callspec.params["state_dir"]
    rule = rule_for(args)
    command = _substitute(args, state_dir, tmp_path / "scratch")
    before = _snapshot(state_dir)
    result = _invoke([*command, "--no-progress"] if args[0] in ("search", "train") else command)
    _check(result, rule.exits[state], command)
    if rule.writes_nothing:
        after = _snapshot(state_dir)
        assert after == before, f"{' '.join(command)} changed files: {set(after.items()) ^ set(before.items())}"


@pytest.mark.parametrize("args", OTHER_COMMANDS, ids=_id)
def test_readme_command_without_a_study(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rule = rule_for(args)
    command = _substitute(args, None, tmp_path / "scratch")
    if rule.kind == "new-search":
        command = [*command, "--dry-run"]
    if args[0] == "calibrate":
        command = [*command, "--quick", "--no-progress"]
    monkeypatch.chdir(tmp_path)
    result = _invoke(command)
    _check(result, rule.exits[""], command)
    if rule.kind == "new-search" or rule.exits[""] != 0:  # a dry run or a refusal creates no study, nowhere
        assert not list(tmp_path.rglob("study.sqlite*")), list(tmp_path.rglob("*"))
