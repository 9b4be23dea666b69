"""``qnas-hw`` command line: search, train, report, devices, calibrate (and hw-eval, added by the jobs layer).

The only module that prints.  Library errors caused by bad input (a wrong
config value, an unknown backend, an existing study, a corrupt calibration
file) exit with status 1 and their message, without a traceback; ``--verbose``
adds debug logging on stderr and the traceback.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from qnas_hw.config import ConfigError, RunConfig, default_config, load_config, stored_config, with_overrides
from qnas_hw.progress import Progress, is_terminal, use_bars
from qnas_hw.text import plural

if TYPE_CHECKING:  # imported lazily at run time: `qnas-hw devices` should not pay for torch
    from qnas_hw.search.hw_eval import HardwareEvalReport


def _stdout_reader_gone() -> bool:
    """True when stdout is a pipe whose reader has closed it (``| head`` done), or when that cannot be told.

    Tells "the reader of our output went away" from a broken pipe to some
    other process (a worker, a socket), which is a real error.
    """
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no descriptor (a test's capture)
        return True


@contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    """Exit 0 without a word when the reader of stdout goes away (``qnas-hw devices --all | head``), as Unix
    tools do; click alone would exit 1, silently, and look like a failure to the shell."""
    was_devnull = _stdout_is_devnull()
    try:
        yield
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        # the Python docs' note on SIGPIPE: send what is still buffered to devnull, or the interpreter's last
        # flush at exit fails again (and exits 120 with "Exception ignored")
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (AttributeError, OSError, ValueError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until the interpreter exits
        raise typer.Exit(0) from None
    except SystemExit as exc:
        # typer's --help prints through its own rich console, whose broken-pipe handling (Console.on_broken_pipe)
        # points stdout at devnull and exits 1: recognise exactly that and end with 0 too
        if exc.code == 1 and not was_devnull and _stdout_is_devnull():
            raise typer.Exit(0) from None
        raise


def _stdout_is_devnull() -> bool:
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull))
    except (AttributeError, OSError, ValueError):  # no descriptor (a test's capture)
        return False


class _QuietPipeGroup(TyperGroup):
    """The command group: every command's output, ``--help`` and ``--version`` end quietly on a closed pipe."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:  # parses, so prints --help / --version
        with _quiet_broken_pipe():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:  # runs the command (and its own --help)
        with _quiet_broken_pipe():
            return super().invoke(ctx)


class _OutConsole(Console):
    """stdout's console: a closed pipe raises ``BrokenPipeError`` for :func:`_quiet_broken_pipe` to end quietly
    with status 0 (rich's own handling exits 1, which reads as a failure)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # drop whatever else would be printed
        raise BrokenPipeError(errno.EPIPE, "the reader of stdout closed the pipe")


app = typer.Typer(
    cls=_QuietPipeGroup,
    name="qnas-hw",
    help="Hardware-aware architecture search for hybrid quantum-classical neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# piped or logged output (CI, `| tee`) would get rich's 80-column default, which truncates every architecture
# string in the front table; a file has no width, so give tables room (COLUMNS still wins where set)
_PIPED_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200
out_console = _OutConsole(soft_wrap=True, width=_PIPED_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)
logger = logging.getLogger("qnas_hw.cli")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out_console.print(f"qnas-hw {version('qnas-hw')}", highlight=False)
        except PackageNotFoundError:  # run from a source tree that was never installed
            out_console.print("qnas-hw (not installed: no package metadata)", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Hardware-aware architecture search for hybrid quantum-classical neural networks."""


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging (and tracebacks) on stderr.")]
#: ``search`` and ``train`` take these two the same way.
DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="Where models train and the circuits are simulated: auto (CUDA when torch sees one, else the CPU), "
        "cpu or cuda (sets compute.device).",
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Directory of the MNIST / Fashion-MNIST IDX files (sets data.data_dir)."),
]
#: Libraries whose INFO logging would drown ours even with --verbose.
_NOISY = (
    "qiskit",
    "stevedore",
    "qiskit_addon_cutting",
    "qiskit_aer",
    "qiskit_ibm_runtime",
    "braket",
    "matplotlib",
    "mthree",
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    if verbose:
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger("qnas_hw").setLevel(logging.DEBUG)


#: The package's exceptions that mean "bad input or state the user can fix", by module and class name.
_USER_ERROR_CLASSES: tuple[tuple[str, str], ...] = (
    ("qnas_hw.search.engine", "EngineError"),
    ("qnas_hw.search.study", "StudyError"),
    ("qnas_hw.search.problem", "SearchError"),
    ("qnas_hw.hardware.backends.base", "BackendError"),
    ("qnas_hw.jobs.guard", "BudgetExceeded"),
    ("qnas_hw.jobs.executor", "JobExecutionError"),
    ("qnas_hw.jobs.ledger", "LedgerError"),
)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "bad input or state the user can fix", reported without a traceback.

    Read from the modules already imported: an exception of a module never
    imported cannot have been raised, and importing the search layer (torch,
    qiskit, pymoo: seconds) to report a config error would make every error
    of every command slow.
    """
    found = [
        getattr(sys.modules[module], name) for module, name in _USER_ERROR_CLASSES if module in sys.modules
    ]
    return (ValueError, ConfigError, FileNotFoundError, PermissionError, *found)


@contextmanager
def _cli_errors(verbose: bool) -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]; everything finished so far is saved (resume with --resume)")
        raise typer.Exit(130) from None
    except _user_errors() as exc:
        if verbose:
            logger.exception("failed")
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # the disk or the run directory, not the input: say what and how to continue
        if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
            raise  # the reader of our output went away (`| head`): _QuietPipeGroup ends quietly
        from qnas_hw.search.study import storage_problem

        if verbose:
            logger.exception("failed")
        err_console.print(
            f"[bold red]error:[/bold red] could not write: {storage_problem(exc) or exc}; nothing half-written "
            "was kept. Free space (or fix the permissions) and run the same command again (a search: with --resume)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _timestamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _resolve_config(
    config: Path | None, study: Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """``--study`` (its stored config) or ``--config`` (a TOML file) or the embedded default, then overrides."""
    if config is not None and study is not None:
        _fail("pass either --config or --study, not both (a study carries its own configuration)")
    if study is not None:
        from qnas_hw.search.study import Study

        with Study.open(study) as s:
            cfg = stored_config(s.config, source=f"configuration stored in {study}")
    elif config is not None:
        cfg = load_config(config)
    else:
        cfg = default_config()
    return with_overrides(cfg, **(overrides or {})) if overrides else cfg


# ===================================================================== search
@app.command()
def search(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config (default: embedded Iris run).")
    ] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue this study.sqlite after a stop.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for everything (overrides the config).")] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="Target backend (see `qnas-hw devices`).")] = None,
    qubit_budget: Annotated[int | None, typer.Option("--qubit-budget", help="Qubits per subcircuit.")] = None,
    accuracy: Annotated[
        str | None,
        typer.Option(
            "--accuracy",
            help="How val_error is measured: ideal (exact simulation), noisy (the target's noise model, finite "
            "shots; default when the backend has one) or device (jobs on the backend itself).",
        ),
    ] = None,
    shots: Annotated[int | None, typer.Option("--shots", help="Shots per validation sample (noisy/device).")] = None,
    generations: Annotated[
        int | None,
        typer.Option(
            "--generations", help="NSGA-II generations; with --resume, extends a finished study to this many."
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="Torch threads (recorded in the study; a resume uses the recorded count)."),
    ] = None,
    device: DeviceOption = None,
    data_dir: DataDirOption = None,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="device: refuse a generation beyond this many billed USD.")
    ] = None,
    max_qpu_seconds: Annotated[
        float | None, typer.Option("--max-qpu-seconds", help="device: refuse beyond this many QPU seconds.")
    ] = None,
    max_shots: Annotated[
        int | None, typer.Option("--max-shots", help="device: refuse beyond this many shots in total.")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="Where candidate evaluations run: local (this process) or ray (one Ray task per candidate, same "
            "results; pip install 'qnas-hw[ray]'). May change on --resume.",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="--engine ray: '' starts a local Ray instance, 'auto' joins this machine's cluster, "
            "'ray://host:port' connects to a remote one.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the predicted cost of the whole search; train and submit nothing."),
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default runs/search-<time>).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")] = True,
    verbose: Verbose = False,
) -> None:
    """Run (or resume) the NSGA-II search; print the Pareto front and write the report.

    --accuracy device submits every generation's candidates to the backend
    (a real IBM/Braket QPU with credentials, or a fake backend offline)
    through the job ledger: --max-cost (USD, default 0: paid runs refused),
    --max-qpu-seconds and --max-shots bound what the search may spend, each
    generation is priced against what is left before anything is submitted,
    and --resume re-attaches to submitted jobs (limits may be raised then).

    With hw_eval.enabled = true in the config, the final front (or every
    candidate: hw_eval.which = "all") is then evaluated on the study's backend
    exactly like `qnas-hw hw-eval` (same spending guard, ledger and dry run)
    and the report gets the measured hw_acc@<backend> column.  A refused or
    failed hardware evaluation exits non-zero after the search and its report
    are saved.

    Ctrl-C stops after the device jobs in flight (they are recorded; nothing
    more is submitted) and exits 130; a second Ctrl-C stops without waiting
    for them.  Continue with --resume STUDY.
    """
    _setup_logging(verbose)
    with _cli_errors(verbose):
        overrides = {
            "seed": seed,
            "hardware.backend": backend,
            "hardware.qubit_budget": qubit_budget,
            "search.accuracy": accuracy,
            "search.shots": shots,
            "search.generations": generations,
            "compute.threads": threads,
            "compute.device": device,
            "data.data_dir": str(data_dir) if data_dir is not None else None,
        }
        execution = {
            k: v for k, v in {"compute.engine": engine, "compute.address": address}.items() if v is not None
        }  # where the evaluations run: may change on --resume
        budget = {
            k: v
            for k, v in {
                "search.device.max_cost_usd": _non_negative("--max-cost", max_cost),
                "search.device.max_qpu_seconds": _non_negative("--max-qpu-seconds", max_qpu_seconds),
                "search.device.max_shots": _non_negative("--max-shots", max_shots),
            }.items()
            if v is not None
        }
        if dry_run:
            cfg = (
                _resolve_config(None, study=resume) if resume is not None else _resolve_config(config, None, overrides)
            )
            extra = {**budget, **({"search.generations": generations} if resume is not None and generations else {})}
            _print_search_estimate(with_overrides(cfg, **extra) if extra else cfg, qubit_budget is not None)
            return
        if resume is not None:
            flags = {
                "--config": config,
                "--out": out,
                "--seed": seed,
                "--backend": backend,
                "--qubit-budget": qubit_budget,
                "--accuracy": accuracy,
                "--shots": shots,
                "--threads": threads,
                "--device": device,
                "--data-dir": data_dir,
            }
            given = [flag for flag, value in flags.items() if value is not None]
            if given:
                _fail(
                    f"--resume continues {resume} with its stored configuration; drop {', '.join(given)} "
                    "(start a new study to change settings; only --generations (to extend it), "
                    "--max-cost/--max-qpu-seconds/--max-shots and --engine/--address may change)"
                )
            study = _watched_search(
                resume,
                None,
                resume=resume,
                progress=progress,
                budget_overrides=budget,
                generations=generations,
                on_generation=_print_generation,
                compute_overrides=execution,
            )
        else:
            cfg = _resolve_config(config, overrides=overrides)
            run_dir = out if out is not None else Path("runs") / f"search-{_timestamp()}"
            err_console.print(
                f"study: {run_dir / 'study.sqlite'} (accuracy: {cfg.search.accuracy} on {cfg.hardware.backend}; "
                f"{_budget_text(cfg, qubit_budget is not None)})",
                highlight=False,
            )
            study = _watched_search(
                run_dir / "study.sqlite",
                cfg,
                run_dir,
                progress=progress,  # bars on a terminal, plain lines in a log (qnas_hw.progress decides)
                budget_overrides=budget,
                on_generation=_print_generation,
                compute_overrides=execution,
            )
        failure = _search_hw_eval(study, verbose)
        _print_summary(study)
        if failure is not None:
            _fail(
                f"hardware evaluation after the search: {failure}\nThe search itself is complete and saved in "
                f"{study.path}; run `qnas-hw hw-eval {study.path} --resume` with other limits to measure it."
            )


def _watched_search(study_path: Path, *args: Any, progress: bool, **kwargs: Any) -> Any:
    """``run_search`` as the CLI runs it: a ``device`` search's predicted job time printed before it starts, its
    jobs' progress shown while a generation runs, and Ctrl-C as a request to stop (:func:`_stop_on_sigint`).

    Imports the search layer only now, once the configuration is valid: a
    config error answers without paying for torch, qiskit and pymoo.
    """
    from qnas_hw.search.nsga import run_search

    jobs = _JobProgressView("device", enabled=progress)
    stop = None
    try:
        with _stop_on_sigint() as stop:
            return run_search(
                *args, progress=progress, on_jobs=jobs, on_estimate=_print_wall_estimate, stop=stop, **kwargs
            )
    except KeyboardInterrupt:
        _interrupted(stop, study_path, f"qnas-hw search --resume {study_path}")
    finally:
        jobs.close()


def _print_wall_estimate(estimate: Any, done_generations: int) -> None:
    """Before a ``device`` search trains anything: how long its jobs will take, from the calibrated cost model."""
    err_console.print(estimate.wall_line(done_generations), highlight=False, markup=False, soft_wrap=True)


class _JobProgressView:
    """A batch's :class:`~qnas_hw.jobs.JobProgress` on stderr: a bar on a terminal, a plain line every few seconds
    in a log (:class:`qnas_hw.progress.Progress` decides), so a generation of device jobs is not minutes of silence.
    """

    def __init__(self, what: str, enabled: bool = True) -> None:
        self.what = what
        self.enabled = enabled
        self._display: Any = None

    def __call__(self, p: Any) -> None:
        if not self.enabled:
            return
        if self._display is None:
            self._display = Progress(f"{self.what} jobs", p.total, unit="jobs done", leave=False)
        self._display.set(completed=p.done, total=p.total, status=p.status())
        if p.finished:
            self.close()

    def close(self) -> None:
        if self._display is not None:
            self._display.close()
            self._display = None


def _say(text: str) -> None:
    """One line on stderr from a signal handler: straight to the descriptor, never through a console that the
    interrupted code may be in the middle of printing with."""
    with suppress(OSError):
        os.write(2, (("\n" if is_terminal() else "") + text + "\n").encode("utf-8", "replace"))


@contextmanager
def _stop_on_sigint() -> Iterator[Any]:
    """Ctrl-C while a search or hardware evaluation runs: wind down, never lose what was paid for.

    The first SIGINT prints at once that the run is stopping; jobs in flight
    then finish and are recorded (nothing more is submitted) and the run ends
    with ``KeyboardInterrupt`` (:class:`~qnas_hw.jobs.JobsInterrupted`).  When
    no jobs are in flight (training, fine-tuning) it stops at once: nothing
    half-done is ever committed there.  The second SIGINT stops waiting for
    the jobs in flight: the ledger already holds them by provider job id, so a
    resume re-attaches to them.  A third one interrupts whatever is running.
    """
    import signal
    import threading

    from qnas_hw.jobs.executor import StopRequest

    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return

    def on_sigint(signum: int, frame: Any) -> None:
        level = stop.request()
        if level == 1:
            _say("stopping after the jobs in flight… (Ctrl-C again to stop without waiting for them)")
        elif level == 2 and stop.jobs_running:
            _say("stopping now: the jobs in flight stay recorded in the ledger; --resume re-attaches to them")
        if level >= 3 or not stop.jobs_running:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted(stop: Any, path: Path, resume_command: str) -> None:
    """The last word of a run stopped by Ctrl-C: what was kept and how to continue; exit status 130."""
    if path.is_file():
        how = f"everything finished is saved in {path}; continue with `{resume_command}`"
    else:
        how = "nothing was saved yet; run the same command again to start"
    err_console.print(f"[yellow]stopped[/yellow]: {how}", highlight=False, soft_wrap=True)
    if stop is not None and stop.stop_now:
        # jobs left in flight may still be running in this process's worker threads (a local simulator), and the
        # interpreter would wait for them at exit: every record is committed, so leave without waiting
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    raise typer.Exit(130)


def _print_generation(info: dict[str, Any]) -> None:
    """One line per generation on stderr, with or without progress bars.

    The candidate counts use summary.md's words and classification (feasible,
    infeasible, failed: :class:`~qnas_hw.search.study.OutcomeCounts`), so the
    last line and the report agree.  ``generation`` is already the 1-based
    number summary.md and the plots print; ``front`` is the front within
    resolution (the report table's row count), with the exact front's size
    beside it when they differ.
    """
    from qnas_hw.search.fronts import front_size_text

    hv = info["hypervolume"]
    best = info["best_val_error"]
    spent = info.get("spent")
    outcomes = info.get("outcomes")
    study = outcomes.describe() if outcomes is not None else plural(info["candidates"], "candidate")
    front = front_size_text(info["front"], info.get("exact_front", info["front"]))
    line = (
        f"generation {info['generation']}/{info['generations']}: study holds {study}; this run evaluated "
        f"{info['new']}, {_reused_text(info['from_study'])}; front {front}, hypervolume "
        f"{'n/a' if hv is None else f'{hv:.4f}'}, best val_error {'n/a' if best is None else f'{best:.4f}'}"
    )
    if spent is not None:
        shots = plural(round(spent["shots"]), "shot")
        line += f"; device jobs so far: {spent['seconds']:.1f} QPU s, ${spent['usd']:.2f}, {shots}"
    err_console.print(line, highlight=False)


def _reused_text(reused: int) -> str:
    """What the evaluator's "reused" count means: proposals whose result was already stored, not evaluated again."""
    return f"{plural(reused, 're-proposed architecture')} answered from stored results (not re-run)"


def _non_negative(flag: str, value: float | None) -> float | None:
    if value is not None and value < 0:
        _fail(f"{flag} {value:g} must be >= 0 (0 refuses any billed run; leave it out for the config's limit)")
    return value


def _budget_text(cfg: RunConfig, from_flag: bool = False) -> str:
    """``qubit budget 5 (follows fake_belem's 5 qubits)``: which budget the search cuts to, and why that one."""
    why = "--qubit-budget" if from_flag else cfg.qubit_budget_reason()
    return f"qubit budget {cfg.hardware.qubit_budget} ({why})"


def _print_search_estimate(cfg: RunConfig, from_flag: bool = False) -> None:
    """``search --dry-run``: the predicted spend of the search's accuracy jobs; nothing is trained or submitted."""
    from qnas_hw.search.building import make_hardware
    from qnas_hw.search.preflight import check_before_training, check_setup, estimate_search_cost

    out_console.print(
        f"accuracy: {cfg.search.accuracy}; backend {cfg.hardware.backend}; shots {cfg.search.shots} per sample; "
        f"{_budget_text(cfg, from_flag)}",
        highlight=False,
    )
    hw = make_hardware(cfg)
    check_setup(cfg, hw)
    if cfg.search.accuracy != "device" or hw is None:
        out_console.print(
            f"accuracy '{cfg.search.accuracy}' runs locally and submits no job: nothing to pay", highlight=False
        )
        return
    estimate = estimate_search_cost(cfg, hw)
    for line in [*estimate.lines(), estimate.wall_line()]:
        out_console.print(line, highlight=False, markup=False, soft_wrap=True)
    d = cfg.search.device
    out_console.print(
        f"limits: max cost ${d.max_cost_usd}, max QPU s {d.max_qpu_seconds}, max shots {d.max_shots}", highlight=False
    )
    try:
        check_before_training(cfg, hw)
    except Exception as exc:  # the refusal a real run would give, shown rather than raised
        err_console.print(f"[yellow]would refuse:[/yellow] {exc}", highlight=False)
    out_console.print("dry run: nothing was trained or submitted", highlight=False)


def _search_hw_eval(study: Any, verbose: bool) -> str | None:
    """``hw_eval.enabled``: evaluate the finished search on its backend; returns why it failed, or None.

    Runs with ``resume`` so a resumed search (or a second run after a crash)
    reuses every hardware result already in the ledger instead of refusing or
    paying again.  Errors are returned rather than raised so the caller can
    still write the search report before exiting non-zero.
    """
    from qnas_hw.jobs import BudgetExceeded, JobExecutionError, LedgerError

    cfg = stored_config(study.config, source=f"configuration stored in {study.path}")
    if not cfg.hw_eval.enabled:
        return None
    err_console.print(
        f"hw_eval.enabled: evaluating the {cfg.hw_eval.which} on {cfg.hardware.backend}"
        + (" (dry run)" if cfg.hw_eval.dry_run else ""),
        highlight=False,
    )
    try:
        jobs = _JobProgressView("hardware evaluation")
        try:
            _run_hw_eval(study.path, resume=True, on_progress=jobs)
        finally:
            jobs.close()
    except (BudgetExceeded, JobExecutionError, LedgerError, *_user_errors()) as exc:
        if verbose:
            logger.exception("hardware evaluation after the search failed")
        return str(exc)
    return None


def _print_summary(study: Any) -> None:
    from qnas_hw.reports.data import study_report_data
    from qnas_hw.reports.report import front_table, outcome_lines, write_report_data

    data = study_report_data(study)
    out_console.print(front_table(data), soft_wrap=False)  # fit the terminal: wrap cells, never crop
    files = write_report_data(data, study.path.parent / "report")
    runs = study.runs()
    if runs:
        last = runs[-1]
        out_console.print(
            f"this run: {plural(last.get('evaluated', 0), 'candidate')} evaluated ({last.get('failed', 0)} of them "
            "failed), "
            f"{_reused_text(int(last.get('reused', 0)))}",
            highlight=False,
        )
    for line in outcome_lines(data):  # the same lines as summary.md's header
        out_console.print(line, highlight=False)
    out_console.print(f"generations: {len(study.generations())}", highlight=False)
    out_console.print(f"study: {study.path}", highlight=False)
    out_console.print(f"report: {files.summary_md}", highlight=False)


# ====================================================================== train
@app.command()
def train(
    arch: Annotated[str, typer.Option("--arch", help="Canonical architecture, e.g. 'angle-y|q4|l2|ry-rz|ring|z'.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config for data/model settings.")] = None,
    study: Annotated[Path | None, typer.Option("--study", help="Use the configuration stored in this study.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs from scratch.")] = 30,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed (default: the config's).")] = None,
    device: DeviceOption = None,
    data_dir: DataDirOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write weights (.pt) and figures (.json), named <architecture>-<key>, here; default: trained/ in "
            "the study's run directory (with --study), else runs/trained.",
        ),
    ] = None,
    accuracy: Annotated[
        str,
        typer.Option(
            "--accuracy",
            help="ideal: test accuracy of the exact (noise-free) simulator; noisy: also under the backend's noise "
            "model, scored as the search's noisy mode scores (transpiled, placed, cut to the qubit budget, finite "
            "shots).",
        ),
    ] = "ideal",
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    verbose: Verbose = False,
) -> None:
    """Retrain one architecture from scratch; report validation and (evaluated once, at the end) test accuracy.

    With --study, an architecture outside the study's search space is
    trained anyway, with a warning (it was never a candidate of that search).
    The weights and figures are always kept (see --out), since a retrain can
    take hours.
    """
    _setup_logging(verbose)
    with _cli_errors(verbose):
        from qnas_hw.atomic_write import atomic_write_text, atomic_write_torch
        from qnas_hw.config import default_accuracy, resolve_device
        from qnas_hw.data import load_dataset
        from qnas_hw.model.hqnn import HQNN
        from qnas_hw.model.space import Architecture
        from qnas_hw.model.training import TrainConfig, train_model

        cfg = _resolve_config(
            config,
            study,
            {
                "seed": seed,
                "data.data_dir": str(data_dir) if data_dir is not None else None,
                "compute.device": device,
            },
        )
        where = resolve_device(cfg.compute.device)
        architecture = Architecture.parse(arch)
        if epochs < 1:
            _fail(f"--epochs={epochs} must be >= 1")
        if accuracy not in ("ideal", "noisy"):
            _fail(
                f"--accuracy {accuracy!r} is not supported by train; use 'ideal' or 'noisy' (on the device itself: "
                "`qnas-hw hw-eval`)"
            )
        if study is not None:
            _warn_outside_space(architecture, cfg, study)
        target = out if out is not None else (study.parent if study is not None else Path("runs")) / "trained"
        _check_writable(target)  # before training: a retrain's result must not be lost to a read-only directory
        scorer = _noisy_test_scorer(cfg, architecture) if accuracy == "noisy" else None  # refusals before training
        d = cfg.data
        splits = load_dataset(
            d.dataset,
            d.data_dir,
            val_fraction=d.val_fraction,
            seed=cfg.seed,
            limit_train=d.limit_train,
            download=d.download,
        )
        model = HQNN(
            architecture, tuple(splits.input_shape), splits.n_classes, frontend=cfg.model.frontend, seed=cfg.seed
        ).to(where)
        tc = TrainConfig(epochs=epochs, batch_size=cfg.supercircuit.batch_size, lr=cfg.supercircuit.lr, seed=cfg.seed)
        result = train_model(model, splits, tc, progress=progress)
        model.cpu()  # the weights file loads anywhere (and the noisy scorer reads the model there)
        out_console.print(
            f"{architecture.canonical()}: best validation accuracy {100 * result.best_val_acc:.2f}% "
            f"(epoch {result.best_epoch}), test accuracy {100 * result.test_acc:.2f}% (exact: noise-free simulator); "
            f"{result.epochs_run} epochs, {result.train_seconds:.1f} s, dataset {splits.name}",
            highlight=False,
        )
        noisy = _noisy_test_accuracy(scorer, cfg, architecture, model, splits) if scorer is not None else None
        if noisy is not None:
            out_console.print(_noisy_line(noisy, result.test_acc), highlight=False)
        elif default_accuracy(cfg.hardware.backend) == "noisy":  # the target has a noise model to score under
            out_console.print(
                f"no noise in that test accuracy: `--accuracy noisy` also scores it under {cfg.hardware.backend}'s "
                "noise model",
                highlight=False,
            )
        stem = _arch_file_stem(architecture)
        weights, figures = target / f"{stem}.pt", target / f"{stem}.json"
        replaced = weights.exists() or figures.exists()
        atomic_write_torch(weights, model.state_dict())
        summary = {
            "architecture": architecture.canonical(),
            "dataset": splits.name,
            "best_val_acc": result.best_val_acc,
            "best_epoch": result.best_epoch,
            "test_acc": result.test_acc,
            "test_accuracy_mode": "ideal",  # test_acc: the exact, noise-free simulator
            "noisy_test": noisy,
            "epochs_run": result.epochs_run,
            "train_seconds": result.train_seconds,
            "history": result.history,
            "config": cfg.resolved(),
            "study": None if study is None else str(study),
            "weights": str(weights),
        }
        atomic_write_text(figures, json.dumps(summary, indent=2, default=str) + "\n")
        out_console.print(
            f"saved the weights to {weights} and the figures to {figures}"
            + (" (replacing an earlier retrain of this architecture)" if replaced else ""),
            highlight=False,
        )


def _check_writable(directory: Path) -> None:
    """Refuse a result directory that cannot be written, naming the fix, before anything is trained."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        _fail(
            f"cannot write the trained model to {directory} ({existing} is not a writable directory); pass --out DIR "
            "with a writable directory"
        )


def _noisy_test_scorer(cfg: RunConfig, architecture: Any) -> Any:
    """``train --accuracy noisy``: the search's ``noisy`` scorer (:class:`~qnas_hw.search.scoring.NoisyScorer`)
    on the config's backend, built before training so a backend without noise, or a cut plan too large to run,
    is refused in seconds rather than after the retrain."""
    from qnas_hw.config import default_accuracy
    from qnas_hw.hardware.backends import get_backend
    from qnas_hw.search.building import make_hardware, make_scorer

    backend = cfg.hardware.backend
    if default_accuracy(backend) == "ideal":
        _fail(
            f"--accuracy noisy needs the target's noise model, and backend {backend!r} has none; use a study or "
            "config whose backend has one (any fake_* IBM snapshot, aer_noisy, a braket_* snapshot)"
        )
    noisy = with_overrides(cfg, **{"search.accuracy": "noisy"})
    hw = make_hardware(noisy, get_backend(backend))
    assert hw is not None  # a backend was given
    scorer = make_scorer(noisy, hw.backend, hw.transpiler, hw.planner)
    reason = scorer.builder.unrunnable(architecture)
    if reason is not None:
        _fail(
            f"{architecture.canonical()} cannot be scored under {backend}'s noise with qubit budget "
            f"{cfg.hardware.qubit_budget}: {reason}; leave out --accuracy noisy for its exact test accuracy"
        )
    return scorer


def _noisy_test_accuracy(scorer: Any, cfg: RunConfig, architecture: Any, model: Any, splits: Any) -> dict[str, Any]:
    """The trained model's test accuracy under the backend's noise, on the stratified ``search.val_samples``
    subset of the test split the search would score (finite shots make every sample cost a simulation)."""
    import torch

    from qnas_hw.data import stratified_subset

    X, y = splits.test.tensors
    idx = torch.as_tensor(stratified_subset(y.numpy(), cfg.search.val_samples, cfg.seed))
    acc, details = scorer.score(architecture, model, X[idx], y[idx])
    details = {k: v for k, v in details.items() if not k.startswith("_")}  # timings are not figures
    return {"test_acc": acc, "backend": cfg.hardware.backend, "test_samples": len(y), **details}


def _noisy_line(noisy: dict[str, Any], exact: float) -> str:
    """``test accuracy under fake_kolkata's noise: 86.67% (...); exact: 90.00%``."""
    cut = noisy.get("cut_experiments")
    how = [
        f"{noisy['samples']} of {noisy['test_samples']} test samples",
        f"{noisy['shots']} shots each",
        "readout-mitigated" if noisy.get("mitigation") not in (None, "none") else "no readout mitigation",
        f"cut: {cut} subexperiment circuits per sample" if cut else "uncut",
        f"on qubits {noisy.get('layout')}",
    ]
    return (
        f"test accuracy under {noisy['backend']}'s noise: {100 * noisy['test_acc']:.2f}% ({', '.join(how)}); "
        f"exact (noise-free simulator): {100 * exact:.2f}%"
    )


def _arch_file_stem(architecture: Any) -> str:
    """``iqp|q2|l1|ry|ring|z`` -> ``iqp_q2_l1_ry_ring_z-<key>``: readable in a listing, unique by the key."""
    safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in architecture.canonical())
    return f"{safe}-{architecture.key()}"


def _warn_outside_space(architecture: Any, cfg: RunConfig, study: Path) -> None:
    """Warn (on stderr) when ``--arch`` lies outside the study's search space: results are not comparable."""
    from qnas_hw.model.space import SpaceError

    try:
        cfg.search_space().check(architecture)
    except SpaceError as exc:
        err_console.print(
            f"[yellow]warning:[/yellow] {architecture.canonical()} is outside the search space of {study}: {exc}. "
            "It was never a candidate there; training it anyway.",
            highlight=False,
        )


# ===================================================================== report
@app.command()
def report(
    study: Annotated[Path, typer.Argument(help="A study.sqlite written by `qnas-hw search`.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report directory (default: next to the study).")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Write the Pareto report (CSV, JSON, plots, summary.md) of a study and print its front."""
    _setup_logging(verbose)
    with _cli_errors(verbose):
        from qnas_hw.reports.data import study_report_data
        from qnas_hw.reports.report import front_table, outcome_lines, write_report_data
        from qnas_hw.search.study import Study

        with Study.open(study) as s:
            target = out if out is not None else s.path.parent / "report"
            if out is None and not os.access(s.path.parent, os.W_OK):
                _fail(
                    f"the study's directory {s.path.parent} is read-only, so the report cannot go to {target}; "
                    "pass --out DIR with a writable directory (the study itself is only read)"
                )
            data = study_report_data(s)
            files = write_report_data(data, target)
        out_console.print(front_table(data), soft_wrap=False)
        for line in outcome_lines(data):
            out_console.print(line, highlight=False)
        out_console.print(f"wrote {plural(len(files.all()), 'file')} to {files.out_dir}", highlight=False)


# ==================================================================== devices
@app.command()
def devices(
    all_: Annotated[
        bool, typer.Option("--all", help="List every fake IBM snapshot the registry accepts, not only the featured.")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """List the backends (offline snapshots, local simulators, cloud QPUs); contacts no cloud."""
    _setup_logging(verbose)
    with _cli_errors(verbose):
        from qnas_hw.hardware.backends import list_backends

        rows = list_backends(all_fakes=all_)
        table = _devices_table(rows, out_console.width)
        out_console.print(table, soft_wrap=False)
        notes = [f"{r['name']}: {r['note']}" for r in rows if r.get("note")]
        for note in notes:
            out_console.print(f"note: {note}", highlight=False, markup=False)
        out_console.print(
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


# ================================================================== calibrate
@app.command()
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
    seed: Annotated[int, typer.Option("--seed")] = 0,
    verbose: Verbose = False,
) -> None:
    """Measure runtimes on a backend and fit its cost model (written as calibration JSON)."""
    _setup_logging(verbose)
    with _cli_errors(verbose):
        from qnas_hw.hardware.calibrate import run_calibration, summary_lines

        with _calibration_steps(backend, bar=use_bars(progress)) as on_step:
            report_ = run_calibration(backend, out_path=out, seed=seed, quick=quick, force=force, on_step=on_step)
        for line in summary_lines(report_):
            out_console.print(line, highlight=False)


@contextmanager
def _calibration_steps(backend: str, bar: bool) -> Iterator[Callable[[Any], None]]:
    """A progress bar on a terminal, else one stderr line per measured job: calibrating runs for minutes."""
    if not bar:
        yield lambda s: err_console.print(
            f"calibration job {s.done}/{s.total}: {s.label} -> {s.seconds:.3f} s", highlight=False
        )
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console) as bar_:
        task = bar_.add_task(f"calibrating {backend}: warm-up", total=None)

        def on_step(s: Any) -> None:
            bar_.update(task, completed=s.done, total=s.total, description=f"calibrating {backend}: {s.label}")

        yield on_step


# ==================================================================== hw-eval
# The hardware-evaluation command (`qnas-hw hw-eval STUDY ...`) is registered by the jobs layer
# (qnas_hw/jobs) with a minimal edit below this line, using _setup_logging/_cli_errors like the others.


@app.command("hw-eval")
def hw_eval(
    study: Annotated[Path, typer.Argument(help="The study.sqlite written by `qnas-hw search`.")],
    backend: Annotated[
        str | None, typer.Option("--backend", help="Backend (default: the study's hardware.backend).")
    ] = None,
    which: Annotated[
        str | None, typer.Option("--which", help="'front' (the report's Pareto front) or 'all' candidates.")
    ] = None,
    shots: Annotated[int | None, typer.Option("--shots", help="Shots per validation sample.")] = None,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="Refuse if predicted billed USD exceeds this.")
    ] = None,
    max_qpu_seconds: Annotated[
        float | None, typer.Option("--max-qpu-seconds", help="Refuse above this QPU time.")
    ] = None,
    max_shots: Annotated[int | None, typer.Option("--max-shots", help="Refuse above this many shots in total.")] = None,
    dry_run: Annotated[
        bool | None,
        typer.Option("--dry-run/--no-dry-run", help="Print the plan and its cost; submit nothing (default: config)."),
    ] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="Jobs in flight at once.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Reuse finished jobs, re-attach to submitted ones.")] = False,
    chunk_rows: Annotated[
        int | None, typer.Option("--chunk-rows", help="Validation samples per job (one PUB; default: config).")
    ] = None,
    max_samples: Annotated[
        int | None, typer.Option("--max-samples", help="Only the first N validation samples (default: config).")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the plan and results as JSON.")] = None,
    verbose: Verbose = False,
) -> None:
    """Evaluate the study's candidates on a backend (validation accuracy under real noise), guarded and resumable.

    Flags default to the study's [hw_eval] settings.  After a real (not dry)
    run the study's report (report/ next to it) is rewritten with the measured
    hw_acc@<backend> column.
    """
    _setup_logging(verbose)
    from qnas_hw.jobs import BudgetExceeded, JobExecutionError, LedgerError

    with _cli_errors(verbose):
        jobs, stop = _JobProgressView("hardware evaluation"), None
        try:
            with _stop_on_sigint() as stop:
                report_ = _run_hw_eval(
                    study,
                    backend=backend,
                    which=which,
                    shots=shots,
                    max_cost=max_cost,
                    max_qpu_seconds=max_qpu_seconds,
                    max_shots=max_shots,
                    dry_run=dry_run,
                    concurrency=concurrency,
                    resume=resume,
                    chunk_rows=chunk_rows,
                    max_samples=max_samples,
                    json_out=json_out,
                    on_progress=jobs,
                    stop=stop,
                )
        except KeyboardInterrupt:
            _interrupted(stop, study, f"qnas-hw hw-eval {study} --resume")
        except (BudgetExceeded, JobExecutionError, LedgerError) as exc:
            if verbose:
                logger.exception("hw-eval failed")
            _fail(str(exc))
        finally:
            jobs.close()
        if not report_.dry_run:
            from qnas_hw.reports.report import write_report
            from qnas_hw.search.study import Study

            with Study.open(study) as s:
                files = write_report(s, s.path.parent / "report")
            out_console.print(f"report: {files.summary_md}", highlight=False)


def _run_hw_eval(
    study: Path,
    *,
    backend: str | None = None,
    which: str | None = None,
    shots: int | None = None,
    max_cost: float | None = None,
    max_qpu_seconds: float | None = None,
    max_shots: int | None = None,
    dry_run: bool | None = None,
    concurrency: int | None = None,
    resume: bool = False,
    chunk_rows: int | None = None,
    max_samples: int | None = None,
    json_out: Path | None = None,
    on_progress: Callable[[Any], None] | None = None,
    stop: Any = None,
) -> HardwareEvalReport:
    """The hardware evaluation behind ``hw-eval`` and ``search`` (``hw_eval.enabled``); prints plan and results.

    Every argument left ``None`` takes the study's ``[hw_eval]`` setting, so
    both commands honour the same config (budget, dry run, shots, samples).
    ``on_progress`` and ``stop``: the jobs' progress display and the Ctrl-C
    handling (:class:`_JobProgressView`, :func:`_stop_on_sigint`).
    Returns the :class:`~qnas_hw.search.hw_eval.HardwareEvalReport`;
    budget refusals and job failures propagate to the caller.
    """
    from qnas_hw.hardware.backends import get_backend
    from qnas_hw.jobs import Budget, RetryPolicy
    from qnas_hw.search.hw_eval import HardwareEvalSettings, evaluate_study

    cfg = _resolve_config(None, study=study)
    hw = cfg.hw_eval
    be = get_backend(backend or cfg.hardware.backend)
    pick = lambda v, d: d if v is None else v  # noqa: E731
    settings = HardwareEvalSettings(
        shots=pick(shots, hw.shots),
        chunk_rows=pick(chunk_rows, hw.chunk_rows),
        seed=cfg.seed,
        max_samples=pick(max_samples, hw.max_samples),
        optimization_level=cfg.hardware.optimization_level,
        concurrency=pick(concurrency, hw.concurrency),
        policy=RetryPolicy.for_backend(be, max_attempts=hw.max_attempts, timeout_s=hw.timeout_s),
        budget=Budget(
            pick(_non_negative("--max-cost", max_cost), hw.max_cost_usd),
            pick(_non_negative("--max-qpu-seconds", max_qpu_seconds), hw.max_qpu_seconds),
            pick(_non_negative("--max-shots", max_shots), hw.max_shots),
        ),
        dry_run=pick(dry_run, hw.dry_run),
        resume=resume,
        mitigation=hw.readout_mitigation,
    )
    report_ = evaluate_study(
        study, be, which=pick(which, hw.which), settings=settings, on_progress=on_progress, stop=stop
    )
    for line in report_.plan.lines_text():
        out_console.print(line, highlight=False, markup=False, soft_wrap=True)
    if report_.dry_run:
        if report_.refusal:
            err_console.print(f"[yellow]would refuse:[/yellow] {report_.refusal}", highlight=False)
        out_console.print("dry run: nothing was submitted", highlight=False)
    else:
        table = Table(title=f"hardware validation accuracy on {be.name}")
        table.add_column("candidate", no_wrap=True)
        for col in ("hw acc", "sim acc", "shots", "jobs (reused)", "QPU s", "wall s", "pred s", "ESP", "mitigation"):
            table.add_column(col, justify="right")
        num = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        for r in report_.results:
            table.add_row(
                r.arch,
                num(r.accuracy, ".3f"),
                num(r.simulator_accuracy, ".3f"),
                str(r.shots),
                f"{r.jobs} ({r.reused_jobs})",
                num(r.quantum_seconds, ".1f"),
                num(r.wall_seconds, ".1f"),
                num(r.predicted_seconds, ".1f"),
                num(r.esp, ".3f"),
                r.mitigation,
            )
        out_console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(report_.to_dict(), indent=1, default=str) + "\n")
    return report_


# ===================================================================== export / inspect / predict
@app.command("export")
def export_cmd(
    study: Annotated[Path, typer.Argument(help="The study.sqlite written by `qnas-hw search`.")],
    pick: Annotated[
        str, typer.Option("--pick", help="knee, most-accurate, or a canonical architecture of the study.")
    ] = "knee",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Bundle directory (default: export/ next to the study).")
    ] = None,
    weights: Annotated[
        str,
        typer.Option(
            "--weights",
            help="auto: the pick's `qnas-hw train --study` retrain when there is one, else the search's fine-tuned "
            "weights; search; trained.",
        ),
    ] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier bundle at --out.")] = False,
    verbose: Verbose = False,
) -> None:
    """Write a pick as a self-contained bundle: placed circuit (QPY, OpenQASM 3), observables, classical weights,
    manifest with checksums.  Runs without the study afterwards (`qnas-hw predict`, `qnas_hw.load_export`)."""
    _setup_logging(verbose)
    with _cli_errors(verbose):
        from qnas_hw.deploy.export import export_pick

        target = out if out is not None else study.parent / "export"
        result = export_pick(study, pick, target, weights=weights, force=force)
        for line in _bundle_lines(result.manifest):
            out_console.print(line, highlight=False, markup=False, soft_wrap=True)
        out_console.print(f"bundle: {result.path}", highlight=False, markup=False)


@app.command("inspect")
def inspect_cmd(
    bundle: Annotated[Path, typer.Argument(help="A bundle directory written by `qnas-hw export`.")],
    verbose: Verbose = False,
) -> None:
    """Verify a bundle's checksums and print what it holds (architecture, device, placement, figures)."""
    _setup_logging(verbose)
    with _cli_errors(verbose):
        from qnas_hw.deploy.bundle import open_bundle

        opened = open_bundle(bundle)
        for line in _bundle_lines(opened.manifest):
            out_console.print(line, highlight=False, markup=False, soft_wrap=True)
        files = ", ".join(sorted(opened.manifest["files"]))
        out_console.print(f"checksums verified: {files}", highlight=False, markup=False, soft_wrap=True)


def _bundle_lines(m: dict[str, Any]) -> list[str]:
    """A bundle's manifest in a few lines: what, where, how it runs, how well it did."""
    c, p, b, e = m["circuit"], m["placement"], m["backend"], m["execution"]
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    val, test = m["figures"]["validation"], m["figures"].get("test")
    lines = [
        f"{m['architecture']} ({m['pick']}), weights from {m['weights']['source']}",
        f"backend {b['name']} (calibration {b.get('calibration_date') or 'n/a'}); physical qubits "
        f"{p.get('physical_qubits')}, ESP {p.get('esp') if p.get('esp') is None else format(p['esp'], '.3f')}",
        f"{plural(c['qubits'], 'qubit')}, {plural(c['two_qubit_gates'], 'two-qubit gate')}, depth {c['depth']}"
        + (f"; {c['note']}" if c.get("note") else ""),
        f"runs with {e['shots']} shots per sample, readout mitigation {e['readout_mitigation']}; "
        f"the search scored it in {e['accuracy_mode']} mode",
        f"validation accuracy {pct(val.get('accuracy'))} ({val.get('accuracy_mode')})"
        + (
            f"; test accuracy {pct(test.get('accuracy'))} ({test.get('accuracy_mode')})" if test else "; no test figure"
        ),
    ]
    if c.get("cut"):
        cut = c["cut"]
        lines.append(
            f"cut plan: {plural(cut['subcircuits'], 'subcircuit')}, {plural(cut['subexperiments'], 'subexperiment')} "
            f"per sample, sampling overhead {cut['sampling_overhead']:g}"
        )
    return lines


@app.command("predict")
def predict_cmd(
    bundle: Annotated[Path, typer.Argument(help="A bundle directory written by `qnas-hw export`.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Inputs: .npz (X, optional y), .npy, or .csv (optional label column).")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="A named data set instead of --data (its --split).")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="With --dataset: train, val or test.")] = "test",
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N inputs.")] = None,
    data_dir: DataDirOption = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="Where to run (default: the bundle's backend).")
    ] = None,
    shots: Annotated[int | None, typer.Option("--shots", help="Shots per input (default: the bundle's).")] = None,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="Refuse if predicted billed USD exceeds this (default 0).")
    ] = None,
    max_qpu_seconds: Annotated[
        float | None, typer.Option("--max-qpu-seconds", help="Refuse above this QPU time.")
    ] = None,
    max_shots: Annotated[int | None, typer.Option("--max-shots", help="Refuse above this many shots in total.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and its cost; submit nothing.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Reuse finished jobs, re-attach to submitted ones.")] = False,
    chunk_rows: Annotated[int | None, typer.Option("--chunk-rows", help="Inputs per job (default: all).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Jobs in flight at once.")] = 4,
    no_mitigation: Annotated[
        bool, typer.Option("--no-mitigation", help="Leave out mthree readout mitigation.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Job seed (simulators).")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Results and job ledger (default: predictions/<backend> in the bundle)."),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Classify new inputs with a bundle on a backend, through the job ledger and spending guard.

    Writes predictions.csv and predict.json (accuracy with a 95% Wilson interval when labels are given).
    """
    _setup_logging(verbose)
    from qnas_hw.jobs import BudgetExceeded, JobExecutionError, LedgerError

    with _cli_errors(verbose):
        from qnas_hw.deploy.bundle import open_bundle
        from qnas_hw.deploy.predict import (
            LEDGER,
            PredictSettings,
            backend_for,
            dataset_inputs,
            load_inputs,
            predict,
            write_outputs,
        )
        from qnas_hw.jobs import Budget, JobLedger

        if (data is None) == (dataset is None):
            _fail("give the inputs with exactly one of --data FILE or --dataset NAME")
        opened = open_bundle(bundle)
        be = backend_for(opened, backend)
        if data is not None:
            X, y = load_inputs(data)
            if limit is not None:
                X, y = X[:limit], None if y is None else y[:limit]
        else:
            assert dataset is not None
            X, y = dataset_inputs(opened, dataset, split, data_dir, limit)
        settings = PredictSettings(
            shots=shots,
            chunk_rows=chunk_rows,
            seed=seed,
            concurrency=concurrency,
            mitigation=not no_mitigation,
            dry_run=dry_run,
            resume=resume,
            budget=Budget(
                0.0 if max_cost is None else _non_negative("--max-cost", max_cost),
                _non_negative("--max-qpu-seconds", max_qpu_seconds),
                max_shots,
            ),
        )
        folder = out if out is not None else opened.path / "predictions" / be.name.replace(":", "_").replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        ledger_path = folder / LEDGER
        ledger = JobLedger(ledger_path)
        jobs, stop = _JobProgressView("predict"), None
        resume_hint = f"qnas-hw predict {bundle} ... --resume (same inputs and flags)"
        try:
            with _stop_on_sigint() as stop:
                report_ = predict(opened, X, y, be, ledger, settings, on_progress=jobs, stop=stop)
        except KeyboardInterrupt:
            _interrupted(stop, ledger_path, resume_hint)
        except (BudgetExceeded, JobExecutionError, LedgerError) as exc:
            if verbose:
                logger.exception("predict failed")
            _fail(str(exc))
        finally:
            jobs.close()
            ledger.close()
        for line in report_.plan.lines_text():
            out_console.print(line, highlight=False, markup=False, soft_wrap=True)
        if report_.dry_run:
            if report_.refusal:
                err_console.print(f"[yellow]would refuse:[/yellow] {report_.refusal}", highlight=False)
            out_console.print("dry run: nothing was submitted", highlight=False)
            return
        csv_path, json_path = write_outputs(report_, folder)
        acc, ci = report_.accuracy, report_.accuracy_ci
        what = f"{plural(report_.n, 'input')} classified on {be.name}"
        if acc is not None and ci is not None:
            what += f": accuracy {100 * acc:.2f}% (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%)"
        out_console.print(what, highlight=False)
        out_console.print(f"predictions: {csv_path}; summary: {json_path}", highlight=False, markup=False)


def main(argv: list[str] | None = None) -> Callable[..., Any] | None:
    """Console entry point (``python -m qnas_hw.cli``)."""
    return app(args=argv)


if __name__ == "__main__":
    main()
