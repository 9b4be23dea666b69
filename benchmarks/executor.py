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

    python benchmarks/executor.py [--backend fake_kolkata] [--samples 64] [--shots 256] [--chunk 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="fake_kolkata")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--shots", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=8, help="rows per batched job")
    ap.add_argument("--arch", default="angle-y|q4|l2|ry-rz|ring|z")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    arch = Architecture.parse(args.arch)
    backend, (circuit, values) = build(args.backend, args.samples, arch, args.seed)
    backend.submit([SamplerPub(circuit, values[:1])], args.shots, seed=0).counts()  # warm-up (imports, noise model)

    n = len(values)
    rows: list[tuple[str, int, int, float]] = [
        ("naive loop, 1 job/sample", n, 1, naive(backend, circuit, values, args.shots))
    ]
    rows.append(("executor, 1 row/job", n, 4, executor_run(backend, circuit, values, args.shots, 1, 4, "single")))
    for conc in (1, 4, 16):
        jobs = -(-n // args.chunk)
        rows.append(
            (
                f"executor, batched {args.chunk} rows/job",
                jobs,
                conc,
                executor_run(backend, circuit, values, args.shots, args.chunk, conc, f"b{conc}"),
            )
        )
    jobs = 1
    rows.append(
        ("executor, one PUB of all rows", jobs, 1, executor_run(backend, circuit, values, args.shots, n, 1, "all"))
    )

    base = rows[0][3]
    print(
        f"backend {args.backend}, {arch.canonical()} ({circuit.num_parameters} params, transpiled depth "
        f"{circuit.depth()}), {n} samples x {args.shots} shots"
    )
    print(f"{'mode':<36} {'jobs':>5} {'conc':>5} {'seconds':>9} {'circuits/s':>11} {'speedup':>8}")
    for mode, jobs, conc, sec in rows:
        print(f"{mode:<36} {jobs:>5} {conc:>5} {sec:>9.2f} {n / sec:>11.1f} {base / sec:>7.1f}x")


if __name__ == "__main__":
    main()
