"""PNG plots of a report: one scatter per objective pair, the 3-D front and the hypervolume history.

Every figure is meant to be read without the code at hand: axes say what an
objective measures and in which unit (QPU seconds from a cost model are not
wall seconds), titles name the backend, front points carry a short
architecture name, integer objectives get integer ticks, and the knee and
most-accurate picks use different markers so both stay visible when they are
the same candidate.  Figures are at least :data:`MIN_WIDTH_PX` pixels wide.

Infeasible candidates can carry absurd values (a cut plan costed at 10^48 QPU
seconds); drawn where they are, they squash the front against one edge.  The
2-D axes therefore span the usable candidates only, and an infeasible point
beyond them is pinned to the axis edge with an arrow-head marker, counted in a
note on the plot (:func:`front_figure`).  Generations are numbered from 1 (the
initial population), as on the console and in summary.md.

matplotlib is imported per figure with the file-only Agg backend, so reports
work on machines with no display and importing the package stays cheap.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from qnas_hw.reports.data import INTEGER_OBJECTIVES, ReportData, short_name
from qnas_hw.search.pareto import HV_REFERENCE, pareto_front
from qnas_hw.search.study import generation_number
from qnas_hw.text import plural

#: Resolution and sizes: 9.0 in x 120 dpi = 1080 px, wide enough to read the point labels.
DPI = 120
SIZE_2D = (9.0, 6.5)
SIZE_3D = (9.0, 7.5)
SIZE_HV = (9.0, 5.0)
MIN_WIDTH_PX = 1000
#: Legend entries of the two picks (tests and readers look for these words).
KNEE_LABEL = "knee (best compromise)"
BEST_LABEL = "most accurate"
#: Picks: a large open ring for the knee, a smaller filled diamond for the most accurate, so one inside the
#: other shows both when they coincide.
_KNEE_STYLE = {"s": 320, "marker": "o", "facecolors": "none", "edgecolors": "tab:red", "linewidths": 2.2, "zorder": 4}
_BEST_STYLE = {"s": 90, "marker": "D", "c": "tab:green", "edgecolors": "black", "linewidths": 0.6, "zorder": 5}
#: Legend entry of infeasible candidates pinned to the edge of an axis they lie beyond.
BEYOND_LABEL = "infeasible, beyond the axis (drawn at its edge)"
#: Margin around the usable candidates' range: a fraction of the span (linear) or of the decades (log).
_MARGIN = 0.06
#: Axis-label size of the 3-D plot: mplot3d shrinks labels with the projection, so they start larger.
LABEL_SIZE_3D = 10


def _pyplot() -> Any:
    """matplotlib with the file-only Agg backend, chosen per figure so no GUI is ever needed."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def log_axes(data: ReportData) -> list[bool]:
    """Per objective: plot on a log axis when its usable values are positive and span more than 100x.

    Feasible cut plans can multiply the runtime by up to max_gamma^2 (10^6), and on a linear axis those few
    points squash the whole front into one corner.
    """
    F = data.matrix()
    usable = np.array([c.usable for c in data.candidates], dtype=bool)
    out = []
    for j in range(F.shape[1]):
        col = F[usable, j]
        col = col[np.isfinite(col)]
        out.append(bool(col.size and col.min() > 0 and col.max() / col.min() > 100))
    return out


def _where(data: ReportData) -> str:
    """`` on <backend> (accuracy: <mode>)`` for titles; empty when the study did not record a backend."""
    backend = data.context.backend if data.context is not None else None
    mode = (data.config.get("search") or {}).get("accuracy")
    where = f" on {backend}" if backend else ""
    return where + (f" (accuracy: {mode})" if mode else "")


def _integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _masks(data: ReportData) -> tuple[np.ndarray, np.ndarray]:
    usable = np.array([c.usable for c in data.candidates], dtype=bool)
    on_front = np.zeros(len(data.candidates), dtype=bool)
    on_front[data.front] = True
    return usable, on_front


def _label_front(ax: Any, data: ReportData, xs: np.ndarray, ys: np.ndarray) -> None:
    """Write each front point's short architecture name next to it (``iqp q2 l1 rx-ry-rz ring``)."""
    for n, i in enumerate(data.front):
        ax.annotate(
            short_name(data.candidates[i].arch),
            (xs[i], ys[i]),
            xytext=(6, 6 if n % 2 == 0 else -12),  # alternate above/below so neighbours overlap less
            textcoords="offset points",
            fontsize=7,
            color="tab:blue",
        )


def front_figure(data: ReportData, a: int, b: int) -> Any:
    """The scatter of objective ``b`` against ``a``: candidates, the front (labelled), its 2-D steps, the picks.

    Returned open so callers (and tests) can inspect it; :func:`write_plots` saves and closes it.
    """
    fig, _ = _pyplot().subplots(figsize=SIZE_2D, dpi=DPI)
    return _built(_draw_front, fig, data, a, b)


def _draw_front(fig: Any, data: ReportData, a: int, b: int) -> None:
    ax = fig.axes[0]
    F = data.matrix()
    names = data.objective_names
    usable, on_front = _masks(data)
    rest = usable & ~on_front
    ax.scatter(F[rest, a], F[rest, b], s=16, c="0.65", label="other feasible candidates")
    log = log_axes(data)
    limits = [_usable_limits(F[usable, j], log[j]) for j in (a, b)]
    bad = ~usable & np.isfinite(F[:, [a, b]]).all(axis=1)
    inside = bad & _within(F[:, a], limits[0]) & _within(F[:, b], limits[1])
    if inside.any():
        ax.scatter(F[inside, a], F[inside, b], s=16, marker="x", c="tab:gray", label="infeasible or failed")
    _draw_beyond(ax, data, F, (a, b), bad & ~inside, limits)
    if data.front:
        ax.scatter(F[on_front, a], F[on_front, b], s=34, c="tab:blue", label="Pareto front (all objectives)", zorder=3)
        # The 2-D front of this projection as a step line, for the eye.
        sub = np.array(data.front)[pareto_front(F[data.front][:, [a, b]])]
        order = sub[np.argsort(F[sub, a])]
        ax.step(F[order, a], F[order, b], where="post", c="tab:blue", lw=1, alpha=0.7)
        _label_front(ax, data, F[:, a], F[:, b])
    for label, idx, style in ((KNEE_LABEL, data.knee, _KNEE_STYLE), (BEST_LABEL, data.most_accurate, _BEST_STYLE)):
        if idx is not None:
            ax.scatter(F[idx, a], F[idx, b], label=label, **style)
    ax.set_xlabel(data.label(names[a]))
    ax.set_ylabel(data.label(names[b]))
    if log[a]:
        ax.set_xscale("log")
    elif names[a] in INTEGER_OBJECTIVES:
        _integer_ticks(ax.xaxis)
    if log[b]:
        ax.set_yscale("log")
    elif names[b] in INTEGER_OBJECTIVES:
        _integer_ticks(ax.yaxis)
    if limits[0] is not None:
        ax.set_xlim(*limits[0])
    if limits[1] is not None:
        ax.set_ylim(*limits[1])
    ax.set_title(f"{names[b]} vs {names[a]}{_where(data)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _usable_limits(values: np.ndarray, log: bool) -> tuple[float, float] | None:
    """The axis range of the usable candidates' ``values`` with a small margin; None without any."""
    v = values[np.isfinite(values)]
    if log:
        v = v[v > 0]
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    if log:
        pad = 10 ** (_MARGIN * max(math.log10(hi / lo), 1.0))
        return lo / pad, hi * pad
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - _MARGIN * span, hi + _MARGIN * span


def _within(values: np.ndarray, limits: tuple[float, float] | None) -> np.ndarray:
    if limits is None:
        return np.ones(values.shape, dtype=bool)
    return (values >= limits[0]) & (values <= limits[1])


def _beyond_note(data: ReportData, F: np.ndarray, cols: tuple[int, int], beyond: np.ndarray, limits: list[Any]) -> str:
    """``note: 21 infeasible candidates beyond the axes (runtime_s up to 1.52e+49), ...``: how many, and how far."""
    worst = []
    for k, c in enumerate(cols):
        if limits[k] is None:
            continue
        col = F[beyond, c]
        if (col > limits[k][1]).any():
            worst.append(f"{data.objective_names[c]} up to {col.max():.3g}")
        if (col < limits[k][0]).any():
            worst.append(f"{data.objective_names[c]} down to {col.min():.3g}")
    return (
        f"note: {plural(int(beyond.sum()), 'infeasible candidate')} beyond the axes ({', '.join(worst)}), "
        "drawn at the edge; the axes span the feasible candidates"
    )


def _draw_beyond(
    ax: Any, data: ReportData, F: np.ndarray, cols: tuple[int, int], beyond: np.ndarray, limits: list[Any]
) -> None:
    """Pin infeasible points beyond the usable range to the axis edge, and say on the plot how many and how far.

    The marker points the way the true value lies (``>`` right of the x
    range, ``^`` above the y range, and so on), so a reader sees that those
    candidates exist without the axis stretching to their values.
    """
    if not beyond.any():
        return
    xy = F[:, cols].copy()
    markers = np.full(len(F), "", dtype=object)
    for k, (lims, low, high) in enumerate(zip(limits, ("<", "v"), (">", "^"), strict=True)):
        if lims is None:
            continue
        col = xy[:, k]
        markers[beyond & (col > lims[1]) & (markers == "")] = high
        markers[beyond & (col < lims[0]) & (markers == "")] = low
        xy[:, k] = np.clip(col, *lims)
    label: str | None = BEYOND_LABEL
    for marker in ("<", ">", "v", "^"):
        rows = beyond & (markers == marker)
        if rows.any():
            ax.scatter(xy[rows, 0], xy[rows, 1], s=40, marker=marker, c="tab:red", alpha=0.6, clip_on=False,
                       label=label, zorder=2)  # fmt: skip
            label = None  # one legend entry for all four directions
    ax.annotate(  # under the x label, clear of the points and their labels
        _beyond_note(data, F, cols, beyond, limits),
        xy=(0.5, 0.0),
        xycoords="axes fraction",
        xytext=(0, -34),
        textcoords="offset points",
        ha="center",
        va="top",
        fontsize=8,
        color="tab:red",
    )


def front_figure_3d(data: ReportData) -> Any:
    """The first three objectives in 3-D (log10 values where :func:`log_axes` says so; mplot3d has no log scale)."""
    fig = _pyplot().figure(figsize=SIZE_3D, dpi=DPI)
    fig.add_subplot(projection="3d")
    return _built(_draw_front_3d, fig, data)


def _draw_front_3d(fig: Any, data: ReportData) -> None:
    ax = fig.axes[0]
    F = data.matrix()
    log = log_axes(data)
    with np.errstate(divide="ignore", invalid="ignore"):
        F = np.where(log, np.log10(np.where(F > 0, F, np.nan)), F)
    labels = [
        f"log10 of {data.label(n)}" if lg else data.label(n) for n, lg in zip(data.objective_names, log, strict=True)
    ]
    usable, on_front = _masks(data)
    rest = usable & ~on_front
    ax.scatter(F[rest, 0], F[rest, 1], F[rest, 2], s=10, c="0.7", label="other feasible candidates")
    ax.scatter(F[on_front, 0], F[on_front, 1], F[on_front, 2], s=28, c="tab:blue", label="Pareto front")
    _label_front_3d(ax, data, F, usable)
    for label, idx, style in ((KNEE_LABEL, data.knee, _KNEE_STYLE), (BEST_LABEL, data.most_accurate, _BEST_STYLE)):
        if idx is not None:
            ax.scatter(F[idx, 0], F[idx, 1], F[idx, 2], label=label, **style)
    for axis, setter, name, lg, text in zip(
        (ax.xaxis, ax.yaxis, ax.zaxis),
        (ax.set_xlabel, ax.set_ylabel, ax.set_zlabel),
        data.objective_names,
        log,
        labels,
        strict=False,
    ):
        # wrapped and larger than the 2-D labels: mplot3d draws them small and far out, the z label at the edge
        setter(textwrap.fill(text, 30), fontsize=LABEL_SIZE_3D, labelpad=12)
        if name in INTEGER_OBJECTIVES and not lg:
            _integer_ticks(axis)
    ax.set_box_aspect(None, zoom=0.85)  # leaves room around the cube for the z label
    ax.set_title(f"Pareto front{_where(data)}")
    ax.legend(fontsize=8, loc="upper left")


#: 3-D label offset from its marker, as a fraction of each axis' range (z alternates up and down).
_OFFSET_3D = (0.03, 0.0, 0.08)


def _label_front_3d(ax: Any, data: ReportData, F: np.ndarray, usable: np.ndarray) -> None:
    """Each front point's short name, set off from its marker with a thin leader line so neither hides the other.

    Offsets are in data units (a fraction of each axis' usable range), so
    they hold whatever the view angle; z alternates up and down so labels
    of neighbouring points separate.
    """
    G = F[usable][:, :3]
    spans = [float(np.nanmax(c) - np.nanmin(c)) if np.isfinite(c).any() else 1.0 for c in G.T] if len(G) else [1.0] * 3
    step = np.array([f * (s if s > 0 else 1.0) for f, s in zip(_OFFSET_3D, spans, strict=True)])
    for n, i in enumerate(data.front):
        sign = 1.0 if n % 2 == 0 else -1.0
        start = F[i, :3]
        end = start + step * np.array([1.0, 1.0, sign])
        ax.plot(*([s, e] for s, e in zip(start, end, strict=True)), c="tab:blue", lw=0.6, alpha=0.6)
        ax.text(*end, short_name(data.candidates[i].arch), fontsize=7, color="tab:blue",
                va="bottom" if sign > 0 else "top")  # fmt: skip


def hypervolume_figure(data: ReportData) -> Any:
    """Hypervolume per generation in the study's fixed box (a flat tail: the search stopped improving)."""
    fig, _ = _pyplot().subplots(figsize=SIZE_HV, dpi=DPI)
    return _built(_draw_hypervolume, fig, data)


def _draw_hypervolume(fig: Any, data: ReportData) -> None:
    ax = fig.axes[0]
    gens = [generation_number(g) for g, _ in data.hypervolumes]
    hvs = [hv for _, hv in data.hypervolumes]
    ax.plot(gens, hvs, marker="o")
    ax.set_xlabel(f"generation ({generation_number(0)} = initial population, as on the console and in summary.md)")
    ax.set_ylabel(f"hypervolume (normalised objectives, reference {HV_REFERENCE})")
    _integer_ticks(ax.xaxis)
    ax.set_title(f"Hypervolume per generation{_where(data)}")
    ax.grid(alpha=0.3)


#: File name of the predicted-against-reported plot (report.json's ``job_costs``, summary.md's section).
JOB_COST_PNG = "job_cost_predicted_vs_reported.png"
#: Colour per origin of a job (the ledger batch's first word), so search and hw-eval jobs are told apart.
_ORIGIN_COLOURS = {"search": "tab:blue", "hw-eval": "tab:orange", "predict": "tab:green"}


def job_cost_figure(data: ReportData) -> Any:
    """Per job: the cost model's prediction (x) against the provider's figure (y), one panel per backend and unit.

    Points on the dashed diagonal were predicted exactly; above it the bill
    was higher than predicted.  The dotted lines mark +-25%, the panel title
    gives the jobs' MAPE, and the colours the job's origin (search, hw-eval,
    predict).  Axes are logarithmic when a panel's figures span over 20x.
    """
    n = len(data.job_costs)
    fig, _ = _pyplot().subplots(1, n, figsize=(max(SIZE_2D[0], 5.2 * n), SIZE_2D[1]), dpi=DPI, squeeze=False)
    return _built(_draw_job_costs, fig, data)


def _draw_job_costs(fig: Any, data: ReportData) -> None:
    for ax, c in zip(fig.axes, data.job_costs, strict=True):
        pred, rep = c.predicted, c.reported
        origins = [j.batch.split("|", 1)[0] for j in c.jobs]
        for origin in sorted(set(origins)):
            mask = np.array([o == origin for o in origins])
            colour = _ORIGIN_COLOURS.get(origin, "tab:gray")
            ax.scatter(pred[mask], rep[mask], s=28, c=colour, alpha=0.75, edgecolors="black", linewidths=0.4,
                       label=f"{origin} jobs ({int(mask.sum())})", zorder=3)  # fmt: skip
        both = np.concatenate([pred[pred > 0], rep[rep > 0]])
        low, high = float(both.min()), float(both.max())
        log = high / low > 20
        lo, hi = (low / 1.5, high * 1.5) if log else (0.0, high * 1.1)
        line = np.array([max(lo, 1e-12), hi])
        ax.plot(line, line, "k--", lw=1.2, label="reported = predicted", zorder=2)
        for f, label in ((1.25, "+-25%"), (0.75, None)):
            ax.plot(line, f * line, color="gray", ls=":", lw=1.0, label=label, zorder=1)
        if log:
            _plain_log_axes(ax)
        ax.set_xlim(lo if not log else line[0], hi)
        ax.set_ylim(lo if not log else line[0], hi)
        money = c.unit == "usd"
        unit = "USD (Braket Tracker)" if money else _UNIT_AXIS[c.unit]
        ax.set_xlabel(f"predicted by the cost model at submission, {unit}")
        ax.set_ylabel(f"reported for the job, {unit}")
        ratio = float(np.median(rep / pred))
        ax.set_title(
            f"{c.backend}: {plural(len(c.jobs), 'job')}, MAPE {100 * c.mape:.1f}%; reported = {ratio:.2g} x predicted "
            "(median)",
            fontsize=10,
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    # the panels name their backends: a study's jobs may have run on another backend than its search (hw-eval)
    fig.suptitle("Job cost: the cost model's prediction against the provider's figure, per job")


def _plain_log_axes(ax: Any) -> None:
    """Log scales labelled 3, 10, 40 rather than 3x10^0, 10^1, 4x10^1: seconds and dollars read at a glance."""
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis, scale in ((ax.xaxis, ax.set_xscale), (ax.yaxis, ax.set_yscale)):
        scale("log")
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)


#: Axis units of the predicted-against-reported plot, per reported unit.
_UNIT_AXIS = {
    "qpu": "QPU seconds (provider usage)",
    "billed": "billed seconds (provider)",
    "wall": "wall seconds (local run, not QPU time)",
}


def _built(draw: Any, fig: Any, *args: Any) -> Any:
    """Run ``draw(fig, *args)``; a drawing error closes the figure instead of leaking it into pyplot's registry."""
    try:
        draw(fig, *args)
    except BaseException:
        _pyplot().close(fig)
        raise
    fig.tight_layout()
    return fig


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    try:
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def write_plots(data: ReportData, out: Path) -> list[Path]:
    """Every plot of ``data`` written into ``out``, in a fixed order; no candidates: no scatter plots."""
    plots: list[Path] = []
    m = len(data.objective_names)
    if data.candidates:
        for a, b in itertools.combinations(range(m), 2):
            p = out / f"front_{_slug(data.objective_names[a])}_vs_{_slug(data.objective_names[b])}.png"
            plots.append(_save(front_figure(data, a, b), p))
        if m >= 3:
            plots.append(_save(front_figure_3d(data), out / "front_3d.png"))
    if data.hypervolumes:
        plots.append(_save(hypervolume_figure(data), out / "hypervolume.png"))
    if data.job_costs:
        plots.append(_save(job_cost_figure(data), out / JOB_COST_PNG))
    return plots
