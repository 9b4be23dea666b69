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

Integrity.  A writer (``Study.create`` / ``Study.open(write=True)``) holds
the study's exclusive writer lock (:mod:`qnas_hw.locking`): a second process
is refused with the holder's name before it writes anything.  Opening runs
SQLite's ``quick_check``, so a damaged file is an error at open, before any
work; every candidate row carries a SHA-256 of its stored values, verified
whenever it is read, so a value edited or corrupted in place is caught rather
than trusted.  SQLite errors surface as :class:`StudyError` naming the file
(a full disk as :class:`StudyStorageError`, which says to free space and
resume).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qnas_hw.atomic_write import atomic_write_text, nearest_existing
from qnas_hw.locking import LockedError, WriterLock, is_held
from qnas_hw.model.space import Architecture
from qnas_hw.text import plural

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
#: schema 1 (before per-row checksums) is migrated in place when opened for writing
_MIGRATABLE = {1}

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
    checksum     TEXT,
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


class StudyLocked(StudyError, LockedError):
    """Another process is writing the study (the message names it)."""


class StudyStorageError(StudyError):
    """The disk refused a write (full, read-only, I/O error): nothing was recorded; free space and resume."""


class StudyCorrupt(StudyError):
    """The study file or a row in it is damaged; the message names what and what to do."""


def row_checksum(
    arch: str, settings_key: str, objectives: str, details: str, timings: str, generation: int, feasible: int
) -> str:
    """SHA-256 over a candidate row's stored text, so an edited or damaged value is detected when read."""
    blob = json.dumps([arch, settings_key, objectives, details, timings, int(generation), int(feasible)])
    return hashlib.sha256(blob.encode()).hexdigest()


_STORAGE_TEXT = ("disk is full", "disk i/o error", "readonly database", "read-only", "unable to open")


def storage_problem(exc: BaseException) -> str | None:
    """Why a write failed for reasons of the disk or the run directory, not of the candidate (None otherwise).

    Any ``OSError`` of the file system counts (full disk, read-only, no
    permission, I/O error, a path that is not a directory...): none of them
    is a property of an architecture.  Network errors (also ``OSError``) are
    the job layer's and do not count.
    """
    import errno

    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError) and exc.errno is not None:
        code = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{exc.strerror or type(exc).__name__} ({code}) at {exc.filename}"
    if isinstance(exc, sqlite3.OperationalError) and any(t in str(exc).lower() for t in _STORAGE_TEXT):
        return str(exc)
    return None


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

    def values(self, names: Sequence[str]) -> list[float]:
        """The objective values in ``names`` order; a missing objective is NaN (it never happens silently as 0)."""
        return [float(self.objectives.get(n, math.nan)) for n in names]

    @property
    def usable(self) -> bool:
        """Feasible with every objective finite: only such records enter a front (see :mod:`qnas_hw.search.pareto`)."""
        return self.feasible and all(math.isfinite(float(v)) for v in self.objectives.values())

    @property
    def outcome(self) -> str:
        """``failed``, ``infeasible`` or ``feasible``: the one classification the console and the report both count.

        ``failed``: an objective raised (the error is in ``details``), which a
        resume retries.  ``infeasible``: evaluated, but kept off every front by
        a violated constraint (a cap, an infeasible cut plan) or a value the
        run could not measure (e.g. a cut plan too large to score).  Kept
        apart because the first is a bug or an outage to look into and the
        second is the search working as configured.
        """
        if "error" in self.details:
            return "failed"
        return "feasible" if self.usable else "infeasible"


@dataclass(frozen=True)
class OutcomeCounts:
    """How many candidates ended feasible, infeasible or failed (see :attr:`CandidateRecord.outcome`)."""

    feasible: int = 0
    infeasible: int = 0
    failed: int = 0

    @classmethod
    def of(cls, records: Iterable[CandidateRecord]) -> OutcomeCounts:
        counts = {"feasible": 0, "infeasible": 0, "failed": 0}
        for r in records:
            counts[r.outcome] += 1
        return cls(**counts)

    @property
    def total(self) -> int:
        return self.feasible + self.infeasible + self.failed

    def describe(self) -> str:
        """``"8 candidates (6 feasible, 2 infeasible, 0 failed)"``: the wording of the console and of summary.md."""
        split = f"{self.feasible} feasible, {self.infeasible} infeasible, {self.failed} failed"
        return f"{plural(self.total, 'candidate')} ({split})"


@dataclass(frozen=True)
class GenerationRecord:
    """A completed generation: survivors, the front so far and its hypervolume (architectures as canonical strings).

    ``index`` is 0-based as stored; users see :func:`generation_number`.
    ``front`` is the front within resolution (:func:`qnas_hw.search.fronts.study_front`),
    the one the console line, the report and ``hw-eval --which front`` show;
    studies written before it was stored hold the exact front here.
    ``hypervolume`` is that of the exact front, in the study's fixed box.
    """

    index: int
    population: list[str]
    front: list[str]
    hypervolume: float | None
    finished_at: str = field(default="")

    @property
    def number(self) -> int:
        """The 1-based number users see (:func:`generation_number`)."""
        return generation_number(self.index)


def generation_number(index: int) -> int:
    """The generation number every output prints for stored 0-based ``index``: 1-based, 1 = the initial population.

    The study, its candidates and the optimiser count from 0 (pymoo's and
    SQLite's convention, kept for existing studies); a person reads
    "generation 1/5 ... 5/5".  The console, summary.md, report.json, the CSV
    exports and the plots all print this number, so they agree.
    """
    return int(index) + 1


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


def _check_writable(path: Path) -> None:
    """A writer needs the study file (when it exists) and its directory writable; say so before any work."""
    place = nearest_existing(path.parent)
    for target, what in ((path, "study file"), (place, "directory")):
        if target.exists() and not os.access(target, os.W_OK):
            raise StudyStorageError(
                f"the {what} {target} is read-only, and writing a study needs it writable: fix its permissions, or "
                f"copy the study somewhere writable and resume the copy (`qnas-hw report` still reads it as it is)"
            )


def _read_only_connection(path: Path) -> sqlite3.Connection:
    """A connection that never writes, and leaves no file behind when nobody is writing the study.

    A WAL-mode file opened with ``mode=ro`` gets ``-wal``/``-shm`` side files
    that a reader cannot remove again.  When no ``-wal`` file exists (the last
    writer closed cleanly, so nothing waits to be checkpointed) and no live
    process holds the writer lock, the main file is the whole study, and SQLite
    may read it as ``immutable``: no side files, works in read-only places.  A
    writer starting meanwhile appends to its own WAL and leaves the main file
    as read.  Otherwise (a writer is running, or one died leaving its WAL)
    ``mode=ro`` reads through the WAL, falling back to ``immutable`` only
    where the side files cannot be created (a read-only directory).
    """
    uri = path.resolve().as_uri()
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() and not is_held(path):
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=30.0, isolation_level=None)
    else:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            conn.close()
            conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Study:
    """Handle on one study file.  Cheap to create; holds one connection, opened lazily."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._config: dict[str, Any] | None = None
        self._objective_names: list[str] | None = None
        self._lock: WriterLock | None = None
        #: opened with ``write=False``: every connection is SQLite read-only, so reading works in a read-only place
        self._read_only = False

    @property
    def read_only(self) -> bool:
        """Opened for reading: every connection is read-only (the job ledger reads it without creating tables)."""
        return self._read_only

    def _take_lock(self, purpose: str) -> None:
        _check_writable(self.path)
        try:
            self._lock = WriterLock(self.path, purpose).acquire()
        except LockedError as exc:
            raise StudyLocked(str(exc)) from None
        except OSError as exc:
            raise StudyStorageError(
                f"cannot take the writer lock next to {self.path} ({exc.strerror or exc}); the directory must be "
                "writable for a search, hw-eval or calibrate to write this study"
            ) from None

    # ------------------------------------------------------------- lifecycle
    @classmethod
    def create(
        cls,
        path: Path | str,
        config: dict[str, Any],
        objective_names: Sequence[str] | None = None,
        purpose: str = "qnas-hw search",
    ) -> Study:
        """Create a new study file, holding its writer lock; refuses to touch an existing one (resume it instead).

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
        _check_writable(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyStorageError(f"cannot create the directory {path.parent}: {exc.strerror or exc}") from None
        study = cls(path)
        study._take_lock(purpose)
        if path.exists():  # created by a process that held the lock a moment ago
            study.close()
            raise StudyError(f"study {path} already exists; continue it with `qnas-hw search --resume {path}`")
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
    def open(cls, path: Path | str, write: bool = False, purpose: str = "qnas-hw") -> Study:
        """Open an existing study; a missing, foreign, damaged or newer-schema file is an error naming it.

        ``write=True`` takes the writer lock first (refused, naming the
        holder, while another process writes), migrates an older schema, and
        removes temporary files a killed writer left next to the study.
        """
        path = Path(path)
        if not path.is_file():
            raise StudyError(f"study {path} does not exist; pass the study.sqlite written by `qnas-hw search`")
        study = cls(path)
        study._read_only = not write
        try:
            if write:
                study._take_lock(purpose)
            study._check(write)
        except BaseException:
            study.close()
            raise
        if write:
            study._remove_leftovers()
        return study

    def _check(self, write: bool) -> None:
        path = self.path
        try:
            version = self._meta("schema_version")
            problems = [r[0] for r in self._connection().execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            if storage_problem(exc):
                raise StudyStorageError(f"cannot open study {path}: {storage_problem(exc)}") from None
            raise StudyCorrupt(
                f"{path} is not a qnas-hw study, or a damaged one ({exc}); if it is a study, restore it from a "
                "backup, or start a new search in another --out directory"
            ) from None
        if problems != ["ok"]:
            raise StudyCorrupt(
                f"study {path} is damaged (SQLite quick_check: {'; '.join(problems[:3])}); restore it from a "
                "backup, or start a new search in another --out directory"
            )
        if version is None:
            raise StudyError(f"{path} is not a qnas-hw study (no schema_version in its meta table)")
        if int(version) in _MIGRATABLE and write:
            self._migrate(int(version))
        elif int(version) != SCHEMA_VERSION and int(version) not in _MIGRATABLE:
            raise StudyError(
                f"study {path} has schema version {version}, this qnas-hw reads {SCHEMA_VERSION}; use the "
                "qnas-hw version that wrote it"
            )

    def _migrate(self, version: int) -> None:
        """Schema 1 -> 2: add the per-row checksum column and fill it from the rows as they are."""
        with self.transaction() as c:
            columns = {r[1] for r in c.execute("PRAGMA table_info(candidates)")}
            if "checksum" not in columns:
                c.execute("ALTER TABLE candidates ADD COLUMN checksum TEXT")
            rows = c.execute(f"SELECT id, {self._COLUMNS} FROM candidates").fetchall()
            for row_id, *values in rows:
                c.execute("UPDATE candidates SET checksum = ? WHERE id = ?", (row_checksum(*values), row_id))
            c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        logger.info("migrated study %s from schema %d to %d", self.path, version, SCHEMA_VERSION)

    def holds_results(self) -> bool:
        """Whether any table but ``meta`` has a row: a candidate, a generation, a job (planned or paid), a result.

        A study without any is what a start that failed before its first
        candidate leaves behind; nothing in it was computed or paid for.
        """
        conn = self._connection()
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'meta'").fetchall()
        ]
        return any(conn.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone() for t in tables)

    def discard(self) -> None:
        """Delete the study file, its SQLite side files and its config JSON, then release the lock.

        Only for a study that :meth:`holds_results` found empty and that this
        handle opened for writing (the lock keeps any other process out while
        the files go).
        """
        if self._lock is None:
            raise StudyError(f"discarding {self.path} needs the writer lock (open it with write=True)")
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        for stale in (self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm")):
            stale.unlink(missing_ok=True)
        self.config_json_path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        self.close()

    def _remove_leftovers(self) -> None:
        """Temporary files of atomic writes a killed writer never renamed (the lock proves nobody writes now)."""
        folders = [self.path.parent, self.path.parent / "weights"]
        for folder in folders:
            if not folder.is_dir():
                continue
            for tmp in folder.glob(".*.tmp"):
                try:
                    tmp.unlink()
                    logger.info("removed %s, left by an interrupted write", tmp)
                except OSError as exc:
                    logger.warning("could not remove leftover %s: %s", tmp, exc)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Study({str(self.path)!r})"

    # ------------------------------------------------------------ connection
    def connect(self) -> sqlite3.Connection:
        """A new connection to the same WAL file (for other modules' own tables); the caller closes it."""
        if self._read_only:
            return _read_only_connection(self.path)
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
        """One atomic write: everything inside is committed together or not at all.

        A disk that refuses the write raises :class:`StudyStorageError` (and
        nothing of the transaction is stored); other SQLite errors name the file.
        """
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise  # the caller's logic (a duplicate row), not the file's condition
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                with suppress(sqlite3.DatabaseError):
                    conn.execute("ROLLBACK")
            raise _db_error(self.path, exc) from None

    # ------------------------------------------------------------------ meta
    def _meta(self, key: str) -> str | None:
        row = self._connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """A read query; SQLite errors (a page damaged after open) become :class:`StudyError` naming the file."""
        try:
            return self._connection().execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _db_error(self.path, exc) from None

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

    def meta_json(self, key: str) -> Any:
        """A JSON value of the meta table (None when absent)."""
        raw = self._meta(key)
        return None if raw is None else json.loads(raw)

    def set_meta_json(self, key: str, value: Any) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, _dumps(value)))

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
            "feasible = excluded.feasible, created_at = excluded.created_at, checksum = excluded.checksum"
            if replace
            else "ON CONFLICT DO NOTHING"
        )
        values = (
            arch.canonical(),
            settings_key,
            _dumps({k: float(v) for k, v in objectives.items()}),
            _dumps(details),
            _dumps(timings),
            int(generation),
            int(bool(feasible)),
        )
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO candidates (arch, settings_key, objectives, details, timings, generation, feasible, "
                f"arch_key, created_at, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {conflict}",
                (*values, arch.key(), now_iso(), row_checksum(*values)),
            )
            return cur.rowcount == 1

    def _record(self, row: sqlite3.Row | tuple[Any, ...]) -> CandidateRecord:
        """Decode a candidate row after checking its checksum (an edited or damaged value is an error)."""
        *values, checksum = row
        arch, settings_key, objectives, details, timings, generation, feasible = values
        if checksum is None or checksum != row_checksum(*values):
            raise StudyCorrupt(
                f"study {self.path}: the stored values of candidate {arch!r} do not match their checksum (edited "
                "or damaged in place); restore the study from a backup, or delete that row to have it evaluated "
                "again on --resume"
            )
        try:
            return CandidateRecord(
                arch=Architecture.parse(arch),
                objectives={k: float(v) for k, v in json.loads(objectives).items()},
                details=json.loads(details),
                timings=json.loads(timings),
                generation=int(generation),
                feasible=bool(feasible),
                settings_key=str(settings_key),
            )
        except (ValueError, TypeError) as exc:
            raise StudyCorrupt(f"study {self.path}: candidate {arch!r} cannot be decoded ({exc})") from None

    _COLUMNS = "arch, settings_key, objectives, details, timings, generation, feasible"
    _READ = _COLUMNS + ", checksum"

    def get_candidate(self, arch: Architecture, settings_key: str) -> CandidateRecord | None:
        """The stored evaluation of ``arch`` under ``settings_key`` (the search's evaluation cache)."""
        rows = self._read(
            f"SELECT {self._READ} FROM candidates WHERE arch_key = ? AND settings_key = ?", (arch.key(), settings_key)
        )
        return None if not rows else self._record(rows[0])

    def candidates(self, settings_key: str | None = None) -> list[CandidateRecord]:
        """Every stored evaluation in insertion order (optionally only one settings key)."""
        sql = f"SELECT {self._READ} FROM candidates"
        args: tuple[Any, ...] = ()
        if settings_key is not None:
            sql += " WHERE settings_key = ?"
            args = (settings_key,)
        return [self._record(r) for r in self._read(sql + " ORDER BY id", args)]

    def n_candidates(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM candidates")[0][0])

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
        rows = self._read("SELECT idx, population, front, hypervolume, finished_at FROM generations ORDER BY idx")
        return [
            GenerationRecord(int(i), json.loads(p), json.loads(f), None if h is None else float(h), str(t))
            for i, p, f, h, t in rows
        ]

    def last_algorithm_state(self) -> AlgorithmState | None:
        """The optimiser pickled after the last completed generation, or None before the first one."""
        rows = self._read(
            "SELECT generation, state, rng_state, saved_at FROM algorithm_state ORDER BY generation DESC LIMIT 1"
        )
        if not rows:
            return None
        gen, state, rng, saved = rows[0]
        return AlgorithmState(int(gen), bytes(state), json.loads(rng) if rng else None, str(saved))


def _db_error(path: Path, exc: sqlite3.DatabaseError) -> StudyError:
    problem = storage_problem(exc)
    if problem is not None:
        return StudyStorageError(
            f"could not write study {path}: {problem}; nothing of the interrupted step was recorded. Free space "
            f"(or make {path.parent} writable) and continue with `qnas-hw search --resume {path}`"
        )
    return StudyCorrupt(
        f"study {path} cannot be read ({exc}); it is damaged: restore it from a backup, or start a new search"
    )
