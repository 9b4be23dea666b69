"""PNG plots of a report: one scatter per objective pair, the 3-D front and the hypervolume history.

Every figure is meant to be read without the code at hand: axes say what an
objective measures and in which unit (QPU seconds from a cost model are not
wall seconds), titles name the backend, front points carry a short
architecture name, integer objectives get integer ticks, and the knee and
most-accurate picks use different markers so both stay visible when they are
the same candidate.  Figures are at least :data:`MIN_WIDTH_PX` pixels wide.

matplotlib is imported per figure with the file-only Agg backend, so reports
work on machines with no display and importing the package stays cheap.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from qnas_hw.reports.data import INTEGER_OBJECTIVES, ReportData, short_name
from qnas_hw.search.pareto import HV_REFERENCE, pareto_front

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
    bad = ~usable & np.isfinite(F[:, [a, b]]).all(axis=1)
    if bad.any():
        ax.scatter(F[bad, a], F[bad, b], s=16, marker="x", c="tab:gray", label="infeasible or failed")
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
    log = log_axes(data)
    if log[a]:
        ax.set_xscale("log")
    elif names[a] in INTEGER_OBJECTIVES:
        _integer_ticks(ax.xaxis)
    if log[b]:
        ax.set_yscale("log")
    elif names[b] in INTEGER_OBJECTIVES:
        _integer_ticks(ax.yaxis)
    ax.set_title(f"{names[b]} vs {names[a]}{_where(data)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


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
    for i in data.front:
        ax.text(F[i, 0], F[i, 1], F[i, 2], " " + short_name(data.candidates[i].arch), fontsize=6, color="tab:blue")
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
        setter(text, fontsize=8)
        if name in INTEGER_OBJECTIVES and not lg:
            _integer_ticks(axis)
    ax.set_title(f"Pareto front{_where(data)}")
    ax.legend(fontsize=8, loc="upper left")


def hypervolume_figure(data: ReportData) -> Any:
    """Hypervolume per generation in the study's fixed box (a flat tail: the search stopped improving)."""
    fig, _ = _pyplot().subplots(figsize=SIZE_HV, dpi=DPI)
    return _built(_draw_hypervolume, fig, data)


def _draw_hypervolume(fig: Any, data: ReportData) -> None:
    ax = fig.axes[0]
    gens = [g for g, _ in data.hypervolumes]
    hvs = [hv for _, hv in data.hypervolumes]
    ax.plot(gens, hvs, marker="o")
    ax.set_xlabel("generation (0 = initial population)")
    ax.set_ylabel(f"hypervolume (normalised objectives, reference {HV_REFERENCE})")
    _integer_ticks(ax.xaxis)
    ax.set_title(f"Hypervolume per generation{_where(data)}")
    ax.grid(alpha=0.3)


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
    return plots
