"""``python benchmarks/simulator.py --device cuda``: the simulator on the GPU, the CPU and a naive einsum simulator.

Kept apart from ``simulator.py`` (which imports it for ``--device cuda``) so the
CPU benchmark stays as it was; both take the workloads and the training step
from ``simulator_workloads.py``.  See ``simulator.py``'s docstring for what is
measured and when a size is skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from provenance import git_head
from reference_simulator import ReferenceSimulator
from simulator_workloads import make_step, workload_arch

from qnas_hw.model.memory import SimulationMemoryError, available_bytes
from qnas_hw.model.simulator import SimulatorPlan

#: Fraction of the free memory a configuration may plan to use (the rest: allocator slack, the other tensors).
_HEADROOM = 0.85
#: Samples on which the implementations' <Z> and gradients are compared.
_AGREE_SAMPLES = 64


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], None], device: torch.device, repeats: int, slow: float) -> dict[str, Any]:
    """Median/min wall seconds per step after a warm-up; a warm-up slower than ``slow`` is the (only) timing."""
    t0 = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - t0
    if first > slow:
        return {"median": first, "min": first, "steps": 1, "note": f"one step only (warm-up took {first:.1f} s)"}
    step()
    _sync(device)
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        walls.append(time.perf_counter() - t0)
    return {"median": statistics.median(walls), "min": min(walls), "steps": repeats}


def _fits(need: int, device: torch.device) -> str | None:
    """Why ``need`` bytes do not fit on ``device`` (None when they do)."""
    free = available_bytes(device)
    if free is not None and need > _HEADROOM * free:
        return f"needs ~{_gib(need)}, {_gib(free)} free on {device.type}"
    return None


def _inputs(arch: Any, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, arch.n_inputs, generator=gen) * math.pi
    w = torch.rand(arch.n_weights, generator=gen) * 2 * math.pi
    target = torch.rand(batch, arch.n_qubits, generator=gen) * 2 - 1
    return x.to(device).requires_grad_(), w.to(device).requires_grad_(), target.to(device)


def _outputs(forward: Callable, arch: Any, device: torch.device) -> list[torch.Tensor]:
    """<Z>, dL/dx and dL/dw on the first samples (the same inputs whatever the device), on the CPU in float64."""
    x, w, target = _inputs(arch, _AGREE_SAMPLES, device)
    z = forward(x, w)
    torch.nn.functional.mse_loss(z, target).backward()
    return [t.detach().double().cpu() for t in (z, x.grad, w.grad)]


def _max_diff(a: list[torch.Tensor] | None, b: list[torch.Tensor] | None) -> float | None:
    if a is None or b is None:
        return None
    return max(float((p - q).abs().max()) for p, q in zip(a, b, strict=True))


def _one(
    forward: Callable, arch: Any, batch: int, device: torch.device, need: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Time one implementation at one size, or say why it was skipped."""
    why = _fits(need, device)
    if why is not None:
        return {"skipped": why}
    if device.type == "cpu" and batch * 2**arch.n_qubits > 2**args.cpu_max_log2:
        return {"skipped": f"batch x 2**qubits > 2**{args.cpu_max_log2}: a CPU step would take minutes"}
    x, w, target = _inputs(arch, batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        out = timed(make_step(forward, x, w, target), device, args.repeats, args.slow_step)
    except (torch.cuda.OutOfMemoryError, SimulationMemoryError) as exc:  # say so rather than stop the run
        return {"skipped": f"out of memory (estimate {_gib(need)}): {str(exc).splitlines()[0]}"}
    out["estimate_bytes"] = need
    if device.type == "cuda":
        out["peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
    del x, w, target
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def measure(arch_name: str, batch: int, args: argparse.Namespace, gpu: torch.device) -> dict[str, Any]:
    arch = workload_arch(arch_name)
    cpu = torch.device("cpu")
    plan_gpu = SimulatorPlan(arch).to(gpu)
    plan_cpu = SimulatorPlan(arch)
    reference = ReferenceSimulator(arch)
    row: dict[str, Any] = {"workload": arch_name, "qubits": arch.n_qubits, "layers": arch.n_layers, "batch": batch}
    row["cuda"] = _one(plan_gpu.expectations, arch, batch, gpu, plan_gpu.estimate_bytes(batch), args)
    row["cpu"] = _one(plan_cpu.expectations, arch, batch, cpu, plan_cpu.estimate_bytes(batch), args)
    row["reference_cuda"] = _one(reference.expectations, arch, batch, gpu, reference.estimate_bytes(batch), args)
    for other in ("cpu", "reference_cuda"):
        if "median" in row["cuda"] and "median" in row[other]:
            row[f"{other}_over_cuda"] = row[other]["median"] / row["cuda"]["median"]
    agree: dict[str, list[torch.Tensor] | None] = {}
    for name, forward, device, need in (
        ("cuda", plan_gpu.expectations, gpu, plan_gpu.estimate_bytes(_AGREE_SAMPLES)),
        ("cpu", plan_cpu.expectations, cpu, plan_cpu.estimate_bytes(_AGREE_SAMPLES)),
        ("reference_cuda", reference.expectations, gpu, reference.estimate_bytes(_AGREE_SAMPLES)),
    ):
        try:
            agree[name] = _outputs(forward, arch, device) if _fits(need, device) is None else None
        except (torch.cuda.OutOfMemoryError, SimulationMemoryError):
            agree[name] = None
    row["max_abs_diff_cuda_vs_cpu"] = _max_diff(agree["cuda"], agree["cpu"])
    row["max_abs_diff_cuda_vs_reference"] = _max_diff(agree["cuda"], agree["reference_cuda"])
    return row


def _cell(entry: dict[str, Any]) -> str:
    if "median" in entry:
        return f"{entry['median'] * 1e3:10.1f}" + ("*" if entry.get("steps") == 1 else " ")
    return f"{'skip':>10} "


def print_row(row: dict[str, Any]) -> None:
    ratio = row.get("cpu_over_cuda")
    ref = row.get("reference_cuda_over_cuda")
    diff = row.get("max_abs_diff_cuda_vs_cpu")
    peak = row["cuda"].get("peak_bytes")
    print(
        f"{row['workload']:<5} {row['batch']:>6} {_cell(row['cuda'])} {_cell(row['cpu'])}"
        f" {_cell(row['reference_cuda'])}"
        f" {'-' if ratio is None else f'{ratio:.1f}':>8} {'-' if ref is None else f'{ref:.1f}':>8}"
        f" {'-' if diff is None else f'{diff:.1e}':>9}"
        f" {'-' if peak is None else _gib(peak):>9} {_gib(row['cuda'].get('estimate_bytes', 0)) if peak else '':>9}",
        flush=True,
    )
    for kind in ("cuda", "cpu", "reference_cuda"):
        if "skipped" in row[kind]:
            print(f"      {kind}: skipped ({row[kind]['skipped']})")


def machine(gpu: torch.device) -> dict[str, Any]:
    props = torch.cuda.get_device_properties(gpu)
    return {
        "gpu": torch.cuda.get_device_name(gpu),
        "gpu_memory_bytes": int(props.total_memory),
        "gpu_capability": list(torch.cuda.get_device_capability(gpu)),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "platform": platform.platform(),
    }


def _commit(given: str | None) -> str:
    if given:
        return given
    return git_head(missing="unknown (no git checkout here: pass --commit)")


def run_cuda(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        build = "" if torch.version.cuda else " (this torch build has no CUDA support)"
        raise SystemExit(
            f"--device cuda needs a CUDA device, and torch {torch.__version__} sees none{build}; run this on a GPU "
            "machine, or use --device cpu (the default)"
        )
    gpu = torch.device("cuda", torch.cuda.current_device())
    repeats = 5 if args.repeats is None else args.repeats
    args.repeats = repeats
    info = machine(gpu)
    print(
        f"{info['gpu']} ({_gib(info['gpu_memory_bytes'])}), torch {info['torch']} (CUDA {info['cuda']}), "
        f"CPU side: {info['cpu_threads']} threads; repeats {repeats}"
    )
    print("ms per forward+backward step (* = one step only); ratios = time / GPU time; diff on 64 samples")
    print(
        f"{'work':<5} {'batch':>6} {'GPU ms':>11} {'CPU ms':>11} {'einsum ms':>11} {'CPU/GPU':>8} {'ein/GPU':>8} "
        f"{'max|diff|':>9} {'GPU peak':>9} {'estimate':>9}"
    )
    t0 = time.perf_counter()
    rows = []
    for name in args.workloads.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            if time.perf_counter() - t0 > args.time_limit:
                rows.append({"workload": name, "batch": batch, "skipped": f"--time-limit {args.time_limit:g} s spent"})
                print(f"{name:<5} {batch:>6} skipped: time limit")
                continue
            row = measure(name, batch, args, gpu)
            rows.append(row)
            print_row(row)
    seconds = time.perf_counter() - t0
    payload = {
        "command": "python benchmarks/simulator.py " + " ".join(sys.argv[1:]),
        "commit": _commit(args.commit),
        "machine": info,
        "workloads": "angle-y embedding, L layers of (RY, RZ) per qubit + CNOT ring, <Z> on every qubit, MSE loss, "
        "one forward+backward with gradients for weights and inputs, float32 (complex64 state)",
        "seconds": seconds,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
    print(f"\n{seconds:.0f} s; wrote {args.out}")
