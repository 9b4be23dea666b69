"""PNG plots of a report: one scatter per objective pair, the 3-D front and the hypervolume history.

matplotlib is imported per figure with the file-only Agg backend, so reports
work on machines with no display and importing the package stays cheap.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from qnas_hw.reports.data import ReportData
from qnas_hw.search.pareto import HV_REFERENCE, pareto_front


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


def _scatter_2d(data: ReportData, a: int, b: int, path: Path) -> None:
    plt = _pyplot()
    F = data.matrix()
    usable = np.array([c.usable for c in data.candidates], dtype=bool)
    on_front = np.zeros(len(data.candidates), dtype=bool)
    on_front[data.front] = True
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    try:
        rest = usable & ~on_front
        ax.scatter(F[rest, a], F[rest, b], s=16, c="0.65", label="candidates")
        if (~usable).any():
            bad = ~usable & np.isfinite(F[:, [a, b]]).all(axis=1)
            ax.scatter(F[bad, a], F[bad, b], s=16, marker="x", c="tab:gray", label="infeasible")
        if data.front:
            ax.scatter(F[on_front, a], F[on_front, b], s=30, c="tab:blue", label="Pareto front (all objectives)")
            # The 2-D front of this projection as a step line, for the eye.
            sub = np.array(data.front)[pareto_front(F[data.front][:, [a, b]])]
            order = sub[np.argsort(F[sub, a])]
            ax.step(F[order, a], F[order, b], where="post", c="tab:blue", lw=1, alpha=0.7)
        for label, idx, colour in (("knee", data.knee, "tab:red"), ("most accurate", data.most_accurate, "tab:green")):
            if idx is not None:
                ax.scatter(F[idx, a], F[idx, b], s=120, facecolors="none", edgecolors=colour, lw=2, label=label)
        ax.set_xlabel(data.objective_names[a])
        ax.set_ylabel(data.objective_names[b])
        log = log_axes(data)
        if log[a]:
            ax.set_xscale("log")
        if log[b]:
            ax.set_yscale("log")
        ax.set_title(f"{data.objective_names[b]} vs {data.objective_names[a]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _scatter_3d(data: ReportData, path: Path) -> None:
    plt = _pyplot()
    F = data.matrix()
    log = log_axes(data)  # mplot3d has no working log scale: plot log10 values and say so on the axis
    with np.errstate(divide="ignore", invalid="ignore"):
        F = np.where(log, np.log10(np.where(F > 0, F, np.nan)), F)
    names = [f"log10 {n}" if lg else n for n, lg in zip(data.objective_names, log, strict=True)]
    usable = np.array([c.usable for c in data.candidates], dtype=bool)
    on_front = np.zeros(len(data.candidates), dtype=bool)
    on_front[data.front] = True
    fig = plt.figure(figsize=(6, 5), dpi=110)
    try:
        ax = fig.add_subplot(projection="3d")
        rest = usable & ~on_front
        ax.scatter(F[rest, 0], F[rest, 1], F[rest, 2], s=10, c="0.7", label="candidates")
        ax.scatter(F[on_front, 0], F[on_front, 1], F[on_front, 2], s=28, c="tab:blue", label="Pareto front")
        for label, idx, colour in (("knee", data.knee, "tab:red"), ("most accurate", data.most_accurate, "tab:green")):
            if idx is not None:
                ax.scatter(F[idx, 0], F[idx, 1], F[idx, 2], s=120, c=colour, marker="*", label=label)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_zlabel(names[2])
        ax.set_title("Pareto front")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _hv_plot(data: ReportData, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    try:
        gens = [g for g, _ in data.hypervolumes]
        hvs = [hv for _, hv in data.hypervolumes]
        ax.plot(gens, hvs, marker="o")
        ax.set_xlabel("generation")
        ax.set_ylabel(f"hypervolume (normalised, ref={HV_REFERENCE})")
        ax.set_title("Hypervolume per generation")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def write_plots(data: ReportData, out: Path) -> list[Path]:
    """Every plot of ``data`` written into ``out``, in a fixed order; no candidates: no scatter plots."""
    plots: list[Path] = []
    m = len(data.objective_names)
    if data.candidates:
        for a, b in itertools.combinations(range(m), 2):
            p = out / f"front_{_slug(data.objective_names[a])}_vs_{_slug(data.objective_names[b])}.png"
            _scatter_2d(data, a, b, p)
            plots.append(p)
        if m >= 3:
            p = out / "front_3d.png"
            _scatter_3d(data, p)
            plots.append(p)
    if data.hypervolumes:
        p = out / "hypervolume.png"
        _hv_plot(data, p)
        plots.append(p)
    return plots
