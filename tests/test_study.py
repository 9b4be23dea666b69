"""Study: round trip of every table, refuse-overwrite, atomic generation commits, crash-safe files."""

from __future__ import annotations

import json
import math
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qnas_hw.config import default_config
from qnas_hw.model.space import Architecture, SearchSpace
from qnas_hw.reports.data import analyze
from qnas_hw.search.study import GenerationRecord, Study, StudyError

NAMES = ["val_error", "runtime_s", "subcircuits"]


def _arch(i: int) -> Architecture:
    return SearchSpace(qubits=(2, 6), layers=(1, 3)).sample(np.random.default_rng(i))


def test_create_open_round_trip(tmp_path: Path) -> None:
    cfg = default_config().resolved()
    path = tmp_path / "run" / "study.sqlite"
    study = Study.create(path, cfg)
    assert study.objective_names == NAMES
    a = Architecture("angle-y", 3, 2, "ry-rz", "ring")
    objs = {"val_error": 0.25, "runtime_s": 1.5e-3, "subcircuits": 1.0}
    details = {"val_acc": 0.75, "cut": {"sampling_overhead": 9.0}, "physical_qubits": [0, 1, 4]}
    assert study.add_candidate(a, "s1", objs, details, {"val_error": 0.1}, generation=0, feasible=True)
    # same (arch, settings) again is ignored, never duplicated; another settings key is a new row
    assert not study.add_candidate(a, "s1", {**objs, "val_error": 0.9}, {}, {}, generation=3, feasible=False)
    assert study.add_candidate(a, "s2", {**objs, "val_error": math.nan}, {}, {}, generation=1, feasible=False)
    study.close()

    again = Study.open(path)
    assert again.config == cfg
    assert again.objective_names == NAMES
    recs = again.candidates()
    assert [(r.arch, r.settings_key) for r in recs] == [(a, "s1"), (a, "s2")]
    first = again.get_candidate(a, "s1")
    assert first is not None
    assert first.objectives == objs and first.details == details and first.timings == {"val_error": 0.1}
    assert first.generation == 0 and first.feasible
    second = again.get_candidate(a, "s2")
    assert second is not None and math.isnan(second.objectives["val_error"]) and not second.feasible
    assert again.get_candidate(a, "other") is None
    assert len(again.candidates(settings_key="s2")) == 1
    # the resolved config is readable without SQLite
    assert json.loads(path.with_suffix(".config.json").read_text()) == cfg


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "study.sqlite"
    Study.create(path, default_config().resolved()).close()
    before = path.read_bytes()
    with pytest.raises(StudyError, match=r"already exists.*--resume"):
        Study.create(path, default_config().resolved())
    assert path.read_bytes() == before


def test_open_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="does not exist"):
        Study.open(tmp_path / "nope.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StudyError, match="not a qnas-hw study"):
        Study.open(junk)
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StudyError, match="no schema_version"):
        Study.open(other)


def test_missing_objective_rejected(tmp_path: Path) -> None:
    study = Study.create(tmp_path / "s.sqlite", default_config().resolved())
    with pytest.raises(StudyError, match="runtime_s"):
        study.add_candidate(_arch(0), "k", {"val_error": 0.1, "subcircuits": 1.0}, {}, {}, 0, True)
    assert study.n_candidates() == 0


def test_generation_and_state_commit_together(tmp_path: Path) -> None:
    study = Study.create(tmp_path / "s.sqlite", default_config().resolved())
    assert study.last_algorithm_state() is None
    pop = [_arch(i).canonical() for i in range(4)]
    state = pickle.dumps({"gen": 0, "rng": np.random.default_rng(3)})
    rec = study.commit_generation(GenerationRecord(0, pop, pop[:2], 0.5), state, {"bit_generator": "PCG64"})
    assert rec.finished_at
    # a second commit of the same generation fails as a whole: neither table changes
    with pytest.raises(sqlite3.IntegrityError):
        study.commit_generation(GenerationRecord(0, pop, pop, 0.9), b"other")
    gens = study.generations()
    assert [(g.index, g.population, g.front, g.hypervolume) for g in gens] == [(0, pop, pop[:2], 0.5)]
    last = study.last_algorithm_state()
    assert last is not None and last.generation == 0 and last.state == state
    assert last.rng_state == {"bit_generator": "PCG64"}
    restored = pickle.loads(last.state)
    assert restored["rng"].random() == np.random.default_rng(3).random()
    study.commit_generation(GenerationRecord(1, pop, pop[:1], float("nan")), b"s1")
    assert study.generations()[1].hypervolume is None  # non-finite stored as unknown, not as invalid JSON
    assert study.last_algorithm_state().generation == 1


def test_reports_read_a_study(tmp_path: Path) -> None:
    study = Study.create(tmp_path / "s.sqlite", default_config().resolved())
    rng = np.random.default_rng(0)
    archs = list({_arch(i) for i in range(12)})
    for i, a in enumerate(archs):
        objs = {"val_error": float(rng.random()), "runtime_s": float(rng.random()), "subcircuits": float(i % 3 + 1)}
        study.add_candidate(a, "k", objs, {}, {}, generation=i // 6, feasible=i != 0)
    study.commit_generation(GenerationRecord(0, [a.canonical() for a in archs[:6]], [], None), b"x")
    data = analyze(study.candidates(), study.generations(), study.objective_names, study.config)
    assert len(data.candidates) == len(archs)
    assert all(data.candidates[i].feasible for i in data.front)


def test_committed_candidate_survives_a_killed_writer(tmp_path: Path) -> None:
    """A process SIGKILLed right after add_candidate returns must leave the row in the file (WAL + FULL sync)."""
    path = tmp_path / "s.sqlite"
    Study.create(path, default_config().resolved()).close()
    code = (
        "import os, signal, sys\n"
        "from qnas_hw.search.study import Study\n"
        "from qnas_hw.model.space import Architecture\n"
        "s = Study.open(sys.argv[1], write=True)\n"
        "s.add_candidate(Architecture('iqp', 2, 1, 'ry', 'none'), 'k', "
        "{'val_error': 0.5, 'runtime_s': 1.0, 'subcircuits': 1.0}, {}, {}, 0, True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=60)
    assert proc.returncode == -9
    study = Study.open(path)
    assert [r.arch.canonical() for r in study.candidates()] == ["iqp|q2|l1|ry|none|z"]


def test_connect_gives_independent_connection(tmp_path: Path) -> None:
    study = Study.create(tmp_path / "s.sqlite", default_config().resolved())
    conn = study.connect()
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO jobs VALUES ('j1')")
    finally:
        conn.close()
    assert study._connection().execute("SELECT id FROM jobs").fetchall() == [("j1",)]
