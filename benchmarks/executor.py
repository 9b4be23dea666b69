"""Throughput of noisy hardware evaluation: batched PUBs through the async executor vs one job per sample.

One candidate circuit is transpiled once for a fake IBM device; ``--samples``
validation rows are evaluated with ``--shots`` shots each:

* ``naive``: a plain loop, one job per sample (bound parameters, one row),
  submitted and waited for one after another;
* ``executor, 1 row/job``: the same per-sample jobs through the executor
  (concurrency 4): what concurrency alone buys;
* ``executor, batched``: ``--chunk`` rows per job (one PUB with a parameter
  array), at concurrency 1, 4 and 16.

All modes go through the real backend (runtime local testing mode, Aer with
the snapshot's noise model); the executor modes also write the SQLite ledger
(a temp file, synchronous=FULL), so its overhead is included.  Figures are
circuits (parameter rows) per second, printed side by side.  Wall times on a
shared CPU are noisy: compare ratios within one run.

    python benchmarks/executor.py [--backend fake_kolkata] [--samples 64] [--shots 256] [--chunk 8] [--out FILE]
    python benchmarks/executor.py --samples 64 --shots 256 --chunk 8 --out benchmarks/results/executor.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from provenance import git_head, uncommitted_files

from qnas_hw.atomic_write import atomic_write_text
from qnas_hw.hardware.backends import SamplerPub, get_backend
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.jobs import AsyncExecutor, JobLedger, JobSpec, RetryPolicy
from qnas_hw.model.circuits import parameter_values
from qnas_hw.model.space import Architecture


def build(backend_name: str, samples: int, arch: Architecture, seed: int) -> tuple[object, np.ndarray]:
    backend = get_backend(backend_name)
    circuit = Transpiler(backend, seed=seed).transpile(arch).circuit
    rng = np.random.default_rng(seed)
    feats = rng.uniform(0, np.pi, (samples, arch.n_inputs))
    weights = rng.uniform(0, 2 * np.pi, arch.n_weights)
    return backend, (circuit, parameter_values(circuit, arch, feats, weights))


def naive(backend, circuit, values: np.ndarray, shots: int) -> float:
    t0 = time.perf_counter()
    for i, row in enumerate(values):
        backend.submit([SamplerPub(circuit, row[None, :])], shots, seed=i).counts()
    return time.perf_counter() - t0


def executor_run(backend, circuit, values: np.ndarray, shots: int, chunk: int, concurrency: int, tag: str) -> float:
    specs = [
        JobSpec((SamplerPub(circuit, values[s : s + chunk]),), shots, seed=s, label=f"{tag}-{s}")
        for s in range(0, len(values), chunk)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ledger = JobLedger(Path(tmp) / "ledger.db")
        policy = RetryPolicy(poll_interval_s=0.01)
        t0 = time.perf_counter()
        out = AsyncExecutor(backend, ledger, concurrency=concurrency, policy=policy).run_sync(specs)
        elapsed = time.perf_counter() - t0
        ledger.close()
    assert sum(len(o.counts[0]) for o in out) == len(values)
    return elapsed


def _machine() -> dict[str, Any]:
    """Versions and machine: a throughput figure means nothing without them."""
    import qiskit
    import qiskit_aer

    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "qiskit": qiskit.__version__,
        "qiskit_aer": qiskit_aer.__version__,
        "load_average_at_start": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="fake_kolkata")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--shots", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=8, help="rows per batched job")
    ap.add_argument("--arch", default="angle-y|q4|l2|ry-rz|ring|z")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="results JSON, rewritten after every mode")
    args = ap.parse_args(argv)
    arch = Architecture.parse(args.arch)
    t_start = time.perf_counter()
    backend, (circuit, values) = build(args.backend, args.samples, arch, args.seed)
    backend.submit([SamplerPub(circuit, values[:1])], args.shots, seed=0).counts()  # warm-up (imports, noise model)

    n = len(values)
    doc: dict[str, Any] = {
        "benchmark": "executor",
        "command": "python benchmarks/executor.py " + shlex.join(argv),
        "commit": git_head(),
        "uncommitted_changes": uncommitted_files(),
        "machine": _machine(),
        "backend": args.backend,
        "arch": arch.canonical(),
        "circuit_parameters": circuit.num_parameters,
        "transpiled_depth": circuit.depth(),
        "samples": n,
        "shots": args.shots,
        "chunk": args.chunk,
        "seconds": 0.0,
        "complete": False,
        "rows": [],
    }

    def record(mode: str, rows_per_job: int, jobs: int, conc: int, sec: float, complete: bool = False) -> None:
        base = doc["rows"][0]["seconds"] if doc["rows"] else sec
        doc["rows"].append(
            {
                "mode": mode,
                "rows_per_job": rows_per_job,
                "jobs": jobs,
                "concurrency": conc,
                "seconds": sec,
                "circuits_per_s": n / sec,
                "speedup": base / sec,
            }
        )
        doc["seconds"] = time.perf_counter() - t_start
        doc["complete"] = complete
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")

    record("naive loop, 1 job/sample", 1, n, 1, naive(backend, circuit, values, args.shots))
    record("executor, 1 row/job", 1, n, 4, executor_run(backend, circuit, values, args.shots, 1, 4, "single"))
    for conc in (1, 4, 16):
        sec = executor_run(backend, circuit, values, args.shots, args.chunk, conc, f"b{conc}")
        record(f"executor, batched {args.chunk} rows/job", args.chunk, -(-n // args.chunk), conc, sec)
    sec = executor_run(backend, circuit, values, args.shots, n, 1, "all")
    record("executor, one PUB of all rows", n, 1, 1, sec, complete=True)

    print(
        f"backend {args.backend}, {arch.canonical()} ({circuit.num_parameters} params, transpiled depth "
        f"{circuit.depth()}), {n} samples x {args.shots} shots"
    )
    print(f"{'mode':<36} {'jobs':>5} {'conc':>5} {'seconds':>9} {'circuits/s':>11} {'speedup':>8}")
    for r in doc["rows"]:
        print(
            f"{r['mode']:<36} {r['jobs']:>5} {r['concurrency']:>5} {r['seconds']:>9.2f} {r['circuits_per_s']:>11.1f} "
            f"{r['speedup']:>7.1f}x"
        )
    if args.out is not None:
        print(f"wrote {args.out}")
    return doc


if __name__ == "__main__":
    main()
