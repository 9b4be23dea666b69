"""``qnas-hw report``: write a study's Pareto report (CSV, JSON, plots, summary.md) and print its front."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from qnas_hw.cli import common
from qnas_hw.text import plural


@common.app.command()
def report(
    study: common.StudyArgument,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report directory (default: next to the study).")
    ] = None,
    verbose: common.Verbose = False,
) -> None:
    """Write the Pareto report (CSV, JSON, plots, summary.md) of a study and print its front."""
    common._setup_logging(verbose)
    with common._cli_errors(verbose):
        from qnas_hw.reports.data import study_report_data
        from qnas_hw.reports.report import front_table, outcome_lines, write_report_data
        from qnas_hw.search.study import Study

        with Study.open(study) as s:
            target = out if out is not None else s.path.parent / "report"
            if out is None and not os.access(s.path.parent, os.W_OK):
                common._fail(
                    f"the study's directory {s.path.parent} is read-only, so the report cannot go to {target}; "
                    "pass --out DIR with a writable directory (the study itself is only read)"
                )
            data = study_report_data(s)
            files = write_report_data(data, target)
        common.out_console.print(front_table(data), soft_wrap=False)
        for line in outcome_lines(data):
            common.out_console.print(line, highlight=False)
        common.out_console.print(f"wrote {plural(len(files.all()), 'file')} to {files.out_dir}", highlight=False)
