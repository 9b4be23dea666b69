"""Hardware-objective cost per candidate, and how much the caches save when a search re-visits candidates.

Part 1 (target: median < 1 s per candidate): for distinct 8-qubit 2-layer
candidates, cold (first-visit) wall time of

* transpiling to the device (``Transpiler`` on ``fake_kolkata``, 27 qubits),
* cut planning for the qubit budget (``CutPlanner``: qiskit-addon-cutting's
  find_cuts + partition + exact QPD enumeration),
* cost prediction (``RuntimeCostObjective`` with the shipped calibration,
  its transpile and plan already cached),

printed side by side (median / p90 / max), split by feasible and infeasible
plans (an infeasible plan is the optimiser exhausting its search below
``max_gamma``, the slow case).  Each budget runs twice on the same
candidates: ``old`` is the planner before issue #4 item 6 (no precheck,
``max_backjumps=10000``: the addon's full search decides infeasibility) and
``new`` the current default (the relaxed lower bound proves infeasibility
first and only the addon's greedy plan is built).  Their agreement is
printed: same feasibility verdict, and every plan figure equal (overhead,
cuts, widths, depths, subexperiments).  ``--extra-backjumps 1000`` adds a
third run without the precheck at that backjump limit (option (b) of the
issue, for comparison).  A fresh planner pointed at the same ``cache_dir``
then reads the plans back from files (the on-disk cache).  Part 0 times
binding the planning circuit
(``assign_parameters`` as before vs ``bind_each_gate``) and checks both give
equal circuits.

Part 2: a search's sampling stream, generation by generation, through one
shared transpiler and planner, evaluating both ``runtime_s`` and
``subcircuits`` per candidate as the search does.  Two streams, both drawn
from ``SearchSpace.sample`` with a seeded generator: ``uniform`` (every
candidate a fresh sample) and ``mutation`` (each child is a member of the
previous generation with one gene taken from a fresh sample, which is how
NSGA-II's offspring stay near their parents).  Prints cache hit rates and the
wall time with caches against the time the same stream costs cold (every
visit priced at its first-visit time).

Part 3 (``--accuracy``; targets on 2 cores: <= 1 s and <= 3 s median): the
accuracy objective's scoring per candidate, ``ideal`` (the exact torch
simulator on the same samples) side by side with ``noisy`` (the candidate's
program transpiled and placed for the device, its samples as parameter rows
under the device's Aer noise on only the used qubits, ``shots`` each, mthree
readout mitigation), split into where the time goes: building the program
(transpile + noise-aware placement, or cut planning + subexperiments), the
Aer simulation, and mitigation + decoding (the readout calibration is timed
apart: it is measured once per qubit set and shared by candidates).  Cases:
a 4-qubit candidate on the 5-qubit ``fake_quito``, 8-qubit 2-layer
candidates on the 27-qubit ``fake_kolkata``, and cut candidates.

Timings are wall-clock on whatever machine runs this (a shared, loaded CPU
in development): compare the columns of one run, not runs across machines.

    python benchmarks/objectives.py
    python benchmarks/objectives.py --n 32 --budgets 4,6 --extra-backjumps 1000 --pop 12 --generations 8
    python benchmarks/objectives.py --accuracy --samples 512 --shots 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from provenance import git_head

from qnas_hw.hardware.backends import get_backend
from qnas_hw.hardware.cost import CostModel
from qnas_hw.hardware.cutting import (
    WORST_CASE_INPUT,
    CutPlan,
    CutPlanner,
    bind_each_gate,
    representative_circuit,
)
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.model.circuits import INPUT_NAME, build_circuit
from qnas_hw.model.space import GENES, Architecture, SearchSpace
from qnas_hw.search.objectives import RuntimeCostObjective, SubcircuitObjective


@dataclass
class Timing:
    arch: Architecture
    transpile_s: float
    plan_s: float
    cost_s: float
    plan: CutPlan

    @property
    def feasible(self) -> bool:
        return self.plan.feasible

    @property
    def n_subcircuits(self) -> int:
        return self.plan.n_subcircuits

    @property
    def total_s(self) -> float:
        return self.transpile_s + self.plan_s + self.cost_s


#: Planner settings compared in part 1: before issue #4 item 6 and the current default.
OLD = {"precheck": False, "max_backjumps": 10000}
NEW: dict[str, Any] = {}


def _stack(
    backend_name: str, budget: int, seed: int, planner_kwargs: dict[str, Any] | None = None
) -> tuple[Transpiler, CutPlanner, RuntimeCostObjective]:
    backend = get_backend(backend_name)
    transpiler = Transpiler(backend, optimization_level=1, seed=seed)
    planner = CutPlanner(budget, seed=seed, max_qubits=backend.num_qubits, **(planner_kwargs or {}))
    cost = RuntimeCostObjective(backend, transpiler, CostModel.for_backend(backend), cut_planner=planner)
    return transpiler, planner, cost


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def cold_timings(
    archs: Sequence[Architecture], backend_name: str, budget: int, seed: int, planner_kwargs: dict[str, Any]
) -> list[Timing]:
    transpiler, planner, cost = _stack(backend_name, budget, seed, planner_kwargs)
    rows = []
    for arch in archs:
        _, t_tr = _timed(transpiler.transpile, arch)
        plan, t_plan = _timed(planner.plan, arch)
        _, t_cost = _timed(cost.evaluate, arch)
        rows.append(Timing(arch, t_tr, t_plan, t_cost, plan))
    return rows


def _stats(values: Sequence[float]) -> str:
    if not values:
        return f"{'-':>8} {'-':>8} {'-':>8}"
    v = np.asarray(values)
    return f"{np.median(v):8.3f} {np.percentile(v, 90):8.3f} {v.max():8.3f}"


def print_binding(archs: Sequence[Architecture], seed: int) -> None:
    """Part 0: the planning circuit bound the old way (assign_parameters) and the new way, timed and compared."""
    old_s, new_s, equal = [], [], 0
    for arch in archs:
        qc = build_circuit(arch)
        rng = np.random.default_rng(seed)
        weights = rng.uniform(0.0, 2 * np.pi, size=qc.num_parameters)
        values = {
            p: (WORST_CASE_INPUT if p.vector.name == INPUT_NAME else float(w))
            for p, w in zip(qc.parameters, weights, strict=True)
        }
        old, t_old = _timed(qc.assign_parameters, values)
        new, t_new = _timed(bind_each_gate, qc, values)
        old_s.append(t_old)
        new_s.append(t_new)
        equal += old == new == representative_circuit(arch, seed)
    print("\n== Part 0: binding the planning circuit (seconds: median / p90 / max) ==")
    print(f"  assign_parameters (old) {_stats(old_s)}")
    print(f"  bind_each_gate    (new) {_stats(new_s)}")
    print(f"  equal circuits {equal}/{len(archs)}")


def print_part1(rows_by_run: dict[tuple[int, str], list[Timing]]) -> None:
    print("\n== Part 1: cold time per distinct 8-qubit 2-layer candidate (seconds: median / p90 / max) ==")
    cols = " | ".join(f"{c:^26}" for c in ("transpile", "cut plan", "cost predict", "total"))
    header = f"{'budget/planner':>16} {'subset':>10} {'n':>3} | {cols}"
    print(header)
    print("-" * len(header))
    for (budget, name), rows in rows_by_run.items():
        for label, sel in (
            ("all", rows),
            ("feasible", [r for r in rows if r.feasible]),
            ("infeasible", [r for r in rows if not r.feasible]),
        ):
            print(
                f"{f'{budget}/{name}':>16} {label:>10} {len(sel):>3} | {_stats([r.transpile_s for r in sel])} | "
                f"{_stats([r.plan_s for r in sel])} | {_stats([r.cost_s for r in sel])} | "
                f"{_stats([r.total_s for r in sel])}"
            )
        med = float(np.median([r.total_s for r in rows]))
        verdict = "meets" if med < 1.0 else "MISSES"
        subs = Counter(r.n_subcircuits for r in rows if r.feasible)
        proven = sum(r.plan.infeasible_proven for r in rows)
        print(
            f"       budget {budget}, {name}: median total {med:.3f} s {verdict} the < 1 s target; "
            f"feasible subcircuit counts {dict(sorted(subs.items()))}; infeasible proven by the bound {proven}; "
            f"optimum proven by the addon {sum(r.plan.minimum_reached for r in rows)}/{len(rows)}"
        )
        slow = sorted(rows, key=lambda r: -r.plan_s)[:3]
        print(
            "       slowest plans: "
            + "; ".join(f"{r.arch} {r.plan_s:.2f}s{'' if r.feasible else ' (infeasible)'}" for r in slow)
        )


def print_agreement(part1: dict[tuple[int, str], list[Timing]]) -> None:
    """Does a planner setting change verdicts or plans? (the reference is ``old``, the addon's full search)"""
    print("\n== Agreement with the old planner (same candidates) ==")
    for budget in sorted({b for b, _ in part1}):
        ref = part1[(budget, "old")]
        for (b, name), rows in part1.items():
            if b != budget or name == "old":
                continue
            verdict = sum(a.feasible == r.feasible for a, r in zip(rows, ref, strict=True))
            same = sum(a.plan.figures() == r.plan.figures() for a, r in zip(rows, ref, strict=True))
            feas = [(a, r) for a, r in zip(rows, ref, strict=True) if r.feasible]
            same_feas = sum(a.plan.figures() == r.plan.figures() for a, r in feas)
            t_old = sum(r.plan_s for r in ref)
            t_new = sum(r.plan_s for r in rows)
            print(
                f"  budget {budget}: {name} vs old: same feasibility verdict {verdict}/{len(ref)}; every figure equal "
                f"{same}/{len(ref)} (feasible plans {same_feas}/{len(feas)}); total plan time {t_new:.1f} s vs "
                f"{t_old:.1f} s ({t_old / max(t_new, 1e-9):.1f}x)"
            )
            for a, r in zip(rows, ref, strict=True):
                if a.plan.figures() != r.plan.figures():
                    print(f"    differs: {r.arch}: old {r.plan.figures()} / {name} {a.plan.figures()}")


def print_disk_cache(archs: Sequence[Architecture], budgets: Sequence[int], seed: int) -> None:
    """A second planner pointed at the same ``cache_dir`` reads every plan back instead of planning."""
    print("\n== Disk cache: the same candidates planned by a fresh planner, cold vs from files (seconds, total) ==")
    for budget in budgets:
        with tempfile.TemporaryDirectory() as tmp:
            cold, warm = (
                CutPlanner(budget, seed=seed, cache_dir=Path(tmp)),
                CutPlanner(budget, seed=seed, cache_dir=Path(tmp)),
            )
            plans, t_cold = _timed(lambda p: [p.plan(a) for a in archs], cold)
            again, t_warm = _timed(lambda p: [p.plan(a) for a in archs], warm)
        print(
            f"  budget {budget}: cold {t_cold:.2f} s, from files {t_warm:.3f} s ({t_cold / max(t_warm, 1e-9):.0f}x); "
            f"identical plans {sum(a == b for a, b in zip(plans, again, strict=True))}/{len(archs)}, "
            f"disk hits {warm.disk_hits}"
        )


# ------------------------------------------------------------------ part 2
def mutate(parent: Architecture, space: SearchSpace, rng: np.random.Generator) -> Architecture:
    """One gene of ``parent`` replaced by that gene of a fresh ``space.sample``."""
    donor = space.encode(space.sample(rng))
    genome = space.encode(parent)
    g = int(rng.integers(len(GENES)))
    genome[g] = donor[g]
    return space.decode(genome)


def stream(
    kind: str, space: SearchSpace, pop: int, generations: int, rng: np.random.Generator
) -> list[list[Architecture]]:
    gens = [[space.sample(rng) for _ in range(pop)]]
    for _ in range(generations - 1):
        if kind == "uniform":
            gens.append([space.sample(rng) for _ in range(pop)])
        else:
            prev = gens[-1]
            gens.append([mutate(prev[int(rng.integers(len(prev)))], space, rng) for _ in range(pop)])
    return gens


def run_stream(gens: list[list[Architecture]], backend_name: str, budget: int, seed: int) -> dict[str, float]:
    transpiler, planner, cost = _stack(backend_name, budget, seed, NEW)
    subcircuits = SubcircuitObjective(planner)
    first_visit: dict[str, float] = {}
    cached_total = cold_total = 0.0
    for gen in gens:
        for arch in gen:
            t = time.perf_counter()
            cost.evaluate(arch)
            subcircuits.evaluate(arch)
            dt = time.perf_counter() - t
            cached_total += dt
            first_visit.setdefault(arch.key(), dt)
            cold_total += first_visit[arch.key()]
    visits = sum(len(g) for g in gens)
    return {
        "visits": visits,
        "distinct": len(first_visit),
        "tr_hit": transpiler.hits / max(transpiler.hits + transpiler.misses, 1),
        "plan_hit": planner.hits / max(planner.hits + planner.misses, 1),
        "cached_s": cached_total,
        "cold_s": cold_total,
    }


def print_part2(
    results: dict[str, dict[str, float]], pop: int, generations: int, space: SearchSpace, budget: int
) -> None:
    print(
        f"\n== Part 2: search stream, {generations} generations x {pop} candidates, space qubits {space.qubits} "
        f"layers {space.layers} ({space.size} architectures), budget {budget} =="
    )
    header = (
        f"{'stream':>9} {'visits':>6} {'distinct':>8} {'transpile hit':>13} {'plan hit':>8} "
        f"{'cached s':>9} {'cold s':>9} {'speed-up':>8}"
    )
    print(header)
    print("-" * len(header))
    for kind, r in results.items():
        print(
            f"{kind:>9} {r['visits']:>6} {r['distinct']:>8} {r['tr_hit']:>13.1%} {r['plan_hit']:>8.1%} "
            f"{r['cached_s']:>9.2f} {r['cold_s']:>9.2f} {r['cold_s'] / max(r['cached_s'], 1e-9):>7.1f}x"
        )
    print("  (plan hits include the second read of each plan by the other objective, as in the search)")


#: Part 3 cases: (label, backend, architecture, qubit budget)
ACCURACY_CASES: tuple[tuple[str, str, str, int], ...] = (
    ("4q on 5q device", "fake_quito", "angle-y|q4|l2|ry-rz|ring|z", 5),
    ("8q/2l ring (W8) on 27q", "fake_kolkata", "angle-y|q8|l2|ry-rz|ring|z", 8),
    ("8q/2l sparse on 27q", "fake_kolkata", "angle-y|q8|l2|ry|sparse|z", 8),
    ("cut: 5q, 1 CNOT cut", "fake_kolkata", "angle-y|q5|l1|rx-ry|linear|z", 4),
    ("cut: 6q, 2 pieces", "fake_kolkata", "angle-x|q6|l1|ry|sparse|z", 4),
)


def accuracy_timings(samples: int, shots: int, repeats: int, seed: int) -> list[dict[str, Any]]:
    """Per case: ideal scoring time, and noisy scoring split into build / simulate / mitigate+decode."""
    import torch

    from qnas_hw.hardware.execution import ProgramBuilder
    from qnas_hw.hardware.noise import NoisySimulator
    from qnas_hw.model.hqnn import HQNN
    from qnas_hw.search.scoring import NoisyScorer

    rows = []
    for label, backend_name, text, budget in ACCURACY_CASES:
        backend = get_backend(backend_name)
        arch = Architecture.parse(text)
        rng = np.random.default_rng(seed)
        X = torch.as_tensor(rng.normal(size=(samples, arch.n_qubits)), dtype=torch.float32)
        y = torch.as_tensor(rng.integers(0, 3, size=samples))
        model = HQNN(arch, (arch.n_qubits,), 3, frontend="linear", seed=seed).eval()
        ideal = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            with torch.no_grad():
                model(X).argmax(-1)
            ideal.append(time.perf_counter() - t0)
        simulator = NoisySimulator(backend)
        planner = CutPlanner(budget, seed=seed, max_qubits=backend.num_qubits)
        parts: dict[str, list[float]] = {"build": [], "simulate": [], "mitigate_decode": [], "total": []}
        cal = math.nan
        accs = []
        for r in range(repeats):
            builder = ProgramBuilder(backend, Transpiler(backend, seed=seed), planner, shots)  # a new candidate
            scorer = NoisyScorer(builder, simulator, mitigation=True, seed=seed + r)
            if r == 0:  # the readout calibration of the candidate's qubits, once (shared by candidates after)
                t0 = time.perf_counter()
                program = builder.build(arch)
                qubits = sorted({q for run in program.runs for q in run.measured_qubits if q is not None})
                scorer.mitigator(qubits)
                cal = time.perf_counter() - t0 - 0.0
                builder = ProgramBuilder(backend, Transpiler(backend, seed=seed), planner, shots)
                fresh = NoisyScorer(builder, simulator, mitigation=True, seed=seed + r)
                fresh._mitigators = scorer._mitigators
                scorer = fresh
            t0 = time.perf_counter()
            acc, details = scorer.score(arch, model, X, y)
            parts["total"].append(time.perf_counter() - t0)
            for k in ("build", "simulate", "mitigate_decode"):
                parts[k].append(details["_timings"][k])
            accs.append(acc)
        program = builder.build(arch)
        rows.append(
            {
                "case": label,
                "backend": backend_name,
                "architecture": text,
                "circuits_per_sample": program.circuits_per_row,
                "shots_per_sample": program.shots_per_row,
                "active_qubits": max(len(run.record.physical_qubits) for run in program.runs),
                "ideal_s": float(np.median(ideal)),
                "calibration_s": cal,
                **{f"{k}_s": float(np.median(v)) for k, v in parts.items()},
            }
        )
    return rows


def write_results(path: Path, rows: list[dict[str, Any]], seconds: float, argv: Sequence[str] | None) -> None:
    import json
    import os
    import platform
    import sys

    import qiskit
    import qiskit_aer
    import torch

    commit = git_head()
    payload = {
        "command": "python benchmarks/objectives.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit,
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "qiskit": qiskit.__version__,
            "qiskit_aer": qiskit_aer.__version__,
        },
        "seconds": seconds,
        "rows": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")


def print_accuracy(rows: list[dict[str, Any]], samples: int, shots: int) -> None:
    print(f"\npart 3: accuracy scoring per candidate, {samples} validation samples x {shots} shots (median s)")
    print(
        f"{'case':<24} {'circ/sample':>11} {'qubits':>6} {'ideal':>8} {'noisy':>8} {'= build':>8} "
        f"{'+ Aer':>8} {'+ mit/dec':>9} {'(cal once)':>10}"
    )
    for r in rows:
        print(
            f"{r['case']:<24} {r['circuits_per_sample']:>11} {r['active_qubits']:>6} {r['ideal_s']:>8.3f} "
            f"{r['total_s']:>8.3f} {r['build_s']:>8.3f} {r['simulate_s']:>8.3f} {r['mitigate_decode_s']:>9.3f} "
            f"{r['calibration_s']:>10.3f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="fake_kolkata")
    ap.add_argument("--n", type=int, default=32, help="distinct 8-qubit 2-layer candidates for part 1")
    ap.add_argument("--budgets", default="4", help="comma-separated qubit budgets for part 1")
    ap.add_argument(
        "--extra-backjumps",
        default="",
        help="comma-separated max_backjumps for extra part-1 runs without the precheck (e.g. 1000)",
    )
    ap.add_argument("--skip-stream", action="store_true", help="part 1 only")
    ap.add_argument("--stream-budget", type=int, default=4)
    ap.add_argument("--pop", type=int, default=12)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--stream-qubits", default="2,6", help="qubit range of the part-2 space (the default config's)")
    ap.add_argument("--stream-layers", default="1,3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accuracy", action="store_true", help="part 3 only: ideal vs noisy accuracy scoring")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--shots", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="part 3: also write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.accuracy:
        t0 = time.perf_counter()
        rows = accuracy_timings(args.samples, args.shots, args.repeats, args.seed)
        print_accuracy(rows, args.samples, args.shots)
        seconds = time.perf_counter() - t0
        print(f"\nbenchmark wall time {seconds:.1f} s")
        if args.out is not None:
            write_results(args.out, rows, seconds, argv)
        return

    rng = np.random.default_rng(args.seed)
    space8 = SearchSpace(qubits=(8, 8), layers=(2, 2))
    if args.n > space8.size:
        raise SystemExit(f"--n {args.n} exceeds the {space8.size} distinct 8-qubit 2-layer candidates")
    archs: list[Architecture] = []
    while len(archs) < args.n:
        a = space8.sample(rng)
        if a not in archs:
            archs.append(a)
    budgets = [int(b) for b in args.budgets.split(",")]
    t0 = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {"old": OLD, "new": NEW}
    for j in (int(v) for v in args.extra_backjumps.split(",") if v):
        runs[f"bj{j}"] = {"precheck": False, "max_backjumps": j}
    print_binding(archs, args.seed)
    part1 = {
        (b, name): cold_timings(archs, args.backend, b, args.seed, kwargs)
        for b in budgets
        for name, kwargs in runs.items()
    }
    print_part1(part1)
    print_agreement(part1)
    print_disk_cache(archs, budgets, args.seed)
    if args.skip_stream:
        return

    lo_q, hi_q = (int(v) for v in args.stream_qubits.split(","))
    lo_l, hi_l = (int(v) for v in args.stream_layers.split(","))
    space = SearchSpace(qubits=(lo_q, hi_q), layers=(lo_l, hi_l))
    results = {}
    for kind in ("uniform", "mutation"):
        gens = stream(kind, space, args.pop, args.generations, np.random.default_rng(args.seed))
        results[kind] = run_stream(gens, args.backend, args.stream_budget, args.seed)
    print_part2(results, args.pop, args.generations, space, args.stream_budget)
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.1f} s (shared CPU: absolute figures are noisy)")


if __name__ == "__main__":
    main()
