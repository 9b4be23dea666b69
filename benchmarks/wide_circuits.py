"""Hardware objectives per candidate at 16 and 20 qubits: transpile, cut plan and runtime cost on a 133-qubit device.

With ``MAX_QUBITS`` raised to 20 (issue 17), a search may propose candidates
of 16-20 qubits.  Their hardware objectives run the same code as the 8-qubit
ones in ``benchmarks/objectives.py`` (its :func:`cold_timings`: a fresh
``Transpiler``, ``CutPlanner`` and ``RuntimeCostObjective`` per budget, so
every figure is a first visit); this times them at those widths on
``fake_torino`` (133 qubits), whose calibrated layout search has room for
20 qubits.  Candidates are drawn with a seeded generator from every embedding
except amplitude (its circuit is refused above 12 qubits:
``circuits.AMPLITUDE_CIRCUIT_MAX_QUBITS``), 1-3 layers, every rotation and
entangler, and the space's largest corner (3 layers of ``rx-ry-rz`` with the
``full`` entangler, the hardest to cut) is added to them.

Wall-clock on whatever machine runs it (a shared, loaded 2-core box in
development): compare columns of one run.

    python benchmarks/wide_circuits.py --out benchmarks/results/wide_circuits.json
    python benchmarks/wide_circuits.py --widths 16,20 --n 4 --budgets 8,12 --backend fake_sherbrooke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from objectives import NEW, Timing, cold_timings  # the sibling benchmark: same stack, same first-visit timing
from provenance import git_head, uncommitted_files

from qnas_hw.hardware.backends import get_backend
from qnas_hw.model.space import EMBEDDINGS, Architecture, SearchSpace


def candidates(width: int, n: int, seed: int) -> list[Architecture]:
    """The largest corner and ``n`` distinct seeded candidates of ``width`` qubits (no amplitude embedding)."""
    space = SearchSpace(
        embeddings=tuple(e for e in EMBEDDINGS if e != "amplitude"), qubits=(width, width), layers=(1, 3)
    )
    rng = np.random.default_rng(seed + width)
    out: list[Architecture] = [space.largest()]
    while len(out) < n + 1:
        arch = space.sample(rng)
        if arch not in out:
            out.append(arch)
    return out


def row(width: int, budget: int, t: Timing) -> dict[str, Any]:
    p = t.plan
    return {
        "width": width,
        "budget": budget,
        "arch": t.arch.canonical(),
        "transpile_s": t.transpile_s,
        "plan_s": t.plan_s,
        "cost_s": t.cost_s,
        "total_s": t.total_s,
        "feasible": p.feasible,
        "infeasible_proven": p.infeasible_proven,
        "n_subcircuits": p.n_subcircuits,
        "n_cuts": p.n_cuts,
        "sampling_overhead": p.sampling_overhead if np.isfinite(p.sampling_overhead) else None,
        "n_subexperiments": p.n_subexperiments,
    }


def summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median and max per (width, budget) of each timing."""
    out = []
    for key in sorted({(r["width"], r["budget"]) for r in rows}):
        group = [r for r in rows if (r["width"], r["budget"]) == key]
        entry: dict[str, Any] = {"width": key[0], "budget": key[1], "candidates": len(group)}
        for col in ("transpile_s", "plan_s", "cost_s", "total_s"):
            values = np.array([r[col] for r in group])
            entry[col] = {"median": float(np.median(values)), "max": float(values.max())}
        entry["feasible"] = sum(r["feasible"] for r in group)
        out.append(entry)
    return out


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print(
        f"{'width':>5} {'budget':>6} {'transpile s':>11} {'plan s':>8} {'cost s':>8} {'total s':>8} "
        f"{'feasible':>8} {'pieces':>6}  architecture"
    )
    for r in rows:
        print(
            f"{r['width']:>5} {r['budget']:>6} {r['transpile_s']:>11.2f} {r['plan_s']:>8.2f} {r['cost_s']:>8.2f} "
            f"{r['total_s']:>8.2f} {r['feasible']!s:>8} {r['n_subcircuits']:>6}  {r['arch']}",
            flush=True,
        )


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "qiskit": version("qiskit"),
        "qiskit-addon-cutting": version("qiskit-addon-cutting"),
        "load_average_at_start": list(os.getloadavg()),
    }


def commit() -> str:
    head = git_head()
    if head == "unknown":
        return head
    return head + (" (working tree with uncommitted changes)" if uncommitted_files(untracked=True) else "")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="fake_torino")
    ap.add_argument("--widths", default="16,20", help="comma-separated qubit counts")
    ap.add_argument("--n", type=int, default=4, help="random candidates per width (besides the largest corner)")
    ap.add_argument("--budgets", default="8,12", help="comma-separated qubit budgets (qubits per subcircuit)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    backend = get_backend(args.backend)
    widths = [int(w) for w in args.widths.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    print(f"{args.backend} ({backend.num_qubits} qubits), widths {widths}, budgets {budgets}, {args.n} per width")
    start, t0 = machine(), time.perf_counter()
    rows: list[dict[str, Any]] = []
    for width in widths:
        archs = candidates(width, args.n, args.seed)
        for budget in budgets:
            timings = cold_timings(archs, args.backend, budget, args.seed, NEW)
            new = [row(width, budget, t) for t in timings]
            print_table(new)
            rows += new
    seconds = time.perf_counter() - t0
    print(f"\nbenchmark wall time {seconds:.1f} s")
    for s in summary(rows):
        print(
            f"width {s['width']} budget {s['budget']}: transpile median {s['transpile_s']['median']:.2f} s, "
            f"cut plan median {s['plan_s']['median']:.2f} s (max {s['plan_s']['max']:.2f}), total median "
            f"{s['total_s']['median']:.2f} s; {s['feasible']}/{s['candidates']} feasible"
        )
    if args.out is not None:
        payload = {
            "command": "python benchmarks/wide_circuits.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "commit": commit(),
            "machine": start,
            "backend": {"name": args.backend, "qubits": backend.num_qubits},
            "seconds": seconds,
            "summary": summary(rows),
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
