"""Search quality: our NSGA-II against Optuna's NSGA-II and random search, same evaluator and budget.

Per search seed, three searches of the same configuration (the README's
default main job unless ``--config`` names another), each in its own study:

* ``nsga2``: ``qnas-hw search`` itself (pymoo NSGA-II, mixed variables,
  duplicates eliminated against the whole study archive);
* ``optuna-nsga2``: Optuna's ``NSGAIISampler`` (same population size, same
  objectives, the same constraint values through ``Trial.set_constraint``) driving
  the same :class:`~qnas_hw.search.evaluator.CandidateEvaluator`;
* ``random``: distinct architectures drawn uniformly from the space.

The budget is the number of distinct architectures evaluated (pop_size x
generations); a proposal of an architecture already evaluated is answered
from the study and not counted, for Optuna as for us.  Every search trains
its own SuperCircuit with the same seed (identical weights), so an
architecture gets the same objective values whichever method proposes it.
Hypervolume is measured in the one fixed box the study derives from the
config (:func:`~qnas_hw.search.nsga.derive_box`), over every feasible record.

    python benchmarks/search_quality.py --seeds 0,1,2 --out benchmarks/results/search_quality.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from provenance import git_head, load_before_timing, uncommitted_files

from qnas_hw.jobs import StopRequest

METHODS = ("nsga2", "optuna-nsga2", "random")


def load(config_path: str | None, seed: int) -> Any:
    from qnas_hw.config import default_config, load_config, with_overrides

    base = load_config(Path(config_path)) if config_path else default_config()
    return with_overrides(base, seed=seed, **{"compute.threads": 1})


def budget_of(config: Any) -> int:
    return config.search.pop_size * config.search.generations


class CpuDeadline(StopRequest):
    """A :class:`qnas_hw.jobs.StopRequest` that also turns on after ``seconds`` of this process's CPU time: the
    equal budget of every method of a comparison (None: only an explicit request stops it).

    CPU time rather than wall-clock: on a shared machine another job's load would shrink whichever method ran
    while it did; on a quiet machine (one torch thread) the two agree.  NSGA-II reads it after each generation,
    random search and Optuna after each population-sized batch, so every method may finish the batch it began.
    """

    def __init__(self, seconds: float | None) -> None:
        super().__init__()
        self.end = None if seconds is None else time.process_time() + float(seconds)

    @property
    def stopping(self) -> bool:
        return super().stopping or (self.end is not None and time.process_time() >= self.end)


def run_random(config: Any, out: Path, deadline: CpuDeadline | None = None, cap: int | None = None) -> Any:
    """Distinct uniformly drawn architectures, a population-sized batch at a time, until ``cap`` (default
    pop_size x generations) or the ``deadline``."""
    from qnas_hw.search.nsga import prepare_search

    run = prepare_search(config, out)
    budget = cap or budget_of(config)
    rng = np.random.default_rng(config.seed + 7777)
    seen: dict[str, Any] = {}
    tries = 0
    while len(seen) < budget and tries < 100 * budget:
        arch = run.space.sample(rng)
        seen.setdefault(arch.key(), arch)
        tries += 1
    archs = list(seen.values())
    pop = config.search.pop_size
    for g in range(math.ceil(len(archs) / pop)):
        run.evaluator.evaluate_many(archs[g * pop : (g + 1) * pop], g)
        if deadline is not None and deadline.stopping:
            break
    return run.study


def run_optuna(config: Any, out: Path, deadline: CpuDeadline | None = None, cap: int | None = None) -> Any:
    """Optuna's NSGA-II asking for architectures one trial at a time; repeats are told the stored values.

    Stops at ``cap`` distinct architectures (default pop_size x generations), or at the ``deadline`` once a
    population-sized batch of distinct ones is complete."""
    import optuna

    from qnas_hw.model.space import Architecture
    from qnas_hw.search.nsga import prepare_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = prepare_search(config, out)
    space = run.space
    pop = config.search.pop_size
    sampler = optuna.samplers.NSGAIISampler(population_size=pop, seed=config.seed)  # constraints: set_constraint
    study = optuna.create_study(directions=["minimize"] * len(run.names), sampler=sampler)
    distinct: set[str] = set()
    budget = cap or budget_of(config)
    trials = 0
    while len(distinct) < budget and trials < 20 * budget:
        trial = study.ask()
        arch = Architecture(
            embedding=trial.suggest_categorical("embedding", list(space.embeddings)),
            n_qubits=trial.suggest_int("n_qubits", *space.qubits),
            n_layers=trial.suggest_int("n_layers", *space.layers),
            rotation=trial.suggest_categorical("rotation", list(space.rotations)),
            entangler=trial.suggest_categorical("entangler", list(space.entanglers)),
        )
        new = arch.key() not in distinct
        record, g = run.evaluator.evaluate(arch, len(distinct) // pop)
        distinct.add(arch.key())
        for name, value in zip(run.evaluator.constraints.names, g, strict=True):
            trial.set_constraint(name, float(value))
        study.tell(trial, run.evaluator.objective_vector(record))
        trials += 1
        if new and len(distinct) % pop == 0 and deadline is not None and deadline.stopping:
            break
    return run.study


def run_nsga2_until(config: Any, out: Path, deadline: CpuDeadline | None = None, cap: int | None = None) -> Any:
    """``qnas-hw search`` for ``ceil(cap / pop_size)`` generations, stopped after the generation in which the
    ``deadline`` passed (the study keeps every committed generation)."""
    from qnas_hw.config import with_overrides
    from qnas_hw.search.nsga import STUDY_FILE, run_search
    from qnas_hw.search.study import Study

    if cap is not None:
        config = with_overrides(config, **{"search.generations": max(1, math.ceil(cap / config.search.pop_size))})
    try:
        return run_search(config, out, progress=False, stop=deadline)
    except KeyboardInterrupt:  # the deadline: every finished generation is committed
        return Study.open(out / STUDY_FILE)


def measure(study: Any, config: Any) -> dict[str, Any]:
    """Final fixed-box hypervolume, best val_error after each evaluation, distinct evaluations."""
    from qnas_hw.search.pareto import HV_BOX_META, HypervolumeBox, archive_front, front_hypervolume

    names = study.objective_names
    box = HypervolumeBox.from_dict(study.meta_json(HV_BOX_META)).for_names(names)
    records = sorted(study.candidates(), key=lambda r: r.generation)  # evaluation order within a generation
    curve, best = [], math.inf
    for k, r in enumerate(records, start=1):
        if r.usable:
            best = min(best, float(r.objectives["val_error"]))
        curve.append([k, None if math.isinf(best) else best])
    hv = front_hypervolume(records, archive_front(records, names), names, box)
    return {
        "evaluations": len(records),
        "hypervolume": 0.0 if hv is None else hv,
        "best_val_error": None if math.isinf(best) else best,
        "best_val_error_curve": curve,
        "feasible": sum(r.usable for r in records),
        "box": box.to_dict(),
        "embeddings_on_front": sorted(records[i].arch.embedding for i in archive_front(records, names)),
    }


def ci95(values: list[float]) -> float:
    from scipy import stats

    if len(values) < 2:
        return math.nan
    return float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))


def summarise(rows: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """Mean hypervolume (95% t CI over seeds), best val_error and seconds per method."""
    summary = []
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        if not sel:
            continue
        hv = [r["hypervolume"] for r in sel]
        be = [r["best_val_error"] for r in sel if r["best_val_error"] is not None]
        summary.append(
            {
                "method": method,
                "hypervolume_mean": float(np.mean(hv)),
                "hypervolume_ci95": ci95(hv),
                "best_val_error_mean": float(np.mean(be)) if be else None,
                "seconds_mean": float(np.mean([r["seconds"] for r in sel])),
                "seeds": len(sel),
            }
        )
    return summary


def write(out: Path, rows: list[dict[str, Any]], methods: list[str], seconds: float, complete: bool) -> None:
    """Rewrite the results file after every search: a stopped run keeps what it measured."""
    import optuna
    import pymoo

    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": "python benchmarks/search_quality.py " + " ".join(sys.argv[1:]),
        "commit": git_head(),
        "uncommitted_changes": uncommitted_files(),
        "load_before_timing": load_before_timing(),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "optuna": optuna.__version__,
            "pymoo": pymoo.__version__,
        },
        "seconds": seconds,
        "complete": complete,
        "summary": summarise(rows, methods),
        "rows": rows,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)


RUNNERS = {"nsga2": run_nsga2_until, "optuna-nsga2": run_optuna, "random": run_random}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="a qnas-hw TOML config (default: the embedded default job)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in RUNNERS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    work = Path(tempfile.mkdtemp(prefix="qnas-search-quality-"))
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for seed in (int(s) for s in args.seeds.split(",")):
        for method in methods:
            config = load(args.config, seed)
            out = work / f"{method}-{seed}"
            t0 = time.perf_counter()
            study = RUNNERS[method](config, out)
            seconds = time.perf_counter() - t0
            row = {"method": method, "seed": seed, **measure(study, config), "seconds": seconds}
            study.close()
            rows.append(row)
            print(
                f"{method:<13} seed {seed}: {row['evaluations']} evaluations, HV {row['hypervolume']:.4f}, "
                f"best val_error {row['best_val_error']}, {seconds:.0f} s",
                flush=True,
            )
            if args.out is not None:
                write(args.out, rows, methods, time.perf_counter() - t_all, complete=False)
    print(f"\n{'method':<13} {'HV mean +- 95% CI':>22} {'best val_error':>15} {'seconds':>8}")
    for s in summarise(rows, methods):
        print(
            f"{s['method']:<13} {s['hypervolume_mean']:>12.4f} +- {s['hypervolume_ci95']:.4f} "
            f"{s['best_val_error_mean'] if s['best_val_error_mean'] is not None else float('nan'):>15.4f} "
            f"{s['seconds_mean']:>8.0f}"
        )
    if args.out is not None:
        write(args.out, rows, methods, time.perf_counter() - t_all, complete=True)


if __name__ == "__main__":
    main()
