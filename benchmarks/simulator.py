"""Forward+backward speed of the torch simulator, side by side with PennyLane and the memory-bandwidth floor.

Usage::

    python benchmarks/simulator.py [--threads N[,N...]] [--repeats R] [--batch 256] [--workloads W8,W10,W12,W8x4]
                                   [--no-pennylane] [--chunk K] [--anchors PATH] [--baseline FILE] [--out FILE]
    python benchmarks/simulator.py --threads 1,2 --pennylane-repeats 5 --out benchmarks/results/simulator.json
    python benchmarks/simulator.py --device cuda [--workloads W8,W12,W16,W20] [--batches 256,16384]
                                   [--repeats 5] [--time-limit 420] [--out benchmarks/results/simulator_cuda.json]

``--baseline FILE`` times another version of ``qnas_hw/model/simulator.py`` side by side (steps
interleaved, so both see the same machine load), e.g.
``git show REV:qnas_hw/model/simulator.py > /tmp/sim_old.py`` (``qnas_hw/simulator.py`` before the
package move) then ``--baseline /tmp/sim_old.py``.

Workloads (as in shared/notes/simulator-anchors.md): batch 256, RY angle embedding, L layers of
trainable (RY, RZ) per qubit + CNOT ring, <Z> on every qubit, MSE loss, one forward+backward with
gradients for weights and inputs. W8 = 8 qubits 2 layers, W10, W12, W8x4 = 8 qubits 4 layers.

``--device cuda`` (a GPU machine; refused clearly without one) times W8, W12, W16 and W20
(W16/W20: 16/20 qubits, 2 layers) at batches 256 and 16,384 on the GPU side by side with the same
plan on the CPU and with a naive per-gate einsum simulator on the GPU
(``benchmarks/reference_simulator.py``), checks that they agree (<Z> and gradients on 64 samples),
records the GPU's peak memory against the plan's own estimate, and writes
``benchmarks/results/simulator_cuda.json`` (command, commit, machine and GPU, torch, per-size
timings and ratios).  A size is skipped, with the reason in the table and the file, when its
estimated memory does not fit the device, when a CPU step would take minutes (``--cpu-max-log2``:
batch x 2**qubits above 2**28), or when ``--time-limit`` is spent; a single step slower than
``--slow-step`` seconds is reported as that one step.  The default run fits a 10-minute session.

Timings on a shared CPU are noisy: the table prints the median and the minimum wall time and the
process CPU time per step (CPU time is what the step costs when other processes preempt it).
glibc returns multi-MiB tensors to the OS every step; running with
``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296`` set avoids that (report both).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from provenance import git_head, uncommitted_files
from simulator_workloads import make_step, workload_arch

from qnas_hw.atomic_write import atomic_write_text
from qnas_hw.model.circuits import gate_program
from qnas_hw.model.simulator import DEFAULT_CHUNK, SimulatorPlan
from qnas_hw.model.space import Architecture

CPU_WORKLOADS = "W8,W10,W12,W8x4"
CUDA_WORKLOADS = "W8,W12,W16,W20"
CUDA_RESULTS = Path(__file__).resolve().parent / "results" / "simulator_cuda.json"
DEFAULT_ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "notes" / "simulator-anchors.md"


def time_steps(step: Callable[[], None], repeats: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        step()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"median": statistics.median(wall), "min": min(wall), "cpu": statistics.median(cpu)}


def time_interleaved(steps: dict[str, Callable[[], None]], repeats: int, warmup: int = 3) -> dict[str, dict]:
    """Like :func:`time_steps` for several implementations, alternating them step by step."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    walls: dict[str, list[float]] = {k: [] for k in steps}
    cpus: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for key, step in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            walls[key].append(time.perf_counter() - t0)
            cpus[key].append(time.process_time() - c0)
    return {
        k: {"median": statistics.median(walls[k]), "min": min(walls[k]), "cpu": statistics.median(cpus[k])}
        for k in steps
    }


def load_baseline(path: Path):
    """Import another simulator.py version under a private module name."""
    spec = importlib.util.spec_from_file_location("baseline_simulator", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import baseline simulator from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def gradients(forward, x, w, target) -> tuple[torch.Tensor, torch.Tensor]:
    x.grad = w.grad = None
    torch.nn.functional.mse_loss(forward(x, w), target).backward()
    return x.grad.clone(), w.grad.clone()


def pennylane_forward(arch: Architecture) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The same circuit in PennyLane default.qubit (torch interface, backprop, parameter broadcasting)."""
    try:
        import pennylane as qml
    except ImportError:
        return None
    n, layers = arch.n_qubits, arch.n_layers
    dev = qml.device("default.qubit", wires=n)

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(x, w):
        for q in range(n):
            qml.RY(x[:, q], wires=q)
        for layer in range(layers):
            for q in range(n):
                qml.RY(w[(layer * n + q) * 2], wires=q)
                qml.RZ(w[(layer * n + q) * 2 + 1], wires=q)
            for q in range(n):
                qml.CNOT(wires=[q, (q + 1) % n])
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]

    return lambda x, w: torch.stack(circuit(x, w), -1).to(x.dtype)


def measure_bandwidth(mib: int = 512, repeats: int = 5) -> float:
    """Bytes/s of a large torch copy (read + write counted), the memory floor's denominator."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * src.numel() * 4 / best


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bandwidth_floor(arch: Architecture, batch: int, bandwidth: float) -> float:
    """Seconds a naive gate-by-gate simulator needs just to stream the state.

    Every gate reads and writes the complex64 state once forward and once backward
    (4 state sizes); fused kernels whose state stays in cache can beat this floor.
    """
    state_bytes = 2**arch.n_qubits * batch * 8
    return len(gate_program(arch)) * 4 * state_bytes / bandwidth


def print_anchors(path: Path) -> None:
    if not path.exists():
        print(f"(anchors file {path} not found; pass --anchors)")
        return
    print(f"\nAnchors from {path} (median ms/step, their 2-core machine, 2 threads):")
    for line in path.read_text().splitlines():
        if line.startswith("|") and "---" not in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            print(f"  {cells[0][:70]:<70} " + " ".join(f"{c:>8}" for c in cells[1:]))


def _cpu_machine() -> dict[str, Any]:
    """Versions and machine of a CPU run: timings mean nothing without them."""
    try:
        import pennylane as qml

        pennylane_version: str | None = qml.__version__
    except ImportError:
        pennylane_version = None
    return {
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pennylane": pennylane_version,
        "allocator": "tuned" if "MALLOC_MMAP_THRESHOLD_" in os.environ else "default",
    }


def run_cpu_pass(args: argparse.Namespace, baseline, have_pl: bool, record: Callable[[dict], None]) -> float:
    """One pass over the workloads at the current thread count; each row goes to ``record`` as it is measured."""
    tuned = "MALLOC_MMAP_THRESHOLD_" in os.environ
    print(
        f"\ntorch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
        f"repeats {args.repeats}, chunk {args.chunk}, allocator {'tuned' if tuned else 'default'}"
    )
    bandwidth = measure_bandwidth()
    print(f"memory bandwidth (1 large copy, read+write): {bandwidth / 1e9:.1f} GB/s")
    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    header = (
        f"{'workload':<8} {'ms/step':>8} {'min':>7} {'cpu ms':>7} {'samples/s':>10} {'floor ms':>9} {'/floor':>7}"
        + (f" | {'base ms':>8} {'base/ours':>9} {'grad diff':>9}" if baseline else "")
        + f" | {'PL ms':>8} {'PL/ours':>8} {'max|diff|':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in args.workloads.split(","):
        arch = workload_arch(name)
        gen = torch.Generator().manual_seed(0)
        x = (torch.rand(args.batch, arch.n_inputs, generator=gen) * math.pi).requires_grad_()
        w = (torch.rand(arch.n_weights, generator=gen) * 2 * math.pi).requires_grad_()
        target = torch.rand(args.batch, arch.n_qubits, generator=gen) * 2 - 1
        plan = SimulatorPlan(arch, chunk=args.chunk)
        steps = {"ours": make_step(plan.expectations, x, w, target)}
        if baseline is not None:
            base_plan = baseline.SimulatorPlan(arch, chunk=args.chunk)
            steps["base"] = make_step(base_plan.expectations, x, w, target)
        timed = time_interleaved(steps, args.repeats)
        ours = timed["ours"]
        floor = bandwidth_floor(arch, args.batch, bandwidth)
        row: dict[str, Any] = {
            "threads": torch.get_num_threads(),
            "workload": name,
            "qubits": arch.n_qubits,
            "layers": arch.n_layers,
            "batch": args.batch,
            "ms_median": ours["median"] * 1e3,
            "ms_min": ours["min"] * 1e3,
            "cpu_ms": ours["cpu"] * 1e3,
            "samples_per_s": args.batch / ours["median"],
            "floor_ms": floor * 1e3,
            "over_floor": ours["median"] / floor,
            "bandwidth_gb_s": bandwidth / 1e9,
        }
        line = (
            f"{name:<8} {ours['median'] * 1e3:8.2f} {ours['min'] * 1e3:7.2f} {ours['cpu'] * 1e3:7.2f} "
            f"{args.batch / ours['median']:10.0f} {floor * 1e3:9.2f} {ours['median'] / floor:7.2f}"
        )
        if baseline is not None:
            base = timed["base"]
            mine, theirs = gradients(plan.expectations, x, w, target), gradients(base_plan.expectations, x, w, target)
            gdiff = max((a - b).abs().max().item() for a, b in zip(mine, theirs, strict=True))
            line += f" | {base['median'] * 1e3:8.2f} {base['median'] / ours['median']:9.2f} {gdiff:9.1e}"
            row.update(baseline_ms=base["median"] * 1e3, baseline_grad_diff=gdiff)
        if have_pl:
            pl_forward = pennylane_forward(arch)
            assert pl_forward is not None
            with torch.no_grad():
                diff = (pl_forward(x, w) - plan.expectations(x, w)).abs().max().item()
            pl = time_steps(make_step(pl_forward, x, w, target), args.pennylane_repeats, warmup=1)
            line += f" | {pl['median'] * 1e3:8.2f} {pl['median'] / ours['median']:8.1f} {diff:9.1e}"
            row.update(
                pennylane_ms=pl["median"] * 1e3,
                pennylane_min_ms=pl["min"] * 1e3,
                pennylane_ratio=pl["median"] / ours["median"],
                pennylane_max_abs_diff=diff,
            )
        else:
            line += " | (pennylane not installed: pip install qnas-hw[pennylane])" if not args.no_pennylane else ""
        print(line, flush=True)
        record(row)
    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    return bandwidth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: GPU vs CPU vs naive einsum")
    parser.add_argument(
        "--threads", default=None, help="torch threads; cpu: a comma list (1,2) times every workload at each"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 20 on cpu, 5 on cuda)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", default="256,16384", help="cuda: batch sizes")
    parser.add_argument("--workloads", default=None, help=f"default {CPU_WORKLOADS} (cpu), {CUDA_WORKLOADS} (cuda)")
    parser.add_argument("--time-limit", type=float, default=420.0, help="cuda: seconds before the rest is skipped")
    parser.add_argument("--slow-step", type=float, default=5.0, help="cuda: a slower warm-up step is the timing")
    parser.add_argument("--cpu-max-log2", type=int, default=28, help="cuda: CPU side only if batch*2**n <= 2**this")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"results JSON (cuda default {CUDA_RESULTS.name}; cpu: none unless given)",
    )
    parser.add_argument("--commit", default=None, help="cuda: commit to record (default: git rev-parse HEAD)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="Kronecker chunk width (qubits)")
    parser.add_argument("--no-pennylane", action="store_true")
    parser.add_argument("--pennylane-repeats", type=int, default=5)
    parser.add_argument("--anchors", type=Path, default=DEFAULT_ANCHORS)
    parser.add_argument("--baseline", type=Path, default=None, help="another simulator.py to time side by side")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else [None]
    if args.device == "cuda":
        from simulator_cuda import run_cuda  # the sibling module (benchmarks/ is the script's directory)

        if thread_counts[0]:
            torch.set_num_threads(thread_counts[0])
        if args.workloads is None:
            args.workloads = CUDA_WORKLOADS
        if args.out is None:
            args.out = CUDA_RESULTS
        run_cuda(args)
        return
    if args.workloads is None:
        args.workloads = CPU_WORKLOADS
    if args.repeats is None:
        args.repeats = 20
    baseline = load_baseline(args.baseline) if args.baseline else None
    have_pl = not args.no_pennylane and pennylane_forward(workload_arch("W8")) is not None
    t0 = time.perf_counter()
    doc: dict[str, Any] = {
        "benchmark": "simulator",
        "command": "python benchmarks/simulator.py " + shlex.join(sys.argv[1:]),
        "commit": git_head(),
        "uncommitted_changes": uncommitted_files(),
        "machine": _cpu_machine(),
        "load_average_at_start": list(os.getloadavg()),
        "workloads": "angle-y embedding, L layers of (RY, RZ) per qubit + CNOT ring, <Z> on every qubit, MSE loss, "
        "one forward+backward with gradients for weights and inputs, float32 (complex64 state); PennyLane: "
        "default.qubit, torch interface, backprop, parameter broadcasting, the same circuit",
        "repeats": args.repeats,
        "pennylane_repeats": args.pennylane_repeats if have_pl else None,
        "seconds": 0.0,
        "complete": False,
        "rows": [],
    }

    def record(row: dict | None = None, complete: bool = False) -> None:
        if row is not None:
            doc["rows"].append(row)
        if args.out is None:
            return
        doc["seconds"] = time.perf_counter() - t0
        doc["complete"] = complete
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")

    for threads in thread_counts:
        if threads:
            torch.set_num_threads(threads)
        run_cpu_pass(args, baseline, have_pl, record)
    record(complete=True)
    if args.out is not None:
        print(f"wrote {args.out}")
    print_anchors(args.anchors)


if __name__ == "__main__":
    main()
