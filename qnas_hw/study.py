"""A study: the durable record of one search, in a single SQLite file.

Why SQLite with WAL and ``synchronous=FULL``: a search runs for hours and may
be killed at any moment (OOM, pre-emption, Ctrl-C).  Every finished
evaluation is committed in its own transaction as soon as it exists, and each
generation's record is committed *together with* the pickled NSGA-II state, so
after a crash the file holds either the whole generation or none of it, and
``--resume`` continues from exactly the last completed generation without
re-evaluating anything already stored.

Tables: ``meta`` (config JSON, objective names, schema version, created),
``candidates`` (one row per (architecture key, settings key)), ``generations``
and ``algorithm_state``.  Other modules (e.g. the hardware job ledger) add
their own tables through :meth:`Study.connect` with ``CREATE TABLE IF NOT
EXISTS``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qnas_hw.atomic_write import atomic_write_text
from qnas_hw.space import Architecture

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    arch         TEXT NOT NULL,
    arch_key     TEXT NOT NULL,
    settings_key TEXT NOT NULL,
    objectives   TEXT NOT NULL,
    details      TEXT NOT NULL,
    timings      TEXT NOT NULL,
    generation   INTEGER NOT NULL,
    feasible     INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    UNIQUE (arch_key, settings_key)
);
CREATE TABLE IF NOT EXISTS generations (
    idx          INTEGER PRIMARY KEY,
    population   TEXT NOT NULL,
    front        TEXT NOT NULL,
    hypervolume  REAL,
    finished_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS algorithm_state (
    generation   INTEGER PRIMARY KEY,
    state        BLOB NOT NULL,
    rng_state    TEXT,
    saved_at     TEXT NOT NULL
);
"""


class StudyError(RuntimeError):
    """A study file that cannot be created, opened or continued, with the fix in the message."""


@dataclass(frozen=True)
class CandidateRecord:
    """One evaluated architecture under one set of objective settings."""

    arch: Architecture
    objectives: dict[str, float]
    details: dict[str, Any]
    timings: dict[str, Any]
    generation: int
    feasible: bool
    settings_key: str = ""


@dataclass(frozen=True)
class GenerationRecord:
    """A completed generation: survivors, the front so far and its hypervolume (architectures as canonical strings)."""

    index: int
    population: list[str]
    front: list[str]
    hypervolume: float | None
    finished_at: str = field(default="")


@dataclass(frozen=True)
class AlgorithmState:
    """The pickled optimiser after a generation, and the RNG state it carried (for inspection)."""

    generation: int
    state: bytes
    rng_state: dict[str, Any] | None
    saved_at: str


def now_iso() -> str:
    """UTC timestamp (seconds) used for every time the study records."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _dumps(obj: Any) -> str:
    # NaN/inf are kept (Python's json round-trips them); a failed value must stay visibly failed.
    return json.dumps(obj, sort_keys=True, default=str)


class Study:
    """Handle on one study file.  Cheap to create; holds one connection, opened lazily."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._config: dict[str, Any] | None = None
        self._objective_names: list[str] | None = None

    # ------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, path: Path | str, config: dict[str, Any], objective_names: Sequence[str] | None = None) -> Study:
        """Create a new study file; refuses to touch an existing one (resume it instead).

        ``objective_names`` default to ``config["search"]["objectives"]``.
        The resolved config is also written as ``<study>.config.json`` so a
        person can read it without SQLite.
        """
        path = Path(path)
        if path.exists():
            raise StudyError(
                f"study {path} already exists; continue it with `qnas-hw search --resume {path}` or choose "
                "another --out directory"
            )
        if not isinstance(config, dict):
            raise StudyError(f"study config must be a dict (RunConfig.model_dump()), got {type(config).__name__}")
        names = (
            list(objective_names)
            if objective_names is not None
            else list(config.get("search", {}).get("objectives", []))
        )
        if not names:
            raise StudyError("a study needs objective names; pass objective_names or config['search']['objectives']")
        path.parent.mkdir(parents=True, exist_ok=True)
        study = cls(path)
        study._connection(create=True)
        with study.transaction() as c:
            # statement by statement: executescript() would commit in the middle of the transaction
            for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                c.execute(stmt)
            c.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("config", _dumps(config)),
                    ("objective_names", json.dumps(names)),
                    ("created", now_iso()),
                ],
            )
        study._write_config_json(config)
        logger.info("created study %s (objectives %s)", path, names)
        return study

    @classmethod
    def open(cls, path: Path | str) -> Study:
        """Open an existing study; a missing, foreign or newer-schema file is an error naming it."""
        path = Path(path)
        if not path.is_file():
            raise StudyError(f"study {path} does not exist; pass the study.sqlite written by `qnas-hw search`")
        study = cls(path)
        try:
            version = study._meta("schema_version")
        except sqlite3.DatabaseError as exc:
            study.close()
            raise StudyError(f"{path} is not a qnas-hw study ({exc})") from None
        if version is None:
            study.close()
            raise StudyError(f"{path} is not a qnas-hw study (no schema_version in its meta table)")
        if int(version) != SCHEMA_VERSION:
            study.close()
            raise StudyError(
                f"study {path} has schema version {version}, this qnas-hw reads {SCHEMA_VERSION}; use the "
                "qnas-hw version that wrote it"
            )
        return study

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Study({str(self.path)!r})"

    # ------------------------------------------------------------ connection
    def connect(self) -> sqlite3.Connection:
        """A new connection to the same WAL file (for other modules' own tables); the caller closes it."""
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _connection(self, create: bool = False) -> sqlite3.Connection:
        if self._conn is None:
            if not create and not self.path.is_file():
                raise StudyError(f"study file {self.path} has disappeared")
            self._conn = self.connect()
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside is committed together or not at all."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ------------------------------------------------------------------ meta
    def _meta(self, key: str) -> str | None:
        row = self._connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            raw = self._meta("config")
            self._config = json.loads(raw) if raw else {}
        return self._config

    @property
    def objective_names(self) -> list[str]:
        if self._objective_names is None:
            raw = self._meta("objective_names")
            self._objective_names = json.loads(raw) if raw else []
        return list(self._objective_names)

    @property
    def created(self) -> str:
        return self._meta("created") or ""

    def append_run(self, info: dict[str, Any]) -> None:
        """Append one run's provenance (when, new evaluations, reused ones) to the study's run log."""
        with self.transaction() as c:
            row = c.execute("SELECT value FROM meta WHERE key = 'runs'").fetchone()
            runs = json.loads(row[0]) if row else []
            runs.append({**info, "finished_at": now_iso()})
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('runs', ?)", (_dumps(runs),))

    def runs(self) -> list[dict[str, Any]]:
        """Every finished ``run_search`` call on this study, oldest first (killed runs leave no entry)."""
        raw = self._meta("runs")
        return json.loads(raw) if raw else []

    @property
    def config_json_path(self) -> Path:
        return self.path.with_suffix(".config.json")

    def update_config(self, config: dict[str, Any]) -> None:
        """Replace the stored config (only settings that do not change any stored result may differ, e.g. a
        device budget raised for a resume; the caller checks that)."""
        with self.transaction() as c:
            c.execute("UPDATE meta SET value = ? WHERE key = 'config'", (_dumps(config),))
        self._config = None
        self._write_config_json(config)

    def _write_config_json(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.config_json_path, json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")

    # ------------------------------------------------------------ candidates
    def add_candidate(
        self,
        arch: Architecture,
        settings_key: str,
        objectives: dict[str, float],
        details: dict[str, Any],
        timings: dict[str, Any],
        generation: int,
        feasible: bool,
        replace: bool = False,
    ) -> bool:
        """Store one finished evaluation (committed immediately); False when it was already stored.

        ``replace`` overwrites a stored record in place (same row id, so the study's order is kept): only the
        search's retry of a *failed* evaluation uses it, so a finished evaluation is never overwritten by accident.
        """
        missing = [n for n in self.objective_names if n not in objectives]
        if missing:
            raise StudyError(f"candidate {arch.canonical()} lacks objective values {missing}")
        conflict = (
            "ON CONFLICT (arch_key, settings_key) DO UPDATE SET objectives = excluded.objectives, "
            "details = excluded.details, timings = excluded.timings, generation = excluded.generation, "
            "feasible = excluded.feasible, created_at = excluded.created_at"
            if replace
            else "ON CONFLICT DO NOTHING"
        )
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO candidates (arch, arch_key, settings_key, objectives, details, timings, "
                f"generation, feasible, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) {conflict}",
                (
                    arch.canonical(),
                    arch.key(),
                    settings_key,
                    _dumps({k: float(v) for k, v in objectives.items()}),
                    _dumps(details),
                    _dumps(timings),
                    int(generation),
                    int(bool(feasible)),
                    now_iso(),
                ),
            )
            return cur.rowcount == 1

    @staticmethod
    def _record(row: sqlite3.Row | tuple[Any, ...]) -> CandidateRecord:
        arch, settings_key, objectives, details, timings, generation, feasible = row
        return CandidateRecord(
            arch=Architecture.parse(arch),
            objectives={k: float(v) for k, v in json.loads(objectives).items()},
            details=json.loads(details),
            timings=json.loads(timings),
            generation=int(generation),
            feasible=bool(feasible),
            settings_key=str(settings_key),
        )

    _COLUMNS = "arch, settings_key, objectives, details, timings, generation, feasible"

    def get_candidate(self, arch: Architecture, settings_key: str) -> CandidateRecord | None:
        """The stored evaluation of ``arch`` under ``settings_key`` (the search's evaluation cache)."""
        row = (
            self._connection()
            .execute(
                f"SELECT {self._COLUMNS} FROM candidates WHERE arch_key = ? AND settings_key = ?",
                (arch.key(), settings_key),
            )
            .fetchone()
        )
        return None if row is None else self._record(row)

    def candidates(self, settings_key: str | None = None) -> list[CandidateRecord]:
        """Every stored evaluation in insertion order (optionally only one settings key)."""
        sql = f"SELECT {self._COLUMNS} FROM candidates"
        args: tuple[Any, ...] = ()
        if settings_key is not None:
            sql += " WHERE settings_key = ?"
            args = (settings_key,)
        return [self._record(r) for r in self._connection().execute(sql + " ORDER BY id", args)]

    def n_candidates(self) -> int:
        return int(self._connection().execute("SELECT COUNT(*) FROM candidates").fetchone()[0])

    # ----------------------------------------------------------- generations
    def commit_generation(
        self, record: GenerationRecord, algorithm_state: bytes, rng_state: dict[str, Any] | None = None
    ) -> GenerationRecord:
        """Store a generation and the optimiser state after it in ONE transaction (so resume is exact)."""
        hv = record.hypervolume
        if hv is not None and not math.isfinite(hv):
            hv = None
        finished = record.finished_at or now_iso()
        with self.transaction() as c:
            c.execute(
                "INSERT INTO generations (idx, population, front, hypervolume, finished_at) VALUES (?, ?, ?, ?, ?)",
                (int(record.index), json.dumps(record.population), json.dumps(record.front), hv, finished),
            )
            c.execute(
                "INSERT INTO algorithm_state (generation, state, rng_state, saved_at) VALUES (?, ?, ?, ?)",
                (int(record.index), sqlite3.Binary(algorithm_state), _dumps(rng_state), finished),
            )
        return GenerationRecord(record.index, list(record.population), list(record.front), hv, finished)

    def generations(self) -> list[GenerationRecord]:
        rows = self._connection().execute(
            "SELECT idx, population, front, hypervolume, finished_at FROM generations ORDER BY idx"
        )
        return [
            GenerationRecord(int(i), json.loads(p), json.loads(f), None if h is None else float(h), str(t))
            for i, p, f, h, t in rows
        ]

    def last_algorithm_state(self) -> AlgorithmState | None:
        """The optimiser pickled after the last completed generation, or None before the first one."""
        row = (
            self._connection()
            .execute(
                "SELECT generation, state, rng_state, saved_at FROM algorithm_state ORDER BY generation DESC LIMIT 1"
            )
            .fetchone()
        )
        if row is None:
            return None
        gen, state, rng, saved = row
        return AlgorithmState(int(gen), bytes(state), json.loads(rng) if rng else None, str(saved))
