"""The written report of a study: terminal table, CSV and JSON exports, ``summary.md`` and the plots.

:mod:`qnas_hw.reports.data` decides what is shown (front, picks, hypervolume
history, hardware results); this module only renders it.  All objectives
are minimised, as the study stores them (validation *error*, runtime,
subcircuits); accuracies are shown as percentages next to them.

The front in every output (console table, ``front.csv``, ``report.json``,
``summary.md``) is the front within resolution, the one the search's console
line and ``hw-eval --which front`` use; the exact front is listed beside it.
Generations are numbered from 1 (the initial population) everywhere, as the
console counts them: stored 0-based indices go through
:func:`~qnas_hw.search.study.generation_number` before they are printed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.table import Table

from qnas_hw.jobs.usage import UNIT_TEXT
from qnas_hw.model.circuits import PRODUCT_STATE
from qnas_hw.model.space import GENES
from qnas_hw.reports.data import (
    ACCURACY_OBJECTIVE,
    ReportData,
    circuit_class,
    infeasible_reasons,
    layout_text,
    measured_seconds,
    objective_header,
    placement,
    study_report_data,
    subcircuit_layouts,
    two_qubit_gates,
    two_qubit_text,
    val_error_se,
)
from qnas_hw.reports.plots import write_plots
from qnas_hw.search.fronts import front_size_text
from qnas_hw.search.pareto import HV_REFERENCE
from qnas_hw.search.study import Study, generation_number
from qnas_hw.text import plural

logger = logging.getLogger(__name__)


def _hw_columns(result: dict[str, Any] | None, backend: str) -> dict[str, Any]:
    """The flat per-backend columns of one candidate (empty cells when it was not measured there)."""
    if result is None:
        return {f"hw_acc@{backend}": "", f"hw_shots@{backend}": "", f"hw_seconds@{backend}": ""}
    seconds, _ = measured_seconds(result)
    return {
        f"hw_acc@{backend}": float(result["accuracy"]),
        f"hw_shots@{backend}": int(result["shots"]),
        f"hw_seconds@{backend}": "" if seconds is None else seconds,
    }


def _hw_json(result: dict[str, Any]) -> dict[str, Any]:
    seconds, source = measured_seconds(result)
    keep = ("accuracy", "simulator_accuracy", "n_samples", "shots", "jobs", "quantum_seconds", "wall_seconds")
    return {
        **{k: result.get(k) for k in keep},
        "measured_seconds": seconds,
        "seconds_source": source,
        "batch": result.get("batch"),
        "created_at": result.get("created_at"),
    }


#: What the tables' "(product)" mark means, said wherever the mark is shown.
PRODUCT_NOTE = f"0 (product) = {PRODUCT_STATE}: no qubit interacts with another."


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"


#: The pick marks of the front table (console and summary.md), explained under both.
KNEE_MARK, BEST_MARK = "knee", "best-acc"


def front_order(data: ReportData) -> list[int]:
    """The front's rows, best first on the first objective (validation error in every default study)."""
    return sorted(data.front, key=lambda i: data.candidates[i].values(data.objective_names))


def _shows_dollars(data: ReportData) -> bool:
    """A separate USD column only when dollars exist and are not already the ``cost_usd`` objective."""
    return "cost_usd" not in data.objective_names and any(data.dollars(i) is not None for i in data.front)


def front_columns(data: ReportData) -> list[str]:
    """Headers of the front table, shared by the console and summary.md so both show the same columns."""
    names = data.objective_names
    cols = ["pick", "architecture"]
    if ACCURACY_OBJECTIVE in names:
        cols.append("val acc")
    cols += [objective_header(n, data.timing) for n in names]
    if _shows_dollars(data):
        cols.append("USD per eval")
    cols += [f"hw_acc@{b}" for b in data.hw_backends]
    return [*cols, "2q gates", "ESP", "gen"]


def front_cells(data: ReportData, i: int) -> list[str]:
    """One front row as text, in :func:`front_columns` order."""
    c = data.candidates[i]
    names = data.objective_names
    marks = [m for m, j in ((KNEE_MARK, data.knee), (BEST_MARK, data.most_accurate)) if j == i]
    row = [", ".join(marks), c.arch.canonical()]
    if ACCURACY_OBJECTIVE in names:
        row.append(f"{100 * (1 - c.objectives[ACCURACY_OBJECTIVE]):.2f}%")
    row += [_fmt(v) for v in c.values(names)]
    if _shows_dollars(data):
        usd = data.dollars(i)
        row.append("-" if usd is None else f"${usd:.2f}")
    for b in data.hw_backends:
        hw = data.hw_result(i, b)
        row.append("-" if hw is None else f"{100 * float(hw['accuracy']):.2f}%")
    _, esp = placement(c)
    return [*row, two_qubit_text(c), "-" if esp is None else f"{esp:.3f}", str(generation_number(c.generation))]


#: Columns of the full front table that the console leaves to summary.md, so the table fits 80 columns.
_CONSOLE_SKIPS = frozenset({"pick", "val acc", "gen"})


def front_table(data: ReportData) -> Table:
    """The Pareto front as a rich table, best accuracy first; the CLI prints it.

    Fits 80 columns for the default objectives: the picks go under the
    architecture instead of into a column of their own, and validation
    accuracy in percent and the generation are left to summary.md.  The
    architecture never folds or truncates (it is what ``qnas-hw train --arch``
    takes); the other columns wrap their headers and fold their values first.
    """
    backend = data.context.backend if data.context is not None and data.context.backend else None
    exact = "" if len(data.exact_front) == len(data.front) else f"; exact front {len(data.exact_front)}"
    title = f"Pareto front ({len(data.front)} of {plural(len(data.candidates), 'candidate')}{exact})"
    table = Table(
        title=title + (f" on {backend}" if backend else ""),
        caption=f"{data.accuracy_header()}. Ties within each objective's resolution collapsed. Picks: {KNEE_MARK} = "
        f"best compromise, {BEST_MARK} = most accurate. 2q gates: after transpilation; {PRODUCT_NOTE}",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    cols = front_columns(data)
    keep = [j for j, c in enumerate(cols) if c not in _CONSOLE_SKIPS]
    longest = max((len(data.candidates[i].arch.canonical()) for i in data.front), default=12)
    for j in keep:
        if cols[j] == "architecture":
            table.add_column("architecture (pick)", no_wrap=True, min_width=longest)
        else:
            # the unit on its own line: headers wrap between words, never inside one
            table.add_column(cols[j].replace(" (", "\n("), justify="right", overflow="fold")
    for i in front_order(data):
        cells = front_cells(data, i)
        marks = cells[cols.index("pick")]
        cells[cols.index("architecture")] += f"\n({marks})" if marks else ""
        table.add_row(*(cells[j] for j in keep))
    return table


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list | tuple):
        out[prefix] = json.dumps(value, default=str)
    else:
        out[prefix] = value


def candidate_row(data: ReportData, i: int) -> dict[str, Any]:
    """One flat CSV row: identity, genes, objectives, flags, then dotted details/timings."""
    c = data.candidates[i]
    row: dict[str, Any] = {"architecture": c.arch.canonical(), "key": c.arch.key()}
    genes = c.arch.to_dict()
    row.update({g: genes[g] for g in (*GENES, "readout")})
    row.update({n: c.objectives.get(n, math.nan) for n in data.objective_names})
    row.update(
        generation=generation_number(c.generation),
        feasible=c.feasible,
        on_front=i in data.front,
        knee=i == data.knee,
        most_accurate=i == data.most_accurate,
    )
    for b in data.hw_backends:
        row.update(_hw_columns(data.hw_result(i, b), b))
    layout, esp = placement(c)
    row.update(layout=json.dumps(layout), subcircuit_layouts=json.dumps(subcircuit_layouts(c)), esp=esp)
    row.update(two_qubit_gates=two_qubit_gates(c), circuit_class=circuit_class(c))
    extra: dict[str, Any] = {}
    _flat("details", c.details, extra)
    _flat("timings", c.timings, extra)
    row.update(extra)
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _json_candidate(data: ReportData, i: int) -> dict[str, Any]:
    c = data.candidates[i]
    return {
        "architecture": c.arch.canonical(),
        "key": c.arch.key(),
        "genes": c.arch.to_dict(),
        "two_qubit_gates": two_qubit_gates(c),
        "circuit_class": circuit_class(c),
        "objectives": {n: _json_number(c.objectives.get(n, math.nan)) for n in data.objective_names},
        "val_error_se": val_error_se(c),
        "rung": (c.details.get("val_error") or {}).get("rung"),
        "details": c.details,
        "timings": c.timings,
        "generation": generation_number(c.generation),
        "feasible": c.feasible,
        "on_front": i in data.front,
        "hardware": {b: _hw_json(r) for b, r in sorted(data.hardware.get(c.arch.canonical(), {}).items())},
    }


def _json_number(v: float) -> float | None:
    """JSON has no NaN/inf; a failed value is written as null rather than invalid JSON."""
    return float(v) if math.isfinite(v) else None


def report_json(data: ReportData) -> dict[str, Any]:
    def pick(i: int | None) -> dict[str, Any] | None:
        return None if i is None else _json_candidate(data, i)

    return {
        "objective_names": data.objective_names,
        "accuracy": data.accuracy_header(),
        "proxy": data.proxy,
        "proxy_description": data.proxy_line(),
        "supercircuit": {k: data.supercircuit.get(k) for k in ("trained", "epochs", "final_loss", "chance_loss")},
        "config": data.config,
        "n_candidates": len(data.candidates),
        "outcomes": asdict(data.outcomes),
        "infeasible_reasons": infeasible_reasons(data.candidates),
        "context": asdict(data.context) if data.context is not None else None,
        "n_generations": len(data.generations),
        "generation_numbering": "1-based: generation 1 is the initial population, as the console counts",
        "generations": [
            {"generation": g.number, "front": g.front, "exact_front": g.exact_front, "hypervolume": g.hypervolume}
            for g in data.history
        ],
        "hypervolume_box": {**(data.box.to_dict() if data.box else {}), "source": data.box_source},
        "resolutions": {n: r.to_dict() for n, r in data.resolutions.items()},
        "exact_front": [data.candidates[i].arch.canonical() for i in data.exact_front],
        "constraint_violations": data.violations,
        "hypervolume": [{"generation": generation_number(g), "hypervolume": hv} for g, hv in data.hypervolumes],
        "hardware_backends": data.hw_backends,
        "job_costs": [c.to_dict() for c in data.job_costs],
        "knee": pick(data.knee),
        "most_accurate": pick(data.most_accurate),
        "front": [_json_candidate(data, i) for i in data.front],
        "candidates": [_json_candidate(data, i) for i in range(len(data.candidates))],
    }


# ---------------------------------------------------------------------- summary
def _describe(data: ReportData, i: int | None) -> str:
    if i is None:
        return "none (no feasible candidate)"
    c = data.candidates[i]
    objs = ", ".join(f"{n}={_fmt(c.objectives[n])}" for n in data.objective_names)
    acc = (
        f" (validation accuracy {100 * (1 - c.objectives[ACCURACY_OBJECTIVE]):.2f}%)"
        if ACCURACY_OBJECTIVE in c.objectives
        else ""
    )
    usd = data.dollars(i) if "cost_usd" not in data.objective_names else None
    price = "" if usd is None else f", ${usd:.2f} per evaluation at the provider's prices"
    size = f"{plural(c.arch.n_qubits, 'qubit')}, {plural(c.arch.n_layers, 'layer')}"
    n2 = two_qubit_gates(c)
    kind = PRODUCT_STATE if n2 == 0 else f"{plural(n2, 'two-qubit gate')} after transpilation"
    return f"`{c.arch.canonical()}` ({size}), {kind}: {objs}{acc}{price}"


def _hardware_section(data: ReportData) -> list[str]:
    """Markdown table of every stored hardware result (latest per architecture and backend); none: no section."""
    if not data.hardware:
        return []
    pos = {c.arch.canonical(): i for i, c in enumerate(data.candidates)}
    lines = [
        "",
        "## Hardware evaluation",
        "",
        "Validation accuracy measured on the backend (front-end and head local, quantum layer sampled) next to the "
        "simulated accuracy of the same model on the same samples; seconds are provider QPU time when reported, "
        "else the jobs' wall time.",
        "",
        "| architecture | on front | backend | samples | sim val acc | hw val acc | shots | measured s |",
        "|---|:-:|---|---:|---:|---:|---:|---:|",
    ]
    order = sorted(data.hardware, key=lambda a: (a not in pos or pos[a] not in data.front, pos.get(a, len(pos)), a))
    pct = lambda v: "-" if v is None else f"{100 * float(v):.2f}%"  # noqa: E731
    for arch in order:
        on_front = "yes" if arch in pos and pos[arch] in data.front else ""
        for backend, r in sorted(data.hardware[arch].items()):
            seconds, source = measured_seconds(r)
            secs = "-" if seconds is None else f"{seconds:.2f} ({source})"
            lines.append(
                f"| `{_md_cell(arch)}` | {on_front} | {backend} | {r.get('n_samples', '-')} "
                f"| {pct(r.get('simulator_accuracy'))} | {pct(r.get('accuracy'))} | {r.get('shots', '-')} | {secs} |"
            )
    return lines


def _job_cost_section(data: ReportData) -> list[str]:
    """Each backend's jobs, cost model against the provider's figure (the plot's numbers); none: no section."""
    if not data.job_costs:
        return []
    lines = [
        "",
        "## Job cost: predicted against reported",
        "",
        "Each device job's cost as the cost model predicted it at submission against what the provider reported "
        "when it ended: QPU usage seconds (IBM), billed seconds and the Braket Tracker's dollars (Braket), or the "
        "local wall clock for simulators and fake backends run locally. MAPE: mean absolute percentage error per "
        "job. Every job is listed in report.json (`job_costs`); `qnas-hw calibrate --backend B --from-study "
        "<this study>` refits the model on them.",
        "",
        "| backend | reported | jobs | predicted total | reported total | MAPE | worst job |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for c in data.job_costs:
        money = c.unit == "usd"
        fmt = (lambda v: f"${v:.2f}") if money else (lambda v: f"{v:.2f} s")
        errors = np.abs(c.predicted - c.reported) / c.reported
        worst = c.jobs[int(np.argmax(errors))]
        missing = f" (+{c.missing} without both)" if c.missing else ""
        lines.append(
            f"| {c.backend} | {'Braket Tracker spend' if money else UNIT_TEXT[c.unit]} | {len(c.jobs)}{missing} "
            f"| {fmt(float(c.predicted.sum()))} | {fmt(float(c.reported.sum()))} | {100 * c.mape:.1f}% "
            f"| `{_md_cell(worst.label or worst.key[:12])}` {100 * float(errors.max()):.0f}% off |"
        )
    return lines


def _front_section(data: ReportData) -> list[str]:
    """The front as a Markdown table: picks, every objective, dollars, hardware accuracy, placement."""
    if not data.front:
        return []
    cols = [*front_columns(data), "layout"]
    lines = [
        "## Pareto front",
        "",
        f"Best accuracy first. pick: `{KNEE_MARK}` = best compromise, `{BEST_MARK}` = most accurate (see Picks). "
        "ESP: estimated success probability of the circuit as placed (product of 1 - error over its gates and "
        "measurements, from the device's calibration data); layout: the physical qubits it runs on, for a "
        "candidate cut into subcircuits each subcircuit's (`A:[..] B:[..]`, placed one by one); gen: the "
        "generation that first evaluated it (1 = the initial population). 2q gates: two-qubit gates after "
        f"transpilation to the device (routing included); {PRODUCT_NOTE}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" if c in ("pick", "architecture", "layout") else "---:" for c in cols) + "|",
    ]
    for i in front_order(data):
        cells = front_cells(data, i)
        cells[1] = f"`{_md_cell(cells[1])}`"
        lines.append("| " + " | ".join([*cells, layout_text(data.candidates[i])]) + " |")
    return [*lines, ""]


def _md_cell(text: str) -> str:
    """Canonical architectures contain '|', which ends a Markdown table cell even inside backticks."""
    return text.replace("|", "\\|")


def _resolutions(data: ReportData) -> str:
    return ", ".join(f"{n} {r.describe()}" for n, r in data.resolutions.items()) or "exact"


def _box_text(data: ReportData) -> str:
    if data.box is None:
        return "none"
    return ", ".join(f"{a.name} {_fmt(a.ideal)}..{_fmt(a.nadir)}{' (log10)' if a.log else ''}" for a in data.box.axes)


def _constraints_lines(data: ReportData) -> list[str]:
    """The caps the candidates were held to (how many each rejected is in the "infeasible because" line)."""
    hw = data.config.get("hardware", {}) or {}
    caps = [f"{k} = {hw[k]:g}" for k in ("max_candidate_runtime_s", "max_candidate_usd") if hw.get(k) is not None]
    return [f"- per-candidate caps (constraints): {', '.join(caps)}"] if caps else []


def _context_lines(data: ReportData) -> list[str]:
    """Header bullets: data set, backend and qubit budget, accuracy mode, cost-model source, prices."""
    ctx = data.context
    if ctx is None:
        return [f"- {data.accuracy_header()}", f"- {data.proxy_line()}"]
    budget = "not recorded" if ctx.qubit_budget is None else f"{plural(ctx.qubit_budget, 'qubit')} per subcircuit"
    lines = [
        f"- data set: {ctx.dataset or 'not recorded'}",
        f"- backend: {ctx.backend or 'not recorded'}; qubit budget: {budget}",
        f"- {data.accuracy_header()}",
        f"- {data.proxy_line()}; each val_error carries its standard error (val_error_se in report.json)",
    ]
    if ctx.cost_model:
        lines.append(f"- runtime cost model: {ctx.cost_model}")
    if ctx.pricing:
        lines.append(f"- prices: {ctx.pricing}")
    return lines


def outcome_lines(data: ReportData) -> list[str]:
    """The candidate counts and why the infeasible ones are off the front (console and summary.md share them)."""
    lines = [f"study holds {data.outcomes.describe()}"]
    reasons = infeasible_reasons(data.candidates)
    if reasons:
        because = "; ".join(f"{r} ({n})" for r, n in sorted(reasons.items()))
        lines.append(f"infeasible because (one candidate can have several reasons): {because}")
    return lines


def summary_markdown(data: ReportData, files: Sequence[Path] = ()) -> str:
    seed = data.config.get("seed", "not recorded")
    acc_name = ACCURACY_OBJECTIVE if ACCURACY_OBJECTIVE in data.objective_names else "the first objective"
    objectives = "; ".join(f"{n} = {data.label(n)}" for n in data.objective_names)
    lines = [
        "# qnas-hw study report",
        "",
        *_context_lines(data),
        f"- objectives (all minimised): {objectives}",
        *(f"- {line}" for line in outcome_lines(data)),
        "- failed: an objective raised an error (a resume retries it); infeasible: evaluated, but a constraint or "
        "an unmeasurable value keeps it off the front",
        f"- generations: {len(data.generations)} (numbered from 1, the initial population, as on the console)",
        f"- Pareto front size: {front_size_text(len(data.front), len(data.exact_front))}, with ties within each "
        "objective's resolution collapsed, as in the front table and on the console",
        f"- resolution (closer values tie): {_resolutions(data)}",
        f"- seed: {seed}",
        *_constraints_lines(data),
        "",
        "## Picks",
        "",
        f"- **knee** (best compromise; farthest from the plane through the normalised extremes, runtime and dollars "
        f"on a log scale): {_describe(data, data.knee)}",
        f"- **most accurate** (lowest {acc_name} within its resolution; ties go to fewer qubits, then fewer "
        f"subcircuits, then lower cost): {_describe(data, data.most_accurate)}",
        "",
        *_front_section(data),
        "## Hypervolume",
        "",
        f"Box ({data.box_source}): {_box_text(data)}; reference point {HV_REFERENCE} per normalised objective. "
        "Each generation's value is the hypervolume of the exact front of everything evaluated up to it; front: "
        "that generation's front within resolution (the exact front's size in parentheses where it differs), as "
        "the console line printed it. Generation 1 is the initial population.",
        "",
    ]
    if data.history:
        lines += ["| generation | front | hypervolume |", "|---:|---:|---:|"]
        lines += [
            f"| {g.number} | {front_size_text(g.front, g.exact_front)} | {g.hypervolume:.4f} |" for g in data.history
        ]
    else:
        lines.append("no generations recorded")
    lines += _hardware_section(data)
    lines += _job_cost_section(data)
    lines += ["", "## Study configuration", "", "```json", json.dumps(data.config, indent=2, default=str), "```"]
    if files:
        lines += ["", "## Files", ""] + [f"- `{p.name}`" for p in files]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ entry
@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report` (plots: one PNG per objective pair, 3-D front, hypervolume)."""

    out_dir: Path
    candidates_csv: Path
    front_csv: Path
    report_json: Path
    summary_md: Path
    plots: list[Path]

    def all(self) -> list[Path]:
        return [self.candidates_csv, self.front_csv, self.report_json, self.summary_md, *self.plots]


def write_report_data(data: ReportData, out_dir: Path | str) -> ReportFiles:
    """Write CSV, JSON, PNG plots and ``summary.md`` for already-analysed records."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cand_csv, front_csv = out / "candidates.csv", out / "front.csv"
    _write_csv(cand_csv, [candidate_row(data, i) for i in range(len(data.candidates))])
    _write_csv(front_csv, [candidate_row(data, i) for i in data.front])
    json_path = out / "report.json"
    json_path.write_text(json.dumps(report_json(data), indent=2, default=str))
    plots = write_plots(data, out)
    summary = out / "summary.md"
    files = ReportFiles(out, cand_csv, front_csv, json_path, summary, plots)
    summary.write_text(summary_markdown(data, files.all()))
    logger.info("wrote report with %d files to %s", len(files.all()), out)
    return files


def write_report(study: Study, out_dir: Path | str) -> ReportFiles:
    """Write the full report of ``study`` into ``out_dir`` (created if missing; files overwritten)."""
    return write_report_data(study_report_data(study), out_dir)
