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

Part 3 (``--accuracy``): the accuracy objective's noisy scoring per candidate
by both simulators, side by side in one run: ``aer`` (the reference,
:class:`~qnas_hw.hardware.noise.NoisySimulator`: Aer's density matrix per
sample) and ``trajectories`` (:class:`~qnas_hw.hardware.trajectories.TrajectorySimulator`:
all samples batched in torch, exact density matrix up to 5 qubits, stratified
quantum trajectories beyond, the trajectory count chosen by its rule), both
with idle noise (ALAP).  Each row: build (transpile + noise-aware placement, or
cut plan + subexperiments), simulate, mitigate + decode (mthree and the head,
or the cut reconstruction), the readout calibration timed apart (once per
qubit set), the scored accuracy, and for the trajectory simulator where its
time went (compile / simulate / draw shots) and the trajectories it chose.
Cases: 4 qubits on ``fake_quito``; 8-qubit 2-layer ring and sparse on
``fake_kolkata``; 12-qubit 2-layer and 20-qubit 1-layer rings on the 133-qubit
``fake_torino`` (20 qubits at 64 samples); a cut candidate.  Beyond 10 qubits Aer
simulates every shot: it is timed on 1 sample x 32 shots and scaled (marked
``extrapolated_from``).  Goals (512 x 1024, 2 cores): 8q ring <= 1 s and >= 8x
Aer; 4q <= 0.2 s; 12q <= 3 s; 20q within memory, time stated.
``--idle-effect`` adds part 3b: what idle noise changes on two routed
candidates and one without routing (exact Aer <Z> with idle noise off, ALAP,
ASAP; the idle time per qubit; the error against the ideal <Z>).

Timings are wall-clock on whatever machine runs this (a shared, loaded CPU
in development): compare the columns of one run, not runs across machines.

    python benchmarks/objectives.py
    python benchmarks/objectives.py --n 32 --budgets 4,6 --extra-backjumps 1000 --pop 12 --generations 8
    python benchmarks/objectives.py --accuracy --samples 512 --shots 1024 --repeats 3 --idle-effect \
        --out benchmarks/results/objectives_accuracy.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from provenance import git_head, load_before_timing

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


#: Part 3 cases: (label, backend, architecture, qubit budget, samples: None = --samples)
ACCURACY_CASES: tuple[tuple[str, str, str, int, int | None], ...] = (
    ("4q on 5q device", "fake_quito", "angle-y|q4|l2|ry-rz|ring|z", 5, None),
    ("8q/2l ring (W8) on 27q", "fake_kolkata", "angle-y|q8|l2|ry-rz|ring|z", 8, None),
    ("8q/2l sparse on 27q", "fake_kolkata", "angle-y|q8|l2|ry|sparse|z", 8, None),
    ("12q/2l ring on 133q", "fake_torino", "angle-y|q12|l2|ry-rz|ring|z", 12, None),
    ("20q/1l ring on 133q", "fake_torino", "angle-y|q20|l1|ry-rz|ring|z", 20, 64),
    ("cut: 5q, 1 CNOT cut", "fake_kolkata", "angle-y|q5|l1|rx-ry|linear|z", 4, None),
)
#: Beyond Aer's density-matrix width it simulates every shot: timed on this many samples x shots, then scaled.
AER_WIDE_SAMPLES, AER_WIDE_SHOTS = 1, 32
#: Part 3b (``--idle-effect``): two candidates that routing fills with SWAPs (qubits wait for them) and one it leaves
IDLE_CASES: tuple[tuple[str, str, str], ...] = (
    ("8q/2l ring, routed (16 -> 54 CNOTs)", "fake_kolkata", "angle-y|q8|l2|ry-rz|ring|z"),
    ("6q/2l ring, routed (12 -> 35 CNOTs)", "fake_kolkata", "angle-y|q6|l2|ry|ring|z"),
    ("8q/2l sparse, no routing (7 CNOTs)", "fake_kolkata", "angle-y|q8|l2|ry|sparse|z"),
)


def _accuracy_inputs(arch: Architecture, samples: int, seed: int) -> tuple[Any, Any, Any]:
    import torch

    from qnas_hw.model.hqnn import HQNN

    rng = np.random.default_rng(seed)
    X = torch.as_tensor(rng.normal(size=(samples, arch.n_qubits)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, 3, size=samples))
    return HQNN(arch, (arch.n_qubits,), 3, frontend="linear", seed=seed).eval(), X, y


def _wide_aer(simulator: Any, builder: Any, arch: Architecture, model: Any, X: Any, samples: int, shots: int) -> float:
    """Aer's seconds for all samples x shots, scaled from AER_WIDE_SAMPLES x AER_WIDE_SHOTS (its cost is per shot)."""
    from qnas_hw.search.scoring import model_inputs

    program = builder.build(arch)
    inputs, weights = model_inputs(model, X[:AER_WIDE_SAMPLES])
    values = program.parameter_values(inputs, weights)
    t0 = time.perf_counter()
    simulator.run([(r.circuit, v) for r, v in zip(program.runs, values, strict=True)], AER_WIDE_SHOTS, 0)
    return (time.perf_counter() - t0) * (samples / AER_WIDE_SAMPLES) * (shots / AER_WIDE_SHOTS)


def _score_case(
    method: str,
    backend_name: str,
    arch: Architecture,
    budget: int,
    samples: int,
    shots: int,
    repeats: int,
    seed: int,
    idle: str | None = "alap",
) -> dict[str, Any]:
    """One method on one case: median seconds of build / simulate / mitigate+decode, calibration once, accuracy."""
    from qnas_hw.hardware.execution import ProgramBuilder
    from qnas_hw.hardware.noise import DM_MAX_QUBITS
    from qnas_hw.hardware.trajectories import make_noisy_simulator
    from qnas_hw.search.scoring import NoisyScorer, simulator_summary

    backend = get_backend(backend_name)
    model, X, y = _accuracy_inputs(arch, samples, seed)
    simulator = make_noisy_simulator(backend, method, idle, "cpu")
    planner = CutPlanner(budget, seed=seed, max_qubits=backend.num_qubits)
    builder = ProgramBuilder(backend, Transpiler(backend, seed=seed), planner, shots)
    program = builder.build(arch)
    active = max(len(run.record.physical_qubits) for run in program.runs)
    row: dict[str, Any] = {
        "method": method,
        "architecture": arch.canonical(),
        "backend": backend_name,
        "samples": samples,
        "shots": shots,
        "idle_noise": idle or "off",
        "active_qubits": active,
        "circuits_per_sample": program.circuits_per_row,
    }
    if method == "aer" and active > DM_MAX_QUBITS:  # per-shot statevectors: timed on a slice, scaled
        seconds = _wide_aer(simulator, builder, arch, model, X, samples, shots)
        extra = {"extrapolated_from": {"samples": AER_WIDE_SAMPLES, "shots": AER_WIDE_SHOTS}}
        return {**row, "total_s": seconds, "simulate_s": seconds, "accuracy": None, **extra}
    t0 = time.perf_counter()
    qubits = sorted({q for run in program.runs for q in run.measured_qubits if q is not None})
    calibrated = NoisyScorer(builder, simulator, mitigation=True, seed=seed)
    calibrated.mitigator(qubits)  # the readout calibration of the qubit set (device errors loaded here), once
    row["calibration_s"] = time.perf_counter() - t0
    parts: dict[str, list[float]] = {"build": [], "simulate": [], "mitigate_decode": [], "total": []}
    accs = []
    for r in range(repeats):
        fresh = ProgramBuilder(backend, Transpiler(backend, seed=seed), planner, shots)  # a new candidate each time
        scorer = NoisyScorer(fresh, simulator, mitigation=True, seed=seed + r)
        scorer._mitigators = calibrated._mitigators  # calibrations are shared by the candidates on those qubits
        t0 = time.perf_counter()
        acc, details = scorer.score(arch, model, X, y)
        parts["total"].append(time.perf_counter() - t0)
        for k in ("build", "simulate", "mitigate_decode"):
            parts[k].append(details["_timings"][k])
        accs.append(acc)
    row.update({f"{k}_s": float(np.median(v)) for k, v in parts.items()})
    row["accuracy"] = float(np.median(accs))
    row["simulator"] = simulator_summary(simulator)
    if method == "trajectories":
        stats = simulator.stats
        row["clusters"] = [c for s in stats for c in s.clusters][:4]
        row["stage_s"] = {
            k: float(sum(s.seconds.get(k, 0.0) for s in stats)) for k in ("compile", "simulate", "sample")
        }
    return row


def accuracy_timings(
    samples: int,
    shots: int,
    repeats: int,
    seed: int,
    cases: Sequence[str],
    on_row: Callable[[dict[str, Any]], None],
    idle: str | None = "alap",
    wide_samples: int | None = None,
) -> list[dict[str, Any]]:
    """Every case (label containing one of ``cases``; all if empty) by both methods, the Aer path first."""
    rows = []
    for label, backend_name, text, budget, n in ACCURACY_CASES:
        if cases and not any(c in label for c in cases):
            continue
        times = 1 if n else repeats  # a case with its own sample count (20q: 64) is timed once
        n = wide_samples if n and wide_samples else n
        for method in ("aer", "trajectories"):
            row = {
                "case": label,
                **_score_case(
                    method, backend_name, Architecture.parse(text), budget, n or samples, shots, times, seed, idle
                ),
            }
            rows.append(row)
            on_row(row)
    return rows


def _waiting(small: Any, dt: float) -> float:
    """Seconds qubits spend in delays after their first gate (a wait before it, in |0>, changes nothing)."""
    from qnas_hw.hardware.noise import delay_seconds

    started: set[int] = set()
    total = 0.0
    for inst in small.data:
        qs = [small.find_bit(q).index for q in inst.qubits]
        if inst.operation.name == "delay":
            total += delay_seconds(inst.operation, dt) if qs[0] in started else 0.0
        elif inst.operation.name != "barrier":
            started.update(qs)
    return total


def idle_effect(samples: int, seed: int) -> list[dict[str, Any]]:
    """What idle noise changes: exact (Aer density matrix) <Z> per sample with idle noise off, ALAP and ASAP.

    Per candidate: the idle time a schedule inserts (mean per active qubit),
    the mean |<Z>_idle - <Z>_off| it causes, and the mean |<Z>_noisy - <Z>_ideal|
    with and without it (how much of the device's error idling adds).
    """
    import torch

    from qnas_hw.hardware.execution import ProgramBuilder, circuit_values
    from qnas_hw.hardware.noise import NoisySimulator, idle_dt, prepare_circuit
    from qnas_hw.search.scoring import model_inputs

    out = []
    for label, backend_name, text in IDLE_CASES:
        backend = get_backend(backend_name)
        arch = Architecture.parse(text)
        model, X, _ = _accuracy_inputs(arch, samples, seed)
        run = ProgramBuilder(backend, Transpiler(backend, seed=seed), None, 1024).build(arch).runs[0]
        inputs, weights = model_inputs(model, X)
        values = circuit_values(run.circuit, inputs, weights)
        with torch.no_grad():
            ideal = model.quantum(model.encode(X)).double().numpy()
        row: dict[str, Any] = {"case": label, "backend": backend_name, "architecture": text, "samples": samples}
        z = {}
        for idle in (None, "alap", "asap"):
            t0 = time.perf_counter()
            probs = NoisySimulator(backend, idle_noise=idle).probabilities(run.circuit, values, readout=False)
            bits = (np.arange(probs.shape[1])[:, None] >> np.arange(arch.n_qubits)[None, :]) & 1
            z[idle] = probs @ (1.0 - 2.0 * bits)
            name = idle or "off"
            row[f"error_vs_ideal_{name}"] = float(np.abs(z[idle] - ideal).mean())
            row[f"aer_s_{name}"] = time.perf_counter() - t0
            if idle is not None:
                small, physical, _ = prepare_circuit(run.circuit, backend.target, idle)
                row[f"idle_us_per_qubit_{name}"] = 1e6 * _waiting(small, idle_dt(backend.target)) / len(physical)
                row[f"mean_abs_dz_{name}"] = float(np.abs(z[idle] - z[None]).mean())
        out.append(row)
    return out


def write_results(path: Path, payload: dict[str, Any], argv: Sequence[str] | None) -> None:
    """The results file, rewritten whole (called after every case, so a stopped run keeps what it measured)."""
    import json
    import os
    import platform
    import sys

    import qiskit
    import qiskit_aer
    import torch
    from provenance import uncommitted_files

    doc = {
        "command": "python benchmarks/objectives.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git_head(),
        "load_before_timing": load_before_timing(),
        "uncommitted_changes": uncommitted_files(),
        "machine": {
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "qiskit": qiskit.__version__,
            "qiskit_aer": qiskit_aer.__version__,
        },
        **payload,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def _fmt(value: Any, width: int, digits: int = 3) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def print_accuracy_row(r: dict[str, Any]) -> None:
    sim = r.get("simulator") or {}
    if r["method"] == "trajectories":
        c = max(r.get("clusters") or [{}], key=lambda c: c.get("qubits", 0))
        how = (
            f"{c.get('method', '?')}"
            + (
                f", T={c['trajectories']} (rule {c.get('rule_trajectories', '-')}, pilot SE ratio "
                f"{c.get('pilot_se_ratio', float('nan')):.2f}), P0={c['mean_p_no_jump']:.2f}, "
                f"{c['noisy_ops']} noisy ops"
                if c.get("method") == "trajectories"
                else ""
            )
            + "; stages "
            + ", ".join(f"{k} {v:.2f}" for k, v in (r.get("stage_s") or {}).items())
        )
    elif "extrapolated_from" in r:
        e = r["extrapolated_from"]
        how = f"per-shot statevectors: timed on {e['samples']} sample x {e['shots']} shots, scaled"
    else:
        how = "density matrix per sample" + (f" ({sim.get('simulator')})" if sim else "")
    acc = "-" if r.get("accuracy") is None else f"{100 * r['accuracy']:.1f}%"
    print(
        f"{r['case']:<24} {r['method']:<12} {r['samples']:>4} {r['active_qubits']:>3} {_fmt(r.get('total_s'), 8)} "
        f"{_fmt(r.get('build_s'), 7)} {_fmt(r.get('simulate_s'), 8)} {_fmt(r.get('mitigate_decode_s'), 8)} "
        f"{_fmt(r.get('calibration_s'), 7)} {acc:>6}  {how}",
        flush=True,
    )


def print_accuracy_header(samples: int, shots: int, idle: str) -> None:
    import torch

    print(
        f"\npart 3: noisy accuracy scoring per candidate, Aer vs batched trajectories, {samples} samples x {shots} "
        f"shots (20q: 64 samples), idle noise {idle}, median seconds; torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'case':<24} {'method':<12} {'smp':>4} {'q':>3} {'total':>8} {'build':>7} {'simulate':>8} {'mit/dec':>8} "
        f"{'cal':>7} {'acc':>6}  how"
    )


def print_speedups(rows: Sequence[dict[str, Any]]) -> None:
    print("\nspeed-up of the batched simulator over Aer in the same run (total seconds; simulation alone):")
    by_case: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault((r["case"], r.get("idle_noise", "alap")), {})[r["method"]] = r
    for (case, idle), m in by_case.items():
        a, t = m.get("aer"), m.get("trajectories")
        if a is None or t is None or not a.get("total_s") or not t.get("total_s"):
            continue
        note = " (Aer extrapolated)" if "extrapolated_from" in a else ""
        print(
            f"  {case:<24} idle {idle:<5} {a['total_s'] / t['total_s']:8.1f}x; "
            f"{a['simulate_s'] / t['simulate_s']:8.1f}x{note}"
        )


def print_idle(rows: Sequence[dict[str, Any]]) -> None:
    print("\npart 3b: what idle noise changes (Aer density matrix, exact <Z>, mean over samples and qubits)")
    print(
        f"{'case':<38} {'idle us/qubit ALAP':>18} {'ASAP':>6} {'|dZ| ALAP':>10} {'ASAP':>7} "
        f"{'|Z-ideal| off':>13} {'ALAP':>7} {'ASAP':>7}"
    )
    for r in rows:
        print(
            f"{r['case']:<38} {r['idle_us_per_qubit_alap']:>18.2f} {r['idle_us_per_qubit_asap']:>6.2f} "
            f"{r['mean_abs_dz_alap']:>10.4f} {r['mean_abs_dz_asap']:>7.4f} {r['error_vs_ideal_off']:>13.4f} "
            f"{r['error_vs_ideal_alap']:>7.4f} {r['error_vs_ideal_asap']:>7.4f}"
        )


def run_accuracy(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    """Part 3 (and 3b): prints each row as it is measured and rewrites ``--out`` after each."""
    t0 = time.perf_counter()
    payload: dict[str, Any] = {"rows": [], "idle_effect": [], "complete": False}
    if args.append and args.out is not None and args.out.exists():  # add cases to an earlier run's file
        import json

        earlier = json.loads(args.out.read_text())
        payload["rows"] = list(earlier.get("rows", []))
        payload["idle_effect"] = list(earlier.get("idle_effect", []))
        payload["earlier_runs"] = [
            *earlier.get("earlier_runs", []),
            {k: earlier.get(k) for k in ("command", "commit", "seconds", "complete")},
        ]

    def save() -> None:
        payload["seconds"] = time.perf_counter() - t0
        if args.out is not None:
            write_results(args.out, payload, argv)

    def on_row(row: dict[str, Any]) -> None:
        payload["rows"].append(row)
        print_accuracy_row(row)
        save()

    cases = [c for c in args.cases.split(",") if c]
    print_accuracy_header(args.samples, args.shots, args.idle)
    idle = None if args.idle == "off" else args.idle
    accuracy_timings(args.samples, args.shots, args.repeats, args.seed, cases, on_row, idle, args.wide_samples)
    print_speedups(payload["rows"])
    if args.idle_effect:
        payload["idle_effect"] = idle_effect(args.idle_samples, args.seed)
        print_idle(payload["idle_effect"])
    payload["complete"] = True
    save()
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.1f} s")


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
    ap.add_argument("--accuracy", action="store_true", help="part 3 only: noisy scoring, Aer vs batched trajectories")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--shots", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default="", help="part 3: comma-separated substrings of the case labels to run")
    ap.add_argument("--idle", choices=("alap", "asap", "off"), default="alap", help="part 3: idle noise of both paths")
    ap.add_argument("--idle-effect", action="store_true", help="part 3: also measure what idle noise changes")
    ap.add_argument("--wide-samples", type=int, default=None, help="part 3: samples of the 20q case (default 64)")
    ap.add_argument("--idle-samples", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None, help="part 3: also write the figures as JSON here")
    ap.add_argument("--append", action="store_true", help="part 3: keep the rows already in --out, add these")
    args = ap.parse_args(argv)
    if args.accuracy:
        run_accuracy(args, argv)
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
