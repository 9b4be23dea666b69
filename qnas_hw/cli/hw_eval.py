"""``qnas-hw hw-eval``: evaluate a study's candidates on a backend, through the job ledger and spending guard.

:func:`_run_hw_eval` is also the hardware evaluation that ``qnas-hw search``
runs after the search when ``hw_eval.enabled`` is set.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from qnas_hw.cli import common

if TYPE_CHECKING:  # imported lazily at run time: `qnas-hw devices` should not pay for torch
    from qnas_hw.search.hw_eval import HardwareEvalReport


@common.app.command("hw-eval")
def hw_eval(
    study: common.StudyArgument,
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
    max_qpu_seconds: common.MaxQpuSecondsOption = None,
    max_shots: common.MaxShotsOption = None,
    dry_run: Annotated[
        bool | None,
        typer.Option("--dry-run/--no-dry-run", help="Print the plan and its cost; submit nothing (default: config)."),
    ] = None,
    concurrency: common.ConcurrencyOption = None,
    resume: common.ResumeJobsOption = False,
    chunk_rows: Annotated[
        int | None, typer.Option("--chunk-rows", help="Validation samples per job (one PUB; default: config).")
    ] = None,
    max_samples: Annotated[
        int | None, typer.Option("--max-samples", help="Only the first N validation samples (default: config).")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the plan and results as JSON.")] = None,
    verbose: common.Verbose = False,
) -> None:
    """Evaluate the study's candidates on a backend (validation accuracy under real noise), guarded and resumable.

    Flags default to the study's [hw_eval] settings.  After a real (not dry)
    run the study's report (report/ next to it) is rewritten with the measured
    hw_acc@<backend> column.
    """
    common._setup_logging(verbose)
    with common._cli_errors(verbose):
        evaluation = partial(
            _run_hw_eval,
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
        )
        report_ = common._run_device_jobs(
            "hw-eval",
            "hardware evaluation",
            evaluation,
            verbose=verbose,
            saved=study,
            resume_command=f"qnas-hw hw-eval {study} --resume",
        )
        if not report_.dry_run:
            from qnas_hw.reports.report import write_report
            from qnas_hw.search.study import Study

            with Study.open(study) as s:
                files = write_report(s, s.path.parent / "report")
            common.out_console.print(f"report: {files.summary_md}", highlight=False)


def _check_reachable(backend: Any) -> None:
    """Ask the backend for its device before the study is opened for writing: an unknown device, or an IBM or
    Braket account that is not set up, is refused in one line while the study (and its writer lock) is untouched.

    Reading the qubit count is the cheapest question that needs the provider's account (the fake and local
    backends answer it offline); :func:`~qnas_hw.search.hw_eval.evaluate_study` asks it again under the lock.
    """
    from qnas_hw.hardware.backends.base import BackendError

    if backend.num_qubits < 1:
        raise BackendError(f"backend {backend.name!r} reports no qubits; check the device name")


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

    cfg = common._resolve_config(None, study=study)
    hw = cfg.hw_eval
    be = get_backend(backend or cfg.hardware.backend)
    _check_reachable(be)
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
            pick(common._non_negative("--max-cost", max_cost), hw.max_cost_usd),
            pick(common._non_negative("--max-qpu-seconds", max_qpu_seconds), hw.max_qpu_seconds),
            pick(common._non_negative("--max-shots", max_shots), hw.max_shots),
        ),
        dry_run=pick(dry_run, hw.dry_run),
        resume=resume,
        mitigation=hw.readout_mitigation,
    )
    report_ = evaluate_study(
        study, be, which=pick(which, hw.which), settings=settings, on_progress=on_progress, stop=stop
    )
    common._print_plan(report_)
    if not report_.dry_run:
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
        common.out_console.print(table)
        _print_costs(report_)
    if json_out is not None:
        json_out.write_text(json.dumps(report_.to_dict(), indent=1, default=str) + "\n")
    return report_


def _print_costs(report_: HardwareEvalReport) -> None:
    """The run's jobs, predicted against reported (the report's figure), and the Braket Tracker's spend."""
    if not report_.costs:
        common.out_console.print(
            "cost model against the provider: no job of this run reported a figure to compare", highlight=False
        )
    for comparison in report_.costs:
        line = f"cost model against the provider: {comparison.line()}"
        common.out_console.print(line, highlight=False, markup=False, soft_wrap=True)
