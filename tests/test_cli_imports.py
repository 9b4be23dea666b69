"""Commands that answer at once import nothing heavy: ``--version``, ``--help`` and config errors.

Every command used to spend 5-17 s importing torch, qiskit and pymoo before
printing anything (``qnas-hw --version``: 5.6 s).  Timings are not asserted
(they depend on the machine); which modules a fresh interpreter holds after
the command is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: What takes seconds to import; none of it is needed to print a version, a help text or a config error.
HEAVY = (
    "torch",
    "qiskit",
    "qiskit_aer",
    "qiskit_ibm_runtime",
    "braket",
    "pymoo",
    "ray",
    "matplotlib",
    "sklearn",
    "scipy",
)

#: Runs the CLI (``argv[2:]``) in a fresh interpreter; prints its exit code and which of ``argv[1]`` it imported.
_PROBE = """
import json, sys
from qnas_hw.cli import main
code = 0
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": [m for m in json.loads(sys.argv[1]) if m in sys.modules]}))
"""


def _probe(*args: str, cwd: Path) -> dict[str, object]:
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(HEAVY), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.stdout.strip(), res.stderr
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "stderr": res.stderr}


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--version"], 0),
        (["--help"], 0),
        (["search", "--help"], 0),
        (["hw-eval", "--help"], 0),
        (["search", "--config", "bad.toml"], 1),  # an unknown key
        (["search", "--qubit-budget", "-3"], 1),
        (["search", "--backend", "fake_nowhere"], 1),  # an unknown backend: the message suggests close names
    ],
)
def test_quick_answers_import_nothing_heavy(tmp_path: Path, args: list[str], code: int) -> None:
    (tmp_path / "bad.toml").write_text("[search]\npop_sise = 3\n")
    out = _probe(*args, cwd=tmp_path)
    assert out["code"] == code, out["stderr"]
    assert out["heavy"] == [], f"`qnas-hw {' '.join(args)}` imported {out['heavy']}"
    if code:
        assert "error" in str(out["stderr"]) and "Traceback" not in str(out["stderr"])


def test_backend_names_are_listed_without_importing_the_runtime() -> None:
    """The fake IBM names read from the runtime's source are exactly the fake backend classes it ships."""
    from qnas_hw.hardware.backends import _fake_names_from_source
    from qnas_hw.hardware.backends.ibm import fake_names

    assert sorted(_fake_names_from_source()) == fake_names()
