"""``qnas-hw search``: run or resume the NSGA-II search, print each generation and the front, write the report.

``--dry-run`` prints the predicted spend instead; with ``hw_eval.enabled``
the finished front is then evaluated on the backend as ``qnas-hw hw-eval``
does (:func:`~qnas_hw.cli.hw_eval._run_hw_eval`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer

from qnas_hw.cli import common
from qnas_hw.config import RunConfig, stored_config, with_overrides
from qnas_hw.text import plural


@common.app.command()
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
    device: common.DeviceOption = None,
    data_dir: common.DataDirOption = None,
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
    verbose: common.Verbose = False,
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
    common._setup_logging(verbose)
    with common._cli_errors(verbose):
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
                "search.device.max_cost_usd": common._non_negative("--max-cost", max_cost),
                "search.device.max_qpu_seconds": common._non_negative("--max-qpu-seconds", max_qpu_seconds),
                "search.device.max_shots": common._non_negative("--max-shots", max_shots),
            }.items()
            if v is not None
        }
        if dry_run:
            cfg = (
                common._resolve_config(None, study=resume)
                if resume is not None
                else common._resolve_config(config, None, overrides)
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
                common._fail(
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
            cfg = common._resolve_config(config, overrides=overrides)
            run_dir = out if out is not None else Path("runs") / f"search-{_timestamp()}"
            common.err_console.print(
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
            common._fail(
                f"hardware evaluation after the search: {failure}\nThe search itself is complete and saved in "
                f"{study.path}; run `qnas-hw hw-eval {study.path} --resume` with other limits to measure it."
            )


def _timestamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _watched_search(study_path: Path, *args: Any, progress: bool, **kwargs: Any) -> Any:
    """``run_search`` as the CLI runs it: a ``device`` search's predicted job time printed before it starts, its
    jobs' progress shown while a generation runs, and Ctrl-C as a request to stop (:func:`_stop_on_sigint`).

    Imports the search layer only now, once the configuration is valid: a
    config error answers without paying for torch, qiskit and pymoo.
    """
    from qnas_hw.search.nsga import run_search

    jobs = common._JobProgressView("device", enabled=progress)
    stop = None
    try:
        with common._stop_on_sigint() as stop:
            return run_search(
                *args, progress=progress, on_jobs=jobs, on_estimate=_print_wall_estimate, stop=stop, **kwargs
            )
    except KeyboardInterrupt:
        common._interrupted(stop, study_path, f"qnas-hw search --resume {study_path}")
    finally:
        jobs.close()


def _print_wall_estimate(estimate: Any, done_generations: int) -> None:
    """Before a ``device`` search trains anything: how long its jobs will take, from the calibrated cost model."""
    common.err_console.print(estimate.wall_line(done_generations), highlight=False, markup=False, soft_wrap=True)


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
    common.err_console.print(line, highlight=False)


def _reused_text(reused: int) -> str:
    """What the evaluator's "reused" count means: proposals whose result was already stored, not evaluated again."""
    return f"{plural(reused, 're-proposed architecture')} answered from stored results (not re-run)"


def _budget_text(cfg: RunConfig, from_flag: bool = False) -> str:
    """``qubit budget 5 (follows fake_belem's 5 qubits)``: which budget the search cuts to, and why that one."""
    why = "--qubit-budget" if from_flag else cfg.qubit_budget_reason()
    return f"qubit budget {cfg.hardware.qubit_budget} ({why})"


def _print_search_estimate(cfg: RunConfig, from_flag: bool = False) -> None:
    """``search --dry-run``: the predicted spend of the search's accuracy jobs; nothing is trained or submitted."""
    from qnas_hw.search.building import make_hardware
    from qnas_hw.search.preflight import check_before_training, check_setup, estimate_search_cost

    common.out_console.print(
        f"accuracy: {cfg.search.accuracy}; backend {cfg.hardware.backend}; shots {cfg.search.shots} per sample; "
        f"{_budget_text(cfg, from_flag)}",
        highlight=False,
    )
    hw = make_hardware(cfg)
    check_setup(cfg, hw)
    if cfg.search.accuracy != "device" or hw is None:
        common.out_console.print(
            f"accuracy '{cfg.search.accuracy}' runs locally and submits no job: nothing to pay", highlight=False
        )
        return
    estimate = estimate_search_cost(cfg, hw)
    for line in [*estimate.lines(), estimate.wall_line()]:
        common.out_console.print(line, highlight=False, markup=False, soft_wrap=True)
    d = cfg.search.device
    common.out_console.print(
        f"limits: max cost ${d.max_cost_usd}, max QPU s {d.max_qpu_seconds}, max shots {d.max_shots}", highlight=False
    )
    try:
        check_before_training(cfg, hw)
    except Exception as exc:  # the refusal a real run would give, shown rather than raised
        common.err_console.print(f"[yellow]would refuse:[/yellow] {exc}", highlight=False)
    common.out_console.print("dry run: nothing was trained or submitted", highlight=False)


def _search_hw_eval(study: Any, verbose: bool) -> str | None:
    """``hw_eval.enabled``: evaluate the finished search on its backend; returns why it failed, or None.

    Runs with ``resume`` so a resumed search (or a second run after a crash)
    reuses every hardware result already in the ledger instead of refusing or
    paying again.  Errors are returned rather than raised so the caller can
    still write the search report before exiting non-zero.
    """
    from qnas_hw.cli.hw_eval import _run_hw_eval  # here, not at the top: hw-eval registers after search
    from qnas_hw.jobs import BudgetExceeded, JobExecutionError, LedgerError

    cfg = stored_config(study.config, source=f"configuration stored in {study.path}")
    if not cfg.hw_eval.enabled:
        return None
    common.err_console.print(
        f"hw_eval.enabled: evaluating the {cfg.hw_eval.which} on {cfg.hardware.backend}"
        + (" (dry run)" if cfg.hw_eval.dry_run else ""),
        highlight=False,
    )
    try:
        jobs = common._JobProgressView("hardware evaluation")
        try:
            _run_hw_eval(study.path, resume=True, on_progress=jobs)
        finally:
            jobs.close()
    except (BudgetExceeded, JobExecutionError, LedgerError, *common._user_errors()) as exc:
        if verbose:
            common.logger.exception("hardware evaluation after the search failed")
        return str(exc)
    return None


def _print_summary(study: Any) -> None:
    from qnas_hw.reports.data import study_report_data
    from qnas_hw.reports.report import front_table, outcome_lines, write_report_data

    data = study_report_data(study)
    common.out_console.print(front_table(data), soft_wrap=False)  # fit the terminal: wrap cells, never crop
    files = write_report_data(data, study.path.parent / "report")
    runs = study.runs()
    if runs:
        last = runs[-1]
        common.out_console.print(
            f"this run: {plural(last.get('evaluated', 0), 'candidate')} evaluated ({last.get('failed', 0)} of them "
            "failed), "
            f"{_reused_text(int(last.get('reused', 0)))}",
            highlight=False,
        )
    for line in outcome_lines(data):  # the same lines as summary.md's header
        common.out_console.print(line, highlight=False)
    common.out_console.print(f"generations: {len(study.generations())}", highlight=False)
    common.out_console.print(f"study: {study.path}", highlight=False)
    common.out_console.print(f"report: {files.summary_md}", highlight=False)
