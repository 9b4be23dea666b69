"""Noise-aware placement: the ESP score against mapomatic's own scorer, and the chosen placement against the default.

Reference: ``mapomatic.evaluate_layouts`` (its default cost reads the fake
backend's ``BackendProperties``, we read the ``Target``: the same calibration
numbers through another path).
"""

from __future__ import annotations

import mapomatic
import numpy as np
import pytest

from qnas_hw.hardware.backends import get_backend
from qnas_hw.hardware.layout import choose_layout, deflate, layout_scores
from qnas_hw.hardware.transpilation import Transpiler
from qnas_hw.model.space import Architecture

ARCHS = [Architecture.parse(a) for a in ("angle-y|q4|l2|ry-rz|ring", "angle-x|q5|l2|ry|linear", "iqp|q3|l1|ry|full")]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # mapomatic's scorer iterates instructions the old way
@pytest.mark.parametrize("name", ["fake_quito", "fake_kolkata"])
def test_esp_equals_one_minus_mapomatic_cost(name: str) -> None:
    backend = get_backend(name)
    fake = backend._device  # the qiskit fake backend, which mapomatic scores from its BackendProperties
    for arch in ARCHS:
        rec = Transpiler(backend, layout="default").transpile(arch)
        small, _ = deflate(rec.circuit)
        layouts = mapomatic.matching_layouts(small, fake.coupling_map)[:200]
        assert layouts, "the routed circuit must fit its own coupling graph"
        theirs = dict((tuple(lay), cost) for lay, cost in mapomatic.evaluate_layouts(small, layouts, fake))
        ours = layout_scores(small, np.array(layouts), backend.target)
        for lay, esp in zip(layouts, ours, strict=True):
            assert esp == pytest.approx(1 - theirs[tuple(lay)], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["fake_quito", "fake_kolkata", "fake_torino", "braket_iqm_garnet"])
def test_calibrated_placement_is_valid_and_never_worse_than_the_default(name: str) -> None:
    backend = get_backend(name)
    default, calibrated = Transpiler(backend, layout="default"), Transpiler(backend)
    improved = 0
    for arch in ARCHS:
        d, c = default.transpile(arch), calibrated.transpile(arch)
        assert c.esp >= d.esp - 1e-12 and c.layout is not None
        assert c.layout.default_esp == pytest.approx(d.esp)
        improved += c.esp > d.esp * (1 + 1e-9)
        # same routed circuit, moved: every instruction supported where it now sits, same gate counts
        assert dict(c.circuit.count_ops()) == dict(d.circuit.count_ops())
        for inst in c.circuit.data:
            if inst.operation.name == "barrier":
                continue
            qubits = tuple(c.circuit.find_bit(q).index for q in inst.qubits)
            assert backend.target.instruction_supported(inst.operation.name, qubits), (inst.operation.name, qubits)
    if name in ("fake_quito", "fake_torino"):
        assert improved > 0  # the calibration data distinguishes qubits there: the check can fail
    if name == "braket_iqm_garnet":
        assert improved == 0  # a snapshot with one typical error per gate has no better qubit: the default stays


def test_choose_layout_prefers_the_default_on_ties_and_reports_what_it_scored() -> None:
    backend = get_backend("fake_kolkata")
    rec = Transpiler(backend, layout="default").transpile(ARCHS[0])
    small, active = deflate(rec.circuit)
    choice = choose_layout(small, active, backend.target, backend.coupling_edges)
    assert choice.candidates >= 2 and choice.esp >= choice.default_esp
    assert tuple(choice.default_physical_qubits) == tuple(active)
