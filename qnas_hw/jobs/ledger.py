"""The job ledger: one row per hardware job, written before every submission and after every change.

Why a ledger: a hardware evaluation spends money and queue time, and the
process running it can die (crash, SIGKILL, laptop lid).  Every job therefore
gets an *idempotency key* (a hash of exactly what would be executed: the
transpiled circuits as OpenQASM 3, the parameter arrays, shots, backend and
seed) and its state lives in the study's SQLite database (WAL), each change in
its own committed transaction:

    planned --(before backend.submit: "submitting", attempt n)--> submitting
    submitting --(provider job id known)--> submitted
    submitted --(result fetched)--> done (counts + timing JSON)
    any --(permanent error / attempts exhausted)--> failed (error, attempts)

On resume the executor reuses ``done`` results, re-attaches ``submitted`` jobs
by provider id, and only ever resubmits on a *free* backend (a local
simulator whose jobs died with the process); see :mod:`qnas_hw.jobs.executor`.
``hw_job_events`` keeps the full history (every submission, error, re-attach)
so "how many times was key K submitted" is answerable after the fact.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qiskit import QuantumCircuit

from qnas_hw.hardware.backends.base import SamplerPub

log = logging.getLogger(__name__)

LEDGER_SCHEMA = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hw_jobs (
    key TEXT PRIMARY KEY,
    batch TEXT NOT NULL,
    label TEXT NOT NULL,
    backend TEXT NOT NULL,
    shots INTEGER NOT NULL,
    n_pubs INTEGER NOT NULL,
    n_rows INTEGER NOT NULL,
    state TEXT NOT NULL,
    provider_job_id TEXT,
    submissions INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    meta TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS hw_jobs_batch ON hw_jobs(batch);
CREATE TABLE IF NOT EXISTS hw_job_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    attempt INTEGER,
    provider_job_id TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS hw_job_events_key ON hw_job_events(key);
"""


class LedgerError(RuntimeError):
    """The ledger cannot be used as asked (bad path, inconsistent row, unsafe resubmission)."""


class JobClaimedError(LedgerError):
    """The job's row is no longer ``planned``: someone else owns its submission."""


class LedgerState(enum.StrEnum):
    PLANNED = "planned"
    SUBMITTING = "submitting"  # written right before backend.submit; provider id not yet known
    SUBMITTED = "submitted"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class JobRecord:
    """One ledger row, decoded."""

    key: str
    batch: str
    label: str
    backend: str
    shots: int
    n_pubs: int
    n_rows: int
    state: LedgerState
    provider_job_id: str | None
    submissions: int
    attempts: int
    result: dict[str, Any] | None
    error: str | None
    meta: dict[str, Any]
    created_at: str
    updated_at: str

    @property
    def counts(self) -> list[list[dict[str, int]]]:
        """Counts per PUB, then per parameter row (only for ``done`` rows)."""
        if self.state is not LedgerState.DONE or self.result is None:
            raise LedgerError(f"job {self.key[:12]} ({self.label}) is {self.state}, it has no counts yet")
        return self.result["counts"]


@dataclass(frozen=True)
class LedgerEvent:
    key: str
    at: str
    event: str
    attempt: int | None
    provider_job_id: str | None
    detail: str | None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def circuit_text(circuit: QuantumCircuit) -> str:
    """A process-independent text of a circuit (OpenQASM 3; QPY embeds random parameter UUIDs)."""
    from qiskit import qasm3

    try:
        return qasm3.dumps(circuit)
    except Exception as exc:  # exporter gaps (exotic gates): fall back to an explicit instruction listing
        log.debug("qasm3 export failed (%s); hashing the instruction list instead", exc)
        lines = [f"qubits {circuit.num_qubits} clbits {circuit.num_clbits}"]
        lines.append("params " + ",".join(p.name for p in circuit.parameters))
        for inst in circuit.data:
            qs = [circuit.find_bit(q).index for q in inst.qubits]
            cs = [circuit.find_bit(c).index for c in inst.clbits]
            lines.append(f"{inst.operation.name} {qs} {cs} {[str(p) for p in inst.operation.params]}")
        return "\n".join(lines)


def idempotency_key(backend_name: str, pubs: Sequence[SamplerPub], shots: int, seed: int | None) -> str:
    """sha256 over exactly what a job executes: circuits, parameter arrays, shots, backend, seed.

    Two runs that would send the same job get the same key, whatever process
    they run in; any change (weights, samples, shots, transpilation) makes a
    new key, so a stale result can never be reused for a different job.
    """
    h = hashlib.sha256()
    h.update(f"qnas-hw-job/v{LEDGER_SCHEMA}|{backend_name}|shots={int(shots)}|seed={seed}|pubs={len(pubs)}".encode())
    for pub in pubs:
        h.update(b"\x00circuit\x00" + circuit_text(pub.circuit).encode())
        if pub.shots is not None:  # only then: keys of jobs without per-PUB shots stay what they were
            h.update(f"\x00pubshots={int(pub.shots)}".encode())
        if pub.parameter_values is None:
            h.update(b"\x00values:none")
        else:
            values = np.ascontiguousarray(np.asarray(pub.parameter_values, dtype=np.float64))
            h.update(f"\x00values{values.shape}".encode() + values.tobytes())
    return h.hexdigest()


ConnectionSource = str | Path | Callable[[], sqlite3.Connection] | Any


class JobLedger:
    """Job states in SQLite (the study file or a standalone one); every change is its own committed transaction.

    ``source`` is a path, a zero-argument connection factory, or any object
    with ``.connect() -> sqlite3.Connection`` (a :class:`qnas_hw.search.study.Study`).
    One connection is held and guarded by a lock, so the executor's worker
    threads and the event loop may all write.
    """

    def __init__(self, source: ConnectionSource, *, read_only: bool | None = None) -> None:
        """Open the ledger; a writer creates its tables, a reader never writes.

        ``read_only`` defaults to the source's own ``read_only`` (a study
        opened for reading, as ``hw-eval --dry-run`` and ``report`` do): such a
        ledger reads a study that never had a job as an empty ledger instead of
        creating tables on a connection that cannot write.
        """
        self._lock = threading.RLock()
        self.read_only = bool(getattr(source, "read_only", False)) if read_only is None else read_only
        self._conn = self._open(source)
        self._conn.execute("PRAGMA busy_timeout = 30000")
        if self.read_only:
            return
        mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode and str(mode[0]).lower() not in ("wal", "memory"):
            log.warning("ledger database is in journal mode %s, not WAL", mode[0])
        self._conn.execute("PRAGMA synchronous = FULL")  # a committed state survives power loss
        with self._lock:
            self._conn.executescript(_SCHEMA)

    @staticmethod
    def _open(source: ConnectionSource) -> sqlite3.Connection:
        if isinstance(source, str | Path):
            path = Path(source)
            if str(source) != ":memory:" and not path.parent.is_dir():
                raise LedgerError(f"ledger directory {path.parent} does not exist; create it or pass the study path")
            conn = sqlite3.connect(str(source), isolation_level=None, check_same_thread=False, timeout=30)
        elif hasattr(source, "connect") and callable(source.connect):
            conn = source.connect()
        elif callable(source):
            conn = source()
        else:
            raise LedgerError(
                f"JobLedger needs a database path, a Study or a connection factory, got {type(source).__name__}"
            )
        if not isinstance(conn, sqlite3.Connection):
            raise LedgerError(f"connection factory returned {type(conn).__name__}, not sqlite3.Connection")
        # re-open with our settings when a factory gave a thread-bound or implicit-transaction connection
        if conn.isolation_level is not None:
            conn.isolation_level = None
        return conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction (BEGIN IMMEDIATE: no other writer interleaves a read-modify-write)."""
        if self.read_only:
            raise LedgerError(
                "this job ledger was opened read-only (a dry run or a report) and cannot record jobs; open the "
                "study for writing (run hw-eval or the search without --dry-run) to submit"
            )
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _event(
        self,
        conn: sqlite3.Connection,
        key: str,
        event: str,
        attempt: int | None,
        job_id: str | None,
        detail: str | None,
    ) -> None:
        conn.execute(
            "INSERT INTO hw_job_events(key, at, event, attempt, provider_job_id, detail) VALUES (?,?,?,?,?,?)",
            (key, _now(), event, attempt, job_id, detail),
        )

    # ---------------------------------------------------------------- writes
    def plan(
        self,
        key: str,
        *,
        batch: str,
        label: str,
        backend: str,
        shots: int,
        n_pubs: int,
        n_rows: int,
        meta: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Insert a ``planned`` row unless the key exists (then the existing row is returned untouched)."""
        with self.transaction() as conn:
            row = conn.execute("SELECT backend FROM hw_jobs WHERE key = ?", (key,)).fetchone()
            if row is None:
                now = _now()
                conn.execute(
                    "INSERT INTO hw_jobs(key, batch, label, backend, shots, n_pubs, n_rows, state, meta, created_at,"
                    " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        key,
                        batch,
                        label,
                        backend,
                        int(shots),
                        int(n_pubs),
                        int(n_rows),
                        LedgerState.PLANNED.value,
                        json.dumps(meta or {}, sort_keys=True),
                        now,
                        now,
                    ),
                )
                self._event(conn, key, "planned", None, None, label)
            elif row[0] != backend:
                raise LedgerError(f"ledger key {key[:12]} belongs to backend {row[0]!r}, not {backend!r}")
        rec = self.get(key)
        assert rec is not None
        return rec

    def mark_submitting(self, key: str) -> int:
        """Record that submission number n is about to happen (before the provider call); returns n.

        A compare-and-set: only a ``planned`` row (or a ``failed`` one, retried
        by a later run) becomes ``submitting``, in
        one ``BEGIN IMMEDIATE`` transaction, so two writers (which the study's
        writer lock already prevents) could still never both submit one job.
        """
        with self.transaction() as conn:
            row = conn.execute("SELECT submissions, state FROM hw_jobs WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise LedgerError(f"no planned job with key {key[:12]}; plan it first")
            n = int(row[0]) + 1
            cur = conn.execute(
                "UPDATE hw_jobs SET state = ?, submissions = ?, attempts = attempts + 1, provider_job_id = NULL,"
                " updated_at = ? WHERE key = ? AND state IN (?, ?)",
                (LedgerState.SUBMITTING.value, n, _now(), key, LedgerState.PLANNED.value, LedgerState.FAILED.value),
            )
            if cur.rowcount != 1:
                raise JobClaimedError(
                    f"job {key[:12]} is {row[1]}, not planned: another writer submitted or is submitting it; "
                    "not submitting it again"
                )
            self._event(conn, key, "submitting", n, None, None)
        return n

    def mark_submitted(self, key: str, provider_job_id: str, attempt: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE hw_jobs SET state = ?, provider_job_id = ?, updated_at = ? WHERE key = ?",
                (LedgerState.SUBMITTED.value, provider_job_id, _now(), key),
            )
            self._event(conn, key, "submitted", attempt, provider_job_id, None)

    def mark_submit_error(self, key: str, attempt: int, error: str) -> None:
        """The submit call itself raised: back to ``planned`` (nothing was accepted), error kept."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE hw_jobs SET state = ?, error = ?, updated_at = ? WHERE key = ?",
                (LedgerState.PLANNED.value, error, _now(), key),
            )
            self._event(conn, key, "submit_error", attempt, None, error)

    def record_event(self, key: str, event: str, detail: str | None = None, attempt: int | None = None) -> None:
        """History-only entry (re-attach, transient poll error, job lost), no state change."""
        with self.transaction() as conn:
            self._event(conn, key, event, attempt, None, detail)

    def mark_job_error(self, key: str, attempt: int, provider_job_id: str | None, error: str) -> None:
        """A submitted job ended without a result (failed at the provider, hung, lost): retryable."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE hw_jobs SET state = ?, error = ?, updated_at = ? WHERE key = ?",
                (LedgerState.PLANNED.value, error, _now(), key),
            )
            self._event(conn, key, "job_error", attempt, provider_job_id, error)

    def mark_done(self, key: str, result: dict[str, Any]) -> None:
        blob = json.dumps(result, sort_keys=True, default=_json_default)
        with self.transaction() as conn:
            row = conn.execute("SELECT provider_job_id, submissions FROM hw_jobs WHERE key = ?", (key,)).fetchone()
            conn.execute(
                "UPDATE hw_jobs SET state = ?, result = ?, error = NULL, updated_at = ? WHERE key = ?",
                (LedgerState.DONE.value, blob, _now(), key),
            )
            self._event(conn, key, "done", row[1] if row else None, row[0] if row else None, None)

    def mark_failed(self, key: str, error: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE hw_jobs SET state = ?, error = ?, updated_at = ? WHERE key = ?",
                (LedgerState.FAILED.value, error, _now(), key),
            )
            self._event(conn, key, "failed", None, None, error)

    def forget_submission(self, key: str, reason: str) -> None:
        """Manual override after the user checked the provider console: treat a lost submission as never made."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE hw_jobs SET state = ?, provider_job_id = NULL, updated_at = ? WHERE key = ? AND state != ?",
                (LedgerState.PLANNED.value, _now(), key, LedgerState.DONE.value),
            )
            self._event(conn, key, "forgotten", None, None, reason)

    # ----------------------------------------------------------------- reads
    def select(self, sql: str, params: Sequence[Any] = (), *, table: str = "hw_jobs") -> list[Any]:
        """Rows of a read from ``table``; none when the study never made that table (a reader does not create it)."""
        with self._lock:
            if not _table_exists(self._conn, table):
                return []
            return self._conn.execute(sql, tuple(params)).fetchall()

    def get(self, key: str) -> JobRecord | None:
        rows = self.select(f"SELECT {_COLUMNS} FROM hw_jobs WHERE key = ?", (key,))
        return _record(rows[0]) if rows else None

    def jobs(self, batch: str | None = None) -> list[JobRecord]:
        if batch is None:
            rows = self.select(f"SELECT {_COLUMNS} FROM hw_jobs ORDER BY created_at, key")
        else:
            rows = self.select(f"SELECT {_COLUMNS} FROM hw_jobs WHERE batch = ? ORDER BY created_at, key", (batch,))
        return [_record(r) for r in rows]

    def events(self, key: str | None = None) -> list[LedgerEvent]:
        columns = "key, at, event, attempt, provider_job_id, detail"
        if key is None:
            rows = self.select(f"SELECT {columns} FROM hw_job_events ORDER BY id", table="hw_job_events")
        else:
            rows = self.select(
                f"SELECT {columns} FROM hw_job_events WHERE key = ? ORDER BY id", (key,), table="hw_job_events"
            )
        return [LedgerEvent(*r) for r in rows]

    def paid_keys(self, backend: str) -> set[str]:
        """Keys of jobs the provider already has (done, submitted, or possibly accepted): never priced again."""
        rows = self.select(
            "SELECT key FROM hw_jobs WHERE backend = ? AND (state IN (?, ?, ?) OR submissions > 0)",
            (backend, LedgerState.DONE.value, LedgerState.SUBMITTED.value, LedgerState.SUBMITTING.value),
        )
        return {r[0] for r in rows}

    def spent(self, batch: str) -> dict[str, float]:
        """What the batch's submitted jobs cost: reported QPU seconds where known, else the prediction in their meta.

        Every submission counts (a job resubmitted after a provider failure is
        paid again), so a budget is never exceeded by retries.
        """
        rows = self.select(
            "SELECT meta, result, submissions FROM hw_jobs WHERE batch = ? AND submissions > 0", (batch,)
        )
        out = {"seconds": 0.0, "usd": 0.0, "shots": 0.0}
        for meta_text, result_text, submissions in rows:
            meta = json.loads(meta_text) if meta_text else {}
            result = json.loads(result_text) if result_text else {}
            reported = ((result or {}).get("timing") or {}).get("quantum_seconds")
            n = max(1, int(submissions))
            out["seconds"] += float(reported) if reported else n * float(meta.get("pred_seconds", 0.0))
            out["usd"] += n * float(meta.get("pred_usd") or 0.0)
            out["shots"] += n * float(meta.get("pred_shots", 0.0))
        return out

    def submission_counts(self) -> dict[str, int]:
        """Key -> number of backend.submit calls ever made for it (from the ``submissions`` column)."""
        rows = self.select("SELECT key, submissions FROM hw_jobs")
        return {k: int(n) for k, n in rows}


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


_COLUMNS = (
    "key, batch, label, backend, shots, n_pubs, n_rows, state, provider_job_id, submissions, attempts, result, error,"
    " meta, created_at, updated_at"
)


def _record(row: Sequence[Any]) -> JobRecord:
    (key, batch, label, backend, shots, n_pubs, n_rows, state, job_id, subs, attempts, result, error, meta, c, u) = row
    return JobRecord(
        key=key,
        batch=batch,
        label=label,
        backend=backend,
        shots=int(shots),
        n_pubs=int(n_pubs),
        n_rows=int(n_rows),
        state=LedgerState(state),
        provider_job_id=job_id,
        submissions=int(subs),
        attempts=int(attempts),
        result=json.loads(result) if result else None,
        error=error,
        meta=json.loads(meta) if meta else {},
        created_at=c,
        updated_at=u,
    )


def _json_default(obj: Any) -> Any:
    """Provider timing payloads hold numpy scalars and datetimes; store them as plain JSON."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    return str(obj)
