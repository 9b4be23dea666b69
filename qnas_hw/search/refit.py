"""``qnas-hw calibrate --from-study``: refit a backend's cost model on the jobs studies already ran and paid for.

A device-mode search, ``hw-eval`` and ``predict`` keep, in each job's ledger
row, what the job was priced on and what the provider reported for it
(:mod:`qnas_hw.jobs.usage`).  This module reads those rows from one or more
studies, opened read-only (a study in a read-only place is read as it is, and
nothing is ever written into a study), checks that they can be fitted, and
hands them to :func:`qnas_hw.hardware.calibrate.refit_from_jobs`, which fits the
model ``calibrate`` fits and writes (or, on a dry run, only shows) it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qnas_hw.hardware.backends import get_backend
from qnas_hw.hardware.calibrate import RefitError, RefitReport, min_jobs, refit_from_jobs, refit_kind
from qnas_hw.hardware.cost import calibration_path
from qnas_hw.jobs.ledger import JobLedger
from qnas_hw.jobs.usage import job_cost, measured_jobs
from qnas_hw.search.study import Study
from qnas_hw.text import plural


def refit_from_studies(
    backend_name: str,
    studies: Sequence[Path | str],
    out_path: Path | None = None,
    *,
    seed: int = 0,
    force: bool = False,
    dry_run: bool = False,
) -> RefitReport:
    """Refit ``backend_name``'s cost model on the finished jobs of ``studies``; see the module docstring.

    Every problem with the inputs (a study without device jobs, jobs of
    another backend only, too few usable jobs, a study whose recent jobs a
    read-only directory hides) is a :class:`RefitError` naming the study and
    the fix, raised before anything is fitted or written.
    """
    if not studies:
        raise RefitError("--from-study needs at least one study.sqlite")
    backend = get_backend(backend_name)
    fit_of, units = refit_kind(backend)
    jobs: list[Any] = []
    skipped: dict[str, int] = {}
    labels = []
    for path in studies:
        label = str(Path(path))
        labels.append(label)
        mine, why = _study_jobs(Path(path), backend.name, units)
        jobs += mine
        for reason, n in why.items():
            skipped[reason] = skipped.get(reason, 0) + n
    needed = min_jobs(fit_of)
    if len(jobs) < needed:
        left_out = "; ".join(f"{plural(n, 'job')} {reason}" for reason, n in sorted(skipped.items()))
        raise RefitError(
            f"{plural(len(jobs), 'finished job')} on {backend.name} in {', '.join(labels)} can be refitted"
            + (f" (left out: {left_out})" if left_out else "")
            + f"; a refit of the {fit_of.replace('_', ' ')} needs at least {needed}. Run more jobs (a longer "
            f"search, hw-eval), add another --from-study, or measure with `qnas-hw calibrate --backend {backend.name}`"
        )
    target = out_path or calibration_path(backend.name)
    return refit_from_jobs(backend, jobs, target, studies=labels, seed=seed, force=force, dry_run=dry_run)


def _study_jobs(path: Path, backend_name: str, units: Sequence[str]) -> tuple[list[Any], dict[str, int]]:
    """The study's refittable jobs on the backend, and the others by reason; errors for a study that has none."""
    _check_wal_readable(path)
    with Study.open(path) as study:  # read-only: a refit never writes into a study
        ledger = JobLedger(study)
        try:
            records = ledger.jobs()
        finally:
            ledger.close()
    every = [c for c in map(job_cost, records) if c is not None]
    if not records:
        raise RefitError(
            f'study {path} has no device jobs (its job ledger is empty): only a search with accuracy = "device", '
            f"hw-eval or predict runs jobs to refit on. Measure {backend_name} instead with `qnas-hw calibrate "
            f"--backend {backend_name}`"
        )
    mine = [c for c in every if c.backend == backend_name]
    if not mine:
        others = {}
        for c in every:
            others[c.backend] = others.get(c.backend, 0) + 1
        ran = ", ".join(f"{b} ({plural(n, 'finished job')})" for b, n in sorted(others.items())) or "none finished"
        hint = f": pass --backend {sorted(others)[0]}" if others else ""
        raise RefitError(f"study {path} has no finished jobs on {backend_name}; its jobs ran on {ran}{hint}")
    return measured_jobs(mine, units, study=str(path))


def _check_wal_readable(path: Path) -> None:
    """Refuse a study whose latest writes sit in a write-ahead log that a read-only directory keeps unread.

    SQLite reads such a study as of its last checkpoint (``immutable``), so
    jobs finished since would silently be missing from the refit.
    """
    wal = path.with_name(path.name + "-wal")
    if wal.is_file() and wal.stat().st_size > 0 and not os.access(path.parent, os.W_OK):
        raise RefitError(
            f"study {path} has writes in {wal.name} that cannot be read in its read-only directory {path.parent}, so "
            "jobs it ran could be missing from the refit. Copy the study's directory (with the -wal file) somewhere "
            "writable and pass the copy to --from-study"
        )
