"""Cut-planning time per candidate: the planner the search uses beside the addon's own full ``find_cuts`` search.

For every entangler, one seeded candidate per qubit count in ``--qubits``
(embedding, rotation and layer count drawn from a generator seeded by
``--seed``) is planned at every budget in ``--budgets`` it does not fit
(a candidate that fits its budget needs no plan and is not timed), twice:

* ``planner``: ``CutPlanner``'s default, what the search runs (the relaxed
  lower bound first; when it proves that no plan within ``max_gamma`` exists,
  only the addon's greedy plan is built);
* ``full``: the same ``CutPlanner`` without the precheck, so the addon's
  ``find_cuts`` runs its full best-first search (``max_backjumps=10000``, the
  planner's default) to decide infeasibility.

Both are cold (fresh planner, no disk cache) and timed around
``CutPlanner.plan``.  The full search of a wide infeasible candidate takes
tens of seconds, so it runs in a forked child that is stopped after
``--full-timeout`` seconds; such a time is recorded as censored (``> T``) and
counted in the median and maximum as "more than T".  Where both finish, their
plans' figures are compared (feasibility, cuts, widths, depths, overhead,
subexperiments): they must agree.

The results file is rewritten after every candidate with ``"complete": false``
until the end; ``benchmarks/readme_tables.py`` renders the README table (median
and maximum per budget and per entangler) from it.

    python benchmarks/cut_planning.py --budgets 2,3,4,5,6 --qubits 4,6,8 --full-timeout 10 \
        --out benchmarks/results/cut_planning.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from provenance import git_head, uncommitted_files

from qnas_hw.atomic_write import atomic_write_text
from qnas_hw.hardware.cutting import CutPlanner
from qnas_hw.model.space import CLASSIC_EMBEDDINGS, ENTANGLERS, ROTATIONS, Architecture

ROOT = Path(__file__).resolve().parents[1]
#: The addon's full search: the planner without the lower-bound precheck, at its default backjump limit.
FULL = {"precheck": False, "max_backjumps": 10000}


def candidates(qubits: Sequence[int], layers: tuple[int, int], seed: int) -> list[Architecture]:
    """One candidate per (entangler, qubit count), the other genes drawn from a seeded generator."""
    rng = np.random.default_rng(seed)
    out = []
    for ent in ENTANGLERS:
        for q in qubits:
            emb = CLASSIC_EMBEDDINGS[rng.integers(len(CLASSIC_EMBEDDINGS))]
            rot = ROTATIONS[rng.integers(len(ROTATIONS))]
            n_layers = int(rng.integers(layers[0], layers[1] + 1))
            out.append(Architecture(emb, q, n_layers, rot, ent))
    return out


def _plan(arch: Architecture, budget: int, seed: int, kwargs: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    planner = CutPlanner(budget, seed=seed, **kwargs)
    t0 = time.perf_counter()
    plan = planner.plan(arch)
    seconds = time.perf_counter() - t0
    return seconds, {
        "figures": json.loads(json.dumps(plan.figures(), default=float)),
        "feasible": plan.feasible,
        "n_cuts": plan.n_cuts,
        "infeasible_proven": plan.infeasible_proven,
    }


def _child(conn: Any, arch: Architecture, budget: int, seed: int) -> None:
    conn.send(_plan(arch, budget, seed, FULL))
    conn.close()


def full_search(arch: Architecture, budget: int, seed: int, timeout: float) -> tuple[float, dict[str, Any] | None]:
    """The addon's full search in a forked child: (seconds, plan), or (timeout, None) when it was stopped."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, arch, budget, seed))
    proc.start()
    child.close()
    if parent.poll(timeout):
        seconds, plan = parent.recv()
        proc.join()
        return seconds, plan
    proc.terminate()
    proc.join()
    return timeout, None


def _stats(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Median and maximum; a censored time counts as infinity, so a censored median/max reads '> timeout'."""
    values = [r[key] if not r.get(f"{key}_censored") else float("inf") for r in rows]
    median = statistics.median(values)
    return {
        "n": len(values),
        "median": None if median == float("inf") else median,
        "max": None if max(values) == float("inf") else max(values),
        "censored": sum(1 for r in rows if r.get(f"{key}_censored")),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per budget and per entangler: median and maximum of both planners, and their agreement."""
    out: dict[str, Any] = {"by_budget": {}, "by_entangler": {}}
    for group, field in (("by_budget", "budget"), ("by_entangler", "entangler")):
        for value in sorted({r[field] for r in rows}, key=lambda v: (str(type(v)), v)):
            sel = [r for r in rows if r[field] == value]
            compared = [r for r in sel if r["agree"] is not None]
            out[group][str(value)] = {
                "planner_s": _stats(sel, "planner_s"),
                "full_s": _stats(sel, "full_s"),
                "compared": len(compared),
                "agree": sum(1 for r in compared if r["agree"]),
                "feasible": sum(1 for r in sel if r["feasible"]),
            }
    out["all"] = {"planner_s": _stats(rows, "planner_s"), "full_s": _stats(rows, "full_s")} if rows else {}
    return out


def _machine() -> dict[str, Any]:
    import qiskit

    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "qiskit": qiskit.__version__,
        "qiskit_addon_cutting": version("qiskit-addon-cutting"),
        "load_average_at_start": list(os.getloadavg()),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", default="2,3,4,5,6")
    ap.add_argument("--qubits", default="4,6,8", help="one candidate per entangler at each of these widths")
    ap.add_argument("--layers", default="1,2", help="layer range the candidates are drawn from")
    ap.add_argument("--full-timeout", type=float, default=10.0, help="seconds before the full search is stopped")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",")]
    lo, hi = (int(v) for v in args.layers.split(","))
    archs = candidates([int(q) for q in args.qubits.split(",")], (lo, hi), args.seed)
    t0 = time.perf_counter()
    doc: dict[str, Any] = {
        "benchmark": "cut_planning",
        "command": "python benchmarks/cut_planning.py " + shlex.join(argv),
        "commit": git_head(),
        "uncommitted_changes": uncommitted_files(),
        "machine": _machine(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "budgets": budgets,
        "full_timeout_s": args.full_timeout,
        "full_settings": FULL,
        "candidates": [a.canonical() for a in archs],
        "seconds": 0.0,
        "complete": False,
        "rows": [],
        "summary": {},
    }

    def write(complete: bool = False) -> None:
        doc["seconds"] = time.perf_counter() - t0
        doc["complete"] = complete
        doc["summary"] = summarize(doc["rows"])
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")

    print(f"{'candidate':<34} {'budget':>6} {'planner s':>10} {'full s':>9} {'feasible':>8} {'agree':>5}")
    for arch in archs:
        for budget in budgets:
            if arch.n_qubits <= budget:
                continue
            planner_s, plan = _plan(arch, budget, args.seed, {})
            full_s, full = full_search(arch, budget, args.seed, args.full_timeout)
            row = {
                "arch": arch.canonical(),
                "qubits": arch.n_qubits,
                "entangler": arch.entangler,
                "budget": budget,
                "planner_s": planner_s,
                "full_s": full_s,
                "full_s_censored": full is None,
                "feasible": plan["feasible"],
                "n_cuts": plan["n_cuts"],
                "infeasible_proven": plan["infeasible_proven"],
                "agree": None if full is None else full["figures"] == plan["figures"],
            }
            doc["rows"].append(row)
            full_text = f">{args.full_timeout:g}" if full is None else f"{full_s:.2f}"
            print(
                f"{arch.canonical():<34} {budget:>6} {planner_s:>10.3f} {full_text:>9} {plan['feasible']!s:>8} "
                f"{'-' if row['agree'] is None else str(row['agree']):>5}",
                flush=True,
            )
            write()
    write(complete=True)
    a = doc["summary"]["all"]
    print(
        f"{a['planner_s']['n']} plans: planner median {a['planner_s']['median']:.3f} s, max "
        f"{a['planner_s']['max']:.2f} s; full search median "
        + (f"{a['full_s']['median']:.2f} s" if a["full_s"]["median"] is not None else f"> {args.full_timeout:g} s")
        + f", {a['full_s']['censored']} stopped at {args.full_timeout:g} s"
    )
    return doc


if __name__ == "__main__":
    main()
