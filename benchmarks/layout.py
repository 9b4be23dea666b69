"""Does noise-aware placement change what a candidate scores under the device's noise?

For each device and architecture: an HQNN trained from scratch (Iris,
exact simulator, seeded), then scored under the device's noise model
(:class:`qnas_hw.search.scoring.NoisyScorer`, mthree mitigation) twice: with the
transpiler's own placement (``layout = "default"``) and with the
highest-ESP placement (``"calibrated"``, the default).  Reported per pair:
the estimated success probability of each placement, validation accuracy
under noise, and the mean absolute error of the measured ``<Z_q>`` against
the exact ones (a finer figure than accuracy on 24 validation flowers).
The test split is not read.

    python benchmarks/layout.py --devices fake_quito,fake_kolkata,fake_torino --shots 4096 \\
        --out benchmarks/results/layout.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from provenance import git_head, load_before_timing

from qnas_hw.data import load_dataset
from qnas_hw.hardware.backends import get_backend
from qnas_hw.hardware.execution import ProgramBuilder
from qnas_hw.hardware.noise import NoisySimulator
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.model.hqnn import HQNN
from qnas_hw.model.space import Architecture
from qnas_hw.model.training import TrainConfig, train_model
from qnas_hw.search.scoring import NoisyScorer, model_inputs

ARCHS = (
    "angle-y|q4|l2|ry-rz|ring|z",
    "angle-x|q4|l2|rx-ry|linear|z",
    "angle-y|q5|l2|ry|linear|z",
    "iqp|q4|l1|ry|linear|z",
    "angle-y|q5|l3|ry-rz|sparse|z",
    "angle-x|q3|l2|ry|full|z",
)


def _commit() -> str:
    return git_head()


def measure(devices: list[str], shots: int, epochs: int, seed: int) -> list[dict[str, object]]:
    splits = load_dataset("iris", val_fraction=0.2, seed=seed)
    X, y = splits.val.tensors
    rows = []
    for text in ARCHS:
        arch = Architecture.parse(text)
        model = HQNN(arch, tuple(splits.input_shape), splits.n_classes, frontend="linear", seed=seed)
        train_model(model, splits, TrainConfig(epochs=epochs, batch_size=16, lr=5e-2, seed=seed))
        model.eval()
        inputs, weights = model_inputs(model, X)
        with torch.no_grad():
            exact = model.quantum(model.encode(X)).numpy()
            ideal_acc = float((model(X).argmax(-1) == y).float().mean())
        for name in devices:
            backend = get_backend(name)
            if arch.n_qubits > backend.num_qubits:
                continue
            simulator = NoisySimulator(backend)
            row: dict[str, object] = {"device": name, "architecture": text, "ideal_val_acc": ideal_acc}
            for layout in ("default", "calibrated"):
                builder = ProgramBuilder(backend, Transpiler(backend, seed=seed, layout=layout), None, shots)
                scorer = NoisyScorer(builder, simulator, mitigation=True, seed=seed)
                acc, details = scorer.score(arch, model, X, y)
                program = builder.build(arch)
                counts = simulator.run(
                    [
                        (r.circuit, v)
                        for r, v in zip(program.runs, program.parameter_values(inputs, weights), strict=True)
                    ],
                    [r.shots for r in program.runs],
                    seed=seed + 1,
                )
                qubits = sorted({q for r in program.runs for q in r.measured_qubits if q is not None})
                z = program.expectations(counts, inputs, scorer.mitigator(qubits))
                row[f"{layout}_layout"] = details["layout"]
                row[f"{layout}_esp"] = details["esp"]
                row[f"{layout}_val_acc"] = acc
                row[f"{layout}_z_error"] = float(np.abs(z - exact).mean())
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="fake_quito,fake_kolkata,fake_torino")
    ap.add_argument("--shots", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = measure(args.devices.split(","), args.shots, args.epochs, args.seed)
    seconds = time.perf_counter() - t0
    print(
        f"{'device':<13} {'architecture':<30} {'ESP def':>7} {'ESP cal':>7} {'acc def':>7} {'acc cal':>7} "
        f"{'|dZ| def':>8} {'|dZ| cal':>8}"
    )
    for r in rows:
        print(
            f"{r['device']:<13} {r['architecture']:<30} {r['default_esp']:>7.3f} {r['calibrated_esp']:>7.3f} "
            f"{r['default_val_acc']:>7.3f} {r['calibrated_val_acc']:>7.3f} {r['default_z_error']:>8.4f} "
            f"{r['calibrated_z_error']:>8.4f}"
        )
    summary = {}
    for device in sorted({str(r["device"]) for r in rows}):
        sel = [r for r in rows if r["device"] == device]
        summary[device] = {
            k: float(np.mean([float(r[k]) for r in sel]))  # type: ignore[arg-type]
            for k in (
                "default_esp",
                "calibrated_esp",
                "default_val_acc",
                "calibrated_val_acc",
                "default_z_error",
                "calibrated_z_error",
            )
        }
        s = summary[device]
        print(
            f"{device}: mean ESP {s['default_esp']:.3f} -> {s['calibrated_esp']:.3f}; mean val acc under noise "
            f"{s['default_val_acc']:.3f} -> {s['calibrated_val_acc']:.3f}; mean |<Z> error| "
            f"{s['default_z_error']:.4f} -> {s['calibrated_z_error']:.4f}"
        )
    print(f"wall time {seconds:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": "python benchmarks/layout.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out" and v is not None),
            "commit": _commit(),
            "load_before_timing": load_before_timing(),
            "machine": {"cores": torch.get_num_threads(), "platform": platform.platform()},
            "seconds": seconds,
            "summary": summary,
            "rows": rows,
        }
        args.out.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
