"""The embedded default job has a real trade-off: >= 3 front points, >= 2 subcircuit counts, runtimes apart.

A small run of the default job (``qnas-hw search`` with no config): the same
data, device, budget, training and accuracy mode, with the space narrowed to
one embedding, rotation and entangler so 12 evaluations cover it.  The full
default run (59 candidates, about 160 s on 2 cores) gives the same 3-point
shape; see the README.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from qnas_hw.config import default_config, with_overrides
from qnas_hw.reports.data import analyze
from qnas_hw.search.nsga import run_search


def test_default_job_front_trades_accuracy_for_runtime_and_subcircuits(tmp_path: Path) -> None:
    config = with_overrides(
        default_config(),
        **{
            "space.embeddings": ["angle-y"],
            "space.rotations": ["ry"],
            "space.entanglers": ["none"],
            "search.pop_size": 6,
            "search.generations": 2,
            "compute.threads": 1,
        },
    )
    study = run_search(config, tmp_path / "run", progress=False)
    data = analyze(study.candidates(), study.generations(), study.objective_names, study.config)
    front = [data.candidates[i] for i in data.front]
    assert len(front) >= 3, [c.arch.canonical() for c in front]
    assert len({c.objectives["subcircuits"] for c in front}) >= 2
    runtime = data.resolutions["runtime_s"]
    for a, b in itertools.combinations(front, 2):  # every pair of shown points differs beyond resolution somewhere
        ua, ub = runtime.units([a.objectives["runtime_s"], b.objectives["runtime_s"]])
        assert abs(ua - ub) >= 1 or a.objectives["subcircuits"] != b.objectives["subcircuits"]
    runtimes = sorted(c.objectives["runtime_s"] for c in front)
    assert runtimes[-1] > runtimes[0] * (1 + runtime.relative)
    # more accuracy costs more: sorted by runtime, val_error goes down
    by_cost = sorted(front, key=lambda c: c.objectives["runtime_s"])
    errors = [c.objectives["val_error"] for c in by_cost]
    assert errors == sorted(errors, reverse=True)
    # the hypervolume box is fixed and the curve does not saturate at generation 0
    hv = [g.hypervolume for g in study.generations()]
    assert hv[0] is not None and hv[0] < 1.1**3
