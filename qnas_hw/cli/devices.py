"""``qnas-hw devices`` (the backends, offline) and ``qnas-hw calibrate`` (fit a backend's cost model)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from qnas_hw.cli import common
from qnas_hw.progress import use_bars


@common.app.command()
def devices(
    all_: Annotated[
        bool, typer.Option("--all", help="List every fake IBM snapshot the registry accepts, not only the featured.")
    ] = False,
    verbose: common.Verbose = False,
) -> None:
    """List the backends (offline snapshots, local simulators, cloud QPUs); contacts no cloud."""
    common._setup_logging(verbose)
    with common._cli_errors(verbose):
        from qnas_hw.hardware.backends import list_backends

        rows = list_backends(all_fakes=all_)
        table = _devices_table(rows, common.out_console.width)
        common.out_console.print(table, soft_wrap=False)
        notes = [f"{r['name']}: {r['note']}" for r in rows if r.get("note")]
        for note in notes:
            common.out_console.print(f"note: {note}", highlight=False, markup=False)
        common.out_console.print(
            "kind: snapshot = a real device's calibration data, simulated locally; simulator = local; cloud QPU = "
            "the real device (needs credentials).  credentials: n/a where none are needed."
            + ("" if all_ else "  More fake IBM snapshots: `qnas-hw devices --all`."),
            highlight=False,
            markup=False,
        )


#: Width the devices table needs besides its name column (kind, qubits, topology, credentials, gates, gaps).
_DEVICES_OTHER_COLUMNS = 64


def _devices_table(rows: list[dict[str, Any]], width: int) -> Table:
    """The backends at 80 columns: local names never break, gates wrap, cloud ARNs fold, notes go under the table."""
    from rich import box

    title = "qnas-hw backends (use the name with --backend)"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    longest = max((len(str(r["name"])) for r in rows), default=12)
    longest_local = max((len(str(r["name"])) for r in rows if r.get("simulator")), default=12)
    # a terminal too narrow for the cloud ARNs: fix the name column so only they fold and the gates still wrap
    fixed = longest_local if width < longest + _DEVICES_OTHER_COLUMNS else None
    table.add_column("name", overflow="fold", width=fixed, min_width=longest_local)
    table.add_column("kind", no_wrap=True)
    table.add_column("qubits", justify="right", no_wrap=True)
    table.add_column("topology", no_wrap=True)
    table.add_column("credentials")
    table.add_column("gates")
    for r in rows:
        gates = [g for g in (r.get("basis") or []) if g not in _NON_GATES]
        table.add_row(
            _cell(r.get("name")),
            _kind(r),
            _cell(r.get("qubits")),
            _cell(r.get("topology")),
            _credentials(r),
            " ".join(map(str, gates)),
        )
    return table


def _kind(row: dict[str, Any]) -> str:
    if not row.get("simulator"):
        return "cloud QPU"
    return "snapshot" if row.get("snapshot") else "simulator"


def _credentials(row: dict[str, Any]) -> str:
    """``n/a`` for anything that runs locally (simulators, snapshots): no account is involved, found or not."""
    if row.get("simulator"):
        return "n/a"
    return "found" if row.get("credentials") else "missing"


#: Instructions every device supports; listing them hides the gates that differ.
_NON_GATES = frozenset(
    {"delay", "measure", "reset", "id", "barrier", "for_loop", "if_else", "switch_case", "while_loop"}
)


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    if value is None:
        return ""
    return str(value)


# ------------------------------------------------------------ calibrate
@common.app.command()
def calibrate(
    backend: Annotated[str, typer.Option("--backend", help="Backend to calibrate (see `qnas-hw devices`).")],
    quick: Annotated[bool, typer.Option("--quick", help="Small design (minutes less, fit less precise).")] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Calibration JSON (default: <backend>.json in $QNAS_CALIBRATION_DIR, else in qnas-hw/calibration "
            "under $XDG_DATA_HOME or ~/.local/share; lookups read that directory before the shipped files).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing file even when the new held-out fit is worse.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr (on a terminal).")
    ] = True,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the design (or of a refit's held-out split).")] = 0,
    from_study: Annotated[
        list[Path] | None,
        typer.Option(
            "--from-study",
            help="Refit on the jobs this study already ran on the backend (repeat for several studies); runs no job.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --from-study: show the refit and write nothing.")
    ] = False,
    verbose: common.Verbose = False,
) -> None:
    """Measure runtimes on a backend and fit its cost model (written as calibration JSON).

    With --from-study, fit the same model on the jobs a device-mode search,
    hw-eval or predict already ran (their reported usage, no new job).
    """
    common._setup_logging(verbose)
    with common._cli_errors(verbose):
        if from_study:
            _refit(backend, from_study, out=out, seed=seed, force=force, dry_run=dry_run, quick=quick)
            return
        if dry_run:
            common._fail(
                "--dry-run shows a refit (--from-study STUDY); a measured calibration has nothing to show before its "
                "jobs run"
            )
        from qnas_hw.hardware.calibrate import run_calibration, summary_lines

        with _calibration_steps(backend, bar=use_bars(progress)) as on_step:
            report_ = run_calibration(backend, out_path=out, seed=seed, quick=quick, force=force, on_step=on_step)
        for line in summary_lines(report_):
            common.out_console.print(line, highlight=False)


def _refit(
    backend: str, studies: list[Path], *, out: Path | None, seed: int, force: bool, dry_run: bool, quick: bool
) -> None:
    """``calibrate --from-study``: the refit's figures against the file it replaces; writes nothing on --dry-run."""
    if quick:
        common._fail("--quick sizes a measured design; a refit (--from-study) uses the studies' jobs, drop --quick")
    from qnas_hw.hardware.calibrate import refit_summary_lines
    from qnas_hw.search.refit import refit_from_studies

    report_ = refit_from_studies(backend, studies, out, seed=seed, force=force, dry_run=dry_run)
    for line in refit_summary_lines(report_):
        common.out_console.print(line, highlight=False, markup=False, soft_wrap=True)


@contextmanager
def _calibration_steps(backend: str, bar: bool) -> Iterator[Callable[[Any], None]]:
    """A progress bar on a terminal, else one stderr line per measured job: calibrating runs for minutes."""
    if not bar:
        yield lambda s: common.err_console.print(
            f"calibration job {s.done}/{s.total}: {s.label} -> {s.seconds:.3f} s", highlight=False
        )
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=common.err_console) as bar_:
        task = bar_.add_task(f"calibrating {backend}: warm-up", total=None)

        def on_step(s: Any) -> None:
            bar_.update(task, completed=s.done, total=s.total, description=f"calibrating {backend}: {s.label}")

        yield on_step
