"""Where calibration files are read from and written to, and `qnas-hw calibrate` keeping a better existing fit.

Lookups search the user calibration directory (``$QNAS_CALIBRATION_DIR``,
else ``$XDG_DATA_HOME/qnas-hw/calibration``) before the shipped data; the
CLI writes there by default and refuses to replace a file with a worse
held-out fit unless ``--force``.  Calibrations here are real
(``calibrate --quick`` on ``aer_ideal``, about 10 s each).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qnas_hw.cli import app
from qnas_hw.hardware.backends import calibration_dir, get_backend, known_backend_names, user_calibration_dir
from qnas_hw.hardware.backends.braket import load_snapshot, snapshot_names
from qnas_hw.hardware.calibrate import is_worse
from qnas_hw.hardware.cost import CostModel, FitQuality

runner = CliRunner()


def _calibrate(*args: str):
    return runner.invoke(
        app, ["calibrate", "--backend", "aer_ideal", "--quick", "--no-progress", *args], catch_exceptions=False
    )


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "user-calibration"
    monkeypatch.setenv("QNAS_CALIBRATION_DIR", str(folder))
    return folder


def test_user_dir_is_the_env_variable_else_xdg_data_home_else_local_share(tmp_path: Path) -> None:
    home = Path.home()
    assert user_calibration_dir({"QNAS_CALIBRATION_DIR": str(tmp_path)}) == tmp_path
    assert user_calibration_dir({"QNAS_CALIBRATION_DIR": str(tmp_path), "XDG_DATA_HOME": "/x"}) == tmp_path
    assert user_calibration_dir({"XDG_DATA_HOME": "/data"}) == Path("/data/qnas-hw/calibration")
    # the XDG spec: a relative XDG_DATA_HOME is invalid and ignored
    assert user_calibration_dir({"XDG_DATA_HOME": "rel"}) == home / ".local/share/qnas-hw/calibration"
    assert user_calibration_dir({"QNAS_CALIBRATION_DIR": " "}) == home / ".local/share/qnas-hw/calibration"


def test_shipped_data_is_found_as_package_data() -> None:
    from importlib import resources

    shipped = calibration_dir()
    assert shipped == resources.files("qnas_hw._calibration")
    assert (shipped / "aer_ideal.json").is_file() and (shipped / "devices" / "iqm_garnet.json").is_file()


def test_a_user_file_takes_precedence_over_the_shipped_one(user_dir: Path) -> None:
    backend = get_backend("aer_ideal")
    shipped = CostModel.for_backend(backend, max_age_days=None)
    assert shipped.path == calibration_dir() / "aer_ideal.json"  # nothing in the user dir yet

    data = json.loads(shipped.path.read_text())
    data["wall_model"] = {k: 2 * v for k, v in data["wall_model"].items()}
    user_dir.mkdir()
    (user_dir / "aer_ideal.json").write_text(json.dumps(data))
    mine = CostModel.for_backend(backend, max_age_days=None)
    assert mine.path == user_dir / "aer_ideal.json"
    assert mine.wall == pytest.approx({k: 2 * v for k, v in shipped.wall.items()})

    # device snapshots: a user's file overrides the shipped one of that name, and a new one becomes a backend
    snap = json.loads((calibration_dir() / "devices" / "iqm_garnet.json").read_text())
    (user_dir / "devices").mkdir()
    (user_dir / "devices" / "iqm_garnet.json").write_text(json.dumps({**snap, "retrieved": "2099-01-01"}))
    (user_dir / "devices" / "my_garnet.json").write_text(json.dumps(snap))
    assert load_snapshot("iqm_garnet")["retrieved"] == "2099-01-01"
    assert {"iqm_garnet", "my_garnet", "ionq_forte"} <= set(snapshot_names())
    assert "braket_my_garnet" in known_backend_names()
    assert get_backend("braket_my_garnet").num_qubits == get_backend("braket_iqm_garnet").num_qubits


def test_worse_means_a_higher_held_out_mape() -> None:
    def fit(mape: float) -> FitQuality:
        return FitQuality(r2_train=0.9, r2_heldout=0.9, mape_heldout=mape, n_train=8, n_heldout=4)

    assert is_worse(fit(0.2), fit(0.1)) and not is_worse(fit(0.1), fit(0.2)) and not is_worse(fit(0.1), fit(0.1))
    assert not is_worse(fit(0.2), None) and not is_worse(fit(0.2), fit(float("nan")))
    assert is_worse(fit(float("nan")), fit(0.5))


def test_calibrate_writes_to_the_user_dir_by_default_with_a_line_per_job(user_dir: Path) -> None:
    shipped = calibration_dir() / "aer_ideal.json"
    before = shipped.read_bytes()
    res = _calibrate()
    assert res.exit_code == 0, res.output
    written = user_dir / "aer_ideal.json"
    assert f"wrote {written}" in res.output
    assert shipped.read_bytes() == before  # the shipped data is never edited
    model = CostModel.load(written, backend_name="aer_ideal")
    assert model.fit is not None and model.fit.n_heldout == 4  # the quick design
    assert CostModel.for_backend(get_backend("aer_ideal")).path == written  # and lookups now find it first
    # not a terminal: one line per measured job (warm-up + 12 design points), and the shipped fit it overrides
    assert "calibration job 1/13: warm-up" in res.output and "calibration job 13/13:" in res.output
    assert f"overrides the shipped {shipped}: old held-out MAPE 11.6%" in res.output


def test_a_worse_fit_is_refused_without_force_and_replaces_the_file_with_it(user_dir: Path) -> None:
    # an existing file stating a far better held-out fit than a quick 12-point design can reach
    data = json.loads((calibration_dir() / "aer_ideal.json").read_text())
    data["fit"] = {**data["fit"], "mape_heldout": 0.0042, "r2_heldout": 0.9987}
    user_dir.mkdir()
    existing = user_dir / "aer_ideal.json"
    existing.write_text(json.dumps(data))
    before = existing.read_bytes()

    res = _calibrate()
    assert res.exit_code == 1
    assert existing.read_bytes() == before  # kept
    rejected = CostModel.load(user_dir / "aer_ideal.json.rejected", backend_name="aer_ideal")  # measurements kept
    new_mape = f"held-out MAPE {100 * rejected.fit.mape_heldout:.1f}%"
    message = " ".join(res.output.split())
    assert "Existing: held-out MAPE 0.4%, held-out R^2 0.999" in message
    assert f"New: {new_mape}, held-out R^2 {rejected.fit.r2_heldout:.3f}" in message
    assert "--force" in message and "Traceback" not in message

    res = _calibrate("--force")
    assert res.exit_code == 0, res.output
    replaced = CostModel.load(existing, backend_name="aer_ideal")
    assert replaced.fit.mape_heldout != pytest.approx(0.0042)
    assert re.search(rf"replaced {re.escape(str(existing))}: old held-out MAPE 0\.4%.*new held-out MAPE", res.output)


def test_another_backends_file_at_out_is_refused_before_measuring(tmp_path: Path) -> None:
    other = tmp_path / "mine.json"
    shutil.copy(calibration_dir() / "aer_noisy.json", other)
    res = _calibrate("--out", str(other))
    assert res.exit_code == 1
    assert "holds the calibration of backend 'aer_noisy', not 'aer_ideal'" in res.output and "--force" in res.output
    assert "calibration job" not in res.output  # refused before the first job
    assert other.read_bytes() == (calibration_dir() / "aer_noisy.json").read_bytes()
