"""Studies in read-only places: reports read them as they are; writers are refused with a clear message.

The read-only directory comes from :func:`readonly.read_only_view`.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from readonly import read_only_view
from typer.testing import CliRunner

from qnas_hw.cli import app
from qnas_hw.config import default_config
from qnas_hw.model.space import SearchSpace
from qnas_hw.search.study import GenerationRecord, Study

runner = CliRunner()


def _make_study(path: Path) -> None:
    study = Study.create(path, default_config().resolved())
    rng = np.random.default_rng(0)
    archs = list({SearchSpace(qubits=(2, 5), layers=(1, 3)).sample(np.random.default_rng(i)) for i in range(8)})
    for i, a in enumerate(archs):
        objs = {"val_error": float(rng.random()), "runtime_s": float(1 + rng.random()), "subcircuits": 1.0}
        study.add_candidate(a, f"k{i}", objs, {}, {}, generation=0, feasible=True)
    study.commit_generation(GenerationRecord(0, [a.canonical() for a in archs], [], None), b"state")
    study.close()


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory holding a finished study (no WAL side files), made read-only."""
    src = tmp_path / "src"
    src.mkdir()
    _make_study(src / "study.sqlite")
    assert not (src / "study.sqlite-wal").exists()  # a clean close leaves no side files
    with read_only_view(src, tmp_path / "ro") as ro:
        yield ro


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_the_directory_really_is_read_only(read_only_dir: Path) -> None:
    with pytest.raises(OSError):
        (read_only_dir / "probe").write_text("x")


def test_report_reads_a_study_in_a_read_only_directory(read_only_dir: Path, tmp_path: Path) -> None:
    res = _invoke("report", str(read_only_dir / "study.sqlite"), "--out", str(tmp_path / "report"))
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and (tmp_path / "report" / "summary.md").is_file()
    with Study.open(read_only_dir / "study.sqlite") as s:
        assert s.n_candidates() == 8


def test_report_without_out_in_a_read_only_directory_names_the_fix(read_only_dir: Path) -> None:
    res = _invoke("report", str(read_only_dir / "study.sqlite"))
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "--out" in res.output


def test_resume_of_a_read_only_study_is_refused_clearly(read_only_dir: Path) -> None:
    res = _invoke("search", "--resume", str(read_only_dir / "study.sqlite"), "--no-progress")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "read-only" in res.output and str(read_only_dir) in res.output


def test_search_into_a_read_only_out_directory_is_refused_clearly(read_only_dir: Path) -> None:
    res = _invoke("search", "--out", str(read_only_dir / "run"), "--no-progress")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert str(read_only_dir) in res.output


def test_a_study_opened_for_reading_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "study.sqlite"
    _make_study(path)
    before = path.read_bytes()
    with Study.open(path) as s, pytest.raises(sqlite3.OperationalError, match="readonly"):
        s.connect().execute("CREATE TABLE intruder (x)")
    assert path.read_bytes() == before


def test_copy_of_a_read_only_study_resumes_for_writing(read_only_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy" / "study.sqlite"
    copy.parent.mkdir()
    shutil.copy2(read_only_dir / "study.sqlite", copy)
    with Study.open(copy, write=True) as s:
        assert s.n_candidates() == 8
