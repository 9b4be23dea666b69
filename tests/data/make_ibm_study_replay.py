"""Write ``tests/data/ibm_study_usage_replay.json``: SYNTHETIC IBM usage of a device study's jobs, for a refit.

The companion of ``make_ibm_usage_replay.py`` (whose jobs are ``calibrate``'s
own design): the same device (``ibm_sherbrooke`` described by the offline
``FakeSherbrooke`` snapshot), the same KNOWN coefficients and noise model
(IBM's usage formula x (1 + 2% N(0, 1)), whole seconds), but the jobs a
device study sends: HQNN candidates of 2 to 8 qubits, 1 to 4 layers, their
validation samples as 8 to 64 parameter rows of 256 to 2,048 shots, and mthree
readout calibrations (two parameterless circuits per job).  ``tests/test_refit.py``
replays them through the real executor into a study's ledger and refits the
cost model on what the ledger kept (``qnas-hw calibrate --from-study``).

:func:`study_jobs` builds the jobs; the test calls it too, so both send the
same circuits, rows and shots (the replay refuses a job whose shots, PUBs,
rows or parameters differ from the recording).  Re-run this script after a
change to the jobs (``.venv/bin/python tests/data/make_ibm_study_replay.py``)
and commit the new JSON.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
from make_ibm_usage_replay import NOISE, NOISE_SEED, SNAPSHOT, TRUTH, usage_metrics
from qiskit import QuantumCircuit

from qnas_hw.hardware.backends import SamplerPub, get_backend
from qnas_hw.hardware.backends.base import Backend
from qnas_hw.hardware.cost import IBM_USAGE_GUIDE, pub_workloads
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.model.space import Architecture

OUT = Path(__file__).with_name("ibm_study_usage_replay.json")
DEVICE = "ibm_sherbrooke"
JOBS_SEED = 7  # which candidates, rows and shots
N_CANDIDATE_JOBS = 36
CALIBRATION_WIDTHS = (2, 3, 4, 5, 6, 8)  # one mthree readout calibration job per qubit count
START = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


def _readout_circuits(backend: Backend, width: int) -> list[QuantumCircuit]:
    """All-zeros and all-ones preparations on ``width`` qubits, measured: mthree's two calibration circuits.

    Transpiled by the backend directly: the noise-aware placement of a circuit without two-qubit gates tries
    every placement on 127 qubits (minutes), and a readout calibration's qubits do not change its usage.
    """
    out = []
    for ones in (False, True):
        qc = QuantumCircuit(width)
        if ones:
            qc.x(range(width))
        qc.measure_all()
        out.append(backend.transpile(qc, optimization_level=1, seed=0))
    return out


def study_jobs(backend: Backend) -> list[dict[str, Any]]:
    """The study's jobs in submission order: ``point`` (shape the replay checks), ``pubs``, ``shots``, ``kind``."""
    rng = np.random.default_rng(JOBS_SEED)
    transpiler = Transpiler(backend, optimization_level=1, seed=0)
    jobs = []
    for k in range(N_CANDIDATE_JOBS):
        arch = Architecture(
            str(rng.choice(["angle-x", "angle-y", "iqp"])),
            int(rng.choice([2, 3, 4, 5, 6, 8])),
            int(rng.choice([1, 2, 3, 4])),
            str(rng.choice(["ry", "ry-rz", "rx-ry-rz"])),
            str(rng.choice(["linear", "ring"])),
        )
        rows, shots = int(rng.choice([8, 16, 32, 64])), int(rng.choice([256, 512, 1024, 2048]))
        circ = transpiler.transpile(arch).circuit
        values = rng.uniform(0, 2 * np.pi, size=(rows, circ.num_parameters))
        jobs.append(
            {
                "kind": "candidate",
                "label": f"{arch.canonical()} chunk {k}",
                "pubs": [SamplerPub(circ, values)],
                "shots": shots,
                "arch": arch.canonical(),
            }
        )
    for width in CALIBRATION_WIDTHS:
        pubs = [SamplerPub(c) for c in _readout_circuits(backend, width)]
        jobs.append(
            {"kind": "readout-calibration", "label": f"readout calibration {width}q", "pubs": pubs, "shots": 1024}
        )
    order = rng.permutation(len(jobs))  # calibrations interleaved with candidates, as generations submit them
    out = []
    for i in order:
        job = jobs[int(i)]
        pubs = job["pubs"]
        job["point"] = {
            "shots": job["shots"],
            "pubs": len(pubs),
            "rows": pubs[0].rows,
            "heldout": False,  # the refit chooses its own held-out jobs
        }
        job["num_parameters"] = pubs[0].circuit.num_parameters
        out.append(job)
    return out


def main() -> None:
    backend = get_backend(SNAPSHOT)
    rng = np.random.default_rng(NOISE_SEED + 1)  # not the calibration replay's draws
    created = START
    records = []
    for k, job in enumerate(study_jobs(backend)):
        works = pub_workloads(backend, job["pubs"], job["shots"])
        executions = sum(w.shots_total for w in works)
        shot_time = sum(w.shots_total * (w.duration_s + w.rep_delay_s + w.init_s) for w in works)
        exact = TRUTH["per_job_s"] + TRUTH["per_circuit_s"] * sum(w.circuits for w in works)
        exact += TRUTH["duration_scale"] * shot_time
        noisy = exact * (1.0 + NOISE * rng.standard_normal())
        metrics, finished = usage_metrics(created, noisy)
        records.append(
            {
                "job_id": f"study{k:02d}d4k2sherbrooke",
                "kind": job["kind"],
                "label": job["label"],
                "point": job["point"],
                "num_parameters": job["num_parameters"],
                "workload": {
                    "pubs": [
                        {
                            "circuits": w.circuits,
                            "executions": w.shots_total,
                            "duration_s": w.duration_s,
                            "rep_delay_s": w.rep_delay_s,
                            "init_s": w.init_s,
                        }
                        for w in works
                    ],
                    "executions": executions,
                    "executions_x_shot_time_s": shot_time,
                },
                "usage_exact_s": exact,
                "usage_noisy_s": noisy,
                "metrics": metrics,
            }
        )
        created = finished + dt.timedelta(seconds=20)
    data = {
        "source": (
            "SYNTHETIC, not recorded from a device (no IBM account was available): the jobs of a device study "
            "(HQNN candidates' validation chunks and mthree readout calibrations) with metrics payloads in the shape "
            "described in ibm_usage_replay.json's source, usage from IBM's formula "
            f"({IBM_USAGE_GUIDE}) with the coefficients in 'truth' (those of ibm_usage_replay.json), times "
            f"(1 + {NOISE} x N(0, 1)) with numpy seed {NOISE_SEED + 1}, rounded to whole seconds; generated by "
            "tests/data/make_ibm_study_replay.py."
        ),
        "synthetic": True,
        "generator": "tests/data/make_ibm_study_replay.py",
        "device": DEVICE,
        "description_from": f"{SNAPSHOT} (qiskit-ibm-runtime FakeSherbrooke: target, durations, default_rep_delay)",
        "truth": TRUTH,
        "noise": {"relative_sd": NOISE, "seed": NOISE_SEED + 1, "rounding": "whole seconds (round half to even)"},
        "jobs": records,
    }
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT} ({len(records)} jobs)")


if __name__ == "__main__":
    main()
