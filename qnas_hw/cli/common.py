"""What every ``qnas-hw`` command shares: the typer ``app``, the consoles, logging, error handling, the options
that several commands declare alike, and the running of a command's device jobs (progress, Ctrl-C, refusals).

The CLI is the only part of the package that prints.  Library errors caused
by bad input (a wrong config value, an unknown backend, an existing study, a
corrupt calibration file) exit with status 1 and their message, without a
traceback; ``--verbose`` adds debug logging on stderr and the traceback.
The command modules print through ``common.out_console`` and
``common.err_console``, looked up at each call, so a console replaced here
(a test's 80-column one) is the one every command prints to.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from qnas_hw.config import ConfigError, RunConfig, default_config, load_config, stored_config, with_overrides
from qnas_hw.progress import Progress, is_terminal


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
    found = [getattr(sys.modules[module], name) for module, name in _USER_ERROR_CLASSES if module in sys.modules]
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
    elif config is not None:  # with overrides, the device's budget waits until they are checked
        cfg = load_config(config, defer_budget=bool(overrides))
    else:
        cfg = default_config()
    return with_overrides(cfg, **(overrides or {})) if overrides else cfg


def _non_negative(flag: str, value: float | None) -> float | None:
    if value is not None and value < 0:
        _fail(f"{flag} {value:g} must be >= 0 (0 refuses any billed run; leave it out for the config's limit)")
    return value


# ------------------------------------------------------------ options that several commands declare alike
#: The study a command reads (``report``, ``hw-eval``, ``export``).
StudyArgument = Annotated[Path, typer.Argument(help="The study.sqlite written by `qnas-hw search`.")]
#: The bundle a command reads (``inspect``, ``predict``).
BundleArgument = Annotated[Path, typer.Argument(help="A bundle directory written by `qnas-hw export`.")]
#: The spending guard and job executor of ``hw-eval`` and ``predict`` (``search`` words its limits per generation;
#: ``--max-cost`` and ``--chunk-rows`` default differently in the two, and each says how).
MaxQpuSecondsOption = Annotated[float | None, typer.Option("--max-qpu-seconds", help="Refuse above this QPU time.")]
MaxShotsOption = Annotated[int | None, typer.Option("--max-shots", help="Refuse above this many shots in total.")]
ResumeJobsOption = Annotated[bool, typer.Option("--resume", help="Reuse finished jobs, re-attach to submitted ones.")]
ConcurrencyOption = Annotated[int | None, typer.Option("--concurrency", help="Jobs in flight at once.")]


# ------------------------------------------------------------ a command's device jobs
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


def _run_device_jobs(
    command: str,
    what: str,
    run: Callable[..., Any],
    *,
    verbose: bool,
    saved: Path,
    resume_command: str,
) -> Any:
    """``run(on_progress=..., stop=...)``: a command's batch of device jobs (``hw-eval``, ``predict``) as the CLI
    runs it.

    The jobs' progress shows on stderr (:class:`_JobProgressView`, labelled
    ``what``); Ctrl-C is a request to stop (:func:`_stop_on_sigint`) and ends
    with what was kept in ``saved`` and how to continue (``resume_command``:
    :func:`_interrupted`); a budget refusal or a failed job is the command's
    error (status 1).  Returns what ``run`` returns.
    """
    from qnas_hw.jobs import BudgetExceeded, JobExecutionError, LedgerError

    jobs, stop = _JobProgressView(what), None
    try:
        with _stop_on_sigint() as stop:
            return run(on_progress=jobs, stop=stop)
    except KeyboardInterrupt:
        _interrupted(stop, saved, resume_command)
    except (BudgetExceeded, JobExecutionError, LedgerError) as exc:
        if verbose:
            logger.exception("%s failed", command)
        _fail(str(exc))
    finally:
        jobs.close()


def _print_plan(report: Any) -> None:
    """A guarded run's plan (jobs, shots, predicted time and cost); for a dry run, what it would refuse."""
    for line in report.plan.lines_text():
        out_console.print(line, highlight=False, markup=False, soft_wrap=True)
    if report.dry_run:
        if report.refusal:
            err_console.print(f"[yellow]would refuse:[/yellow] {report.refusal}", highlight=False)
        out_console.print("dry run: nothing was submitted", highlight=False)
