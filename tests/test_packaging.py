"""A built wheel is a working install: every package and the shipped calibration data are in it.

The calibration data lives in the repository's top-level ``calibration/``
folder and ships as the package ``qnas_hw._calibration`` (pyproject.toml maps
it); a wheel that lost it would fail only after installation, on the first
cost-model or Braket-snapshot lookup.  The slow test builds the wheel,
installs it into a fresh virtual environment that reuses this one's
dependencies, and runs the CLI from outside the repository.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: What building the wheel reads from the checkout.
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "qnas_hw", "calibration")


def _setuptools_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_pyproject_lists_every_package_and_ships_every_calibration_file() -> None:
    config = _setuptools_config()
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "qnas_hw").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert set(config["packages"]) == on_disk | {"qnas_hw._calibration"}, (
        "pyproject.toml [tool.setuptools] packages must list every package under qnas_hw/"
    )
    assert config["package-dir"] == {"qnas_hw._calibration": "calibration"}
    patterns = config["package-data"]["qnas_hw._calibration"]
    data = [
        p.relative_to(REPO / "calibration").as_posix()
        for p in (REPO / "calibration").rglob("*")
        if p.is_file() and p.suffix in (".json", ".md")
    ]
    missed = [
        f for f in data if not any(fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)
    ]
    assert data and not missed, f"calibration files a wheel would not ship: {missed}"


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def _build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    """The wheel of a copy of the checkout (building in place would race other runs over build/)."""
    src = tmp / "src"
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.lock", "*.rejected")
    for name in BUILD_INPUTS:
        path = REPO / name
        (shutil.copytree if path.is_dir() else shutil.copy2)(
            path, src / name, **({"ignore": skip} if path.is_dir() else {})
        )
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, src], tmp, env)
    (wheel,) = dist.glob("qnas_hw-*.whl")
    return wheel


def _venv_with_wheel(tmp: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A fresh venv holding only the wheel; this venv's site-packages (the dependencies) come after it on sys.path.

    Appending that directory through a ``.pth`` line does not run the
    ``.pth`` files inside it, so the editable install's finder, which would
    map ``qnas_hw`` back to the checkout, stays off.
    """
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp, env)
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env).strip()
    (Path(purelib) / "_qnas_dev_site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel], tmp, env)
    return venv


_PROBE = """
import json, qnas_hw
from qnas_hw.hardware.backends import calibration_dir, get_backend
from qnas_hw.hardware.cost import CostModel
kolkata = CostModel.for_backend(get_backend("fake_kolkata"), max_age_days=None)
print(json.dumps({
    "qnas_hw": qnas_hw.__file__,
    "shipped": str(calibration_dir()),
    "kolkata_path": str(kolkata.path),
    "kolkata_wall_fitted": kolkata.provenance["wall_model"]["fitted"],
    "kolkata_fit": kolkata.fit.to_dict(),
}))
"""


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_finds_its_calibration_data(tmp_path: Path, tiny_search_toml: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["QNAS_CALIBRATION_DIR"] = str(tmp_path / "no-user-calibrations")  # only the shipped data can answer
    wheel = _build_wheel(tmp_path, env)
    venv = _venv_with_wheel(tmp_path, wheel, env)
    work = tmp_path / "work"  # outside the repository: no calibration/ folder within reach
    work.mkdir()

    probe = json.loads(_run([venv / "bin" / "python", "-c", _PROBE], work, env).strip().splitlines()[-1])
    installed = venv.resolve()
    assert Path(probe["qnas_hw"]).resolve().is_relative_to(installed), probe  # the wheel, not the checkout
    assert Path(probe["shipped"]).resolve().is_relative_to(installed)
    assert Path(probe["kolkata_path"]).name == "fake_kolkata.json"
    assert Path(probe["kolkata_path"]).resolve().is_relative_to(installed)
    shipped_kolkata = json.loads((REPO / "calibration" / "fake_kolkata.json").read_text())
    assert probe["kolkata_wall_fitted"] is True and probe["kolkata_fit"] == shipped_kolkata["fit"]

    devices = _run([venv / "bin" / "qnas-hw", "devices"], work, env)
    assert "fake_kolkata" in devices and "braket_iqm_garnet" in devices  # Braket snapshots come from the wheel

    # a simulator's runtime objective has no prior to fall back on: the search needs the shipped aer_ideal.json
    config = tiny_search_toml.replace(
        'objectives = ["val_error", "subcircuits"]', 'objectives = ["val_error", "runtime_s"]'
    )
    config = config.replace("[hardware]\n", '[hardware]\nbackend = "aer_ideal"\n')
    assert "runtime_s" in config and "aer_ideal" in config
    (work / "tiny.toml").write_text(config)
    _run([venv / "bin" / "qnas-hw", "search", "--config", "tiny.toml", "--out", "run", "--no-progress"], work, env)
    fit = json.loads((REPO / "calibration" / "aer_ideal.json").read_text())["fit"]
    summary = (work / "run" / "report" / "summary.md").read_text()
    assert "fitted on measured local wall-clock seconds by `qnas-hw calibrate` (aer_ideal.json" in summary
    assert f"MAPE {100 * fit['mape_heldout']:.1f}%" in summary
