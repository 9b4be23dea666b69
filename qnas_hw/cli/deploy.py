"""``qnas-hw export``, ``inspect`` and ``predict``: a pick as a self-contained bundle, and that bundle at work."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from qnas_hw.cli import common
from qnas_hw.text import plural


@common.app.command("export")
def export_cmd(
    study: common.StudyArgument,
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
    verbose: common.Verbose = False,
) -> None:
    """Write a pick as a self-contained bundle: placed circuit (QPY, OpenQASM 3), observables, classical weights,
    manifest with checksums.  Runs without the study afterwards (`qnas-hw predict`, `qnas_hw.load_export`)."""
    common._setup_logging(verbose)
    with common._cli_errors(verbose):
        from qnas_hw.deploy.export import export_pick

        target = out if out is not None else study.parent / "export"
        result = export_pick(study, pick, target, weights=weights, force=force)
        for line in _bundle_lines(result.manifest):
            common.out_console.print(line, highlight=False, markup=False, soft_wrap=True)
        common.out_console.print(f"bundle: {result.path}", highlight=False, markup=False)


@common.app.command("inspect")
def inspect_cmd(
    bundle: common.BundleArgument,
    verbose: common.Verbose = False,
) -> None:
    """Verify a bundle's checksums and print what it holds (architecture, device, placement, figures)."""
    common._setup_logging(verbose)
    with common._cli_errors(verbose):
        from qnas_hw.deploy.bundle import open_bundle

        opened = open_bundle(bundle)
        for line in _bundle_lines(opened.manifest):
            common.out_console.print(line, highlight=False, markup=False, soft_wrap=True)
        files = ", ".join(sorted(opened.manifest["files"]))
        common.out_console.print(f"checksums verified: {files}", highlight=False, markup=False, soft_wrap=True)


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


@common.app.command("predict")
def predict_cmd(
    bundle: common.BundleArgument,
    data: Annotated[
        Path | None, typer.Option("--data", help="Inputs: .npz (X, optional y), .npy, or .csv (optional label column).")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="A named data set instead of --data (its --split).")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="With --dataset: train, val or test.")] = "test",
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N inputs.")] = None,
    data_dir: common.DataDirOption = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="Where to run (default: the bundle's backend).")
    ] = None,
    shots: Annotated[int | None, typer.Option("--shots", help="Shots per input (default: the bundle's).")] = None,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="Refuse if predicted billed USD exceeds this (default 0).")
    ] = None,
    max_qpu_seconds: common.MaxQpuSecondsOption = None,
    max_shots: common.MaxShotsOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and its cost; submit nothing.")] = False,
    resume: common.ResumeJobsOption = False,
    chunk_rows: Annotated[int | None, typer.Option("--chunk-rows", help="Inputs per job (default: all).")] = None,
    concurrency: common.ConcurrencyOption = 4,
    no_mitigation: Annotated[
        bool, typer.Option("--no-mitigation", help="Leave out mthree readout mitigation.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Job seed (simulators).")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Results and job ledger (default: predictions/<backend> in the bundle)."),
    ] = None,
    verbose: common.Verbose = False,
) -> None:
    """Classify new inputs with a bundle on a backend, through the job ledger and spending guard.

    Writes predictions.csv and predict.json (accuracy with a 95% Wilson interval when labels are given).
    """
    common._setup_logging(verbose)
    with common._cli_errors(verbose):
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
            common._fail("give the inputs with exactly one of --data FILE or --dataset NAME")
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
                0.0 if max_cost is None else common._non_negative("--max-cost", max_cost),
                common._non_negative("--max-qpu-seconds", max_qpu_seconds),
                max_shots,
            ),
        )
        folder = out if out is not None else opened.path / "predictions" / be.name.replace(":", "_").replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        ledger_path = folder / LEDGER
        ledger = JobLedger(ledger_path)
        try:
            report_ = common._run_device_jobs(
                "predict",
                "predict",
                partial(predict, opened, X, y, be, ledger, settings),
                verbose=verbose,
                saved=ledger_path,
                resume_command=f"qnas-hw predict {bundle} ... --resume (same inputs and flags)",
            )
        finally:
            ledger.close()
        common._print_plan(report_)
        if report_.dry_run:
            return
        csv_path, json_path = write_outputs(report_, folder)
        acc, ci = report_.accuracy, report_.accuracy_ci
        what = f"{plural(report_.n, 'input')} classified on {be.name}"
        if acc is not None and ci is not None:
            what += f": accuracy {100 * acc:.2f}% (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%)"
        common.out_console.print(what, highlight=False)
        common.out_console.print(f"predictions: {csv_path}; summary: {json_path}", highlight=False, markup=False)
