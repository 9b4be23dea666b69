"""Transpilation to device topology: coupling, basis, durations, SWAP counting and the cache."""

from __future__ import annotations

import pytest

from qnas_hw.hardware.backends import BackendError, get_backend
from qnas_hw.hardware.transpilation import NON_GATES, Transpiler
from qnas_hw.model.circuits import build_circuit
from qnas_hw.model.space import Architecture

RING8 = Architecture("angle-y", 8, 2, "ry-rz", "ring")


@pytest.mark.parametrize("name", ["fake_kolkata", "braket_iqm_garnet"])
def test_transpile_respects_coupling_and_basis(name):
    backend = get_backend(name)
    rec = Transpiler(backend).transpile(RING8)
    edges = set(backend.coupling_edges)
    target = backend.target
    n2 = 0
    for inst in rec.circuit.data:
        op = inst.operation.name
        qubits = tuple(rec.circuit.find_bit(q).index for q in inst.qubits)
        if op == "barrier":
            continue
        assert op in target.operation_names, f"{op} not in {name}'s basis"
        if len(qubits) == 2:
            n2 += 1
            assert qubits in edges, f"{op} on {qubits} is not a coupling of {name}"
            assert target.instruction_supported(op, qubits)
        assert len(qubits) <= 2
    assert n2 == rec.n_2q > 0


def test_duration_positive_and_increasing_with_layers():
    t = Transpiler(get_backend("fake_kolkata"))
    durations = [t.transpile(Architecture("angle-y", 5, layers, "ry-rz", "linear")).duration_s for layers in (1, 2, 4)]
    assert durations[0] > 0
    assert durations[0] < durations[1] < durations[2]
    # a 1-layer 5-qubit circuit is microseconds on a superconducting device, not seconds
    assert 1e-7 < durations[0] < 1e-4


def test_cache_hits_and_settings():
    t = Transpiler(get_backend("fake_kolkata"), optimization_level=1, seed=3)
    a = t.transpile(RING8)
    b = t.transpile(RING8)
    assert a is b and (t.hits, t.misses) == (1, 1)
    t.transpile(Architecture("angle-y", 4, 1, "ry", "linear"))
    assert (t.hits, t.misses) == (1, 2)
    assert "fake_kolkata" in t.settings_key() and "seed3" in t.settings_key()


def test_callback_pipeline_equals_backend_transpile_and_counts_swaps():
    backend = get_backend("fake_kolkata")
    rec = Transpiler(backend, seed=0).transpile(RING8)
    direct = backend.transpile(build_circuit(RING8, measure=True), 1, 0)
    assert dict(rec.circuit.count_ops()) == dict(direct.count_ops())
    # a ring does not embed in heavy-hex: routing must add SWAPs, each worth <= 3 two-qubit gates
    assert rec.swaps > 0
    assert rec.logical_2q == 16
    assert rec.logical_2q <= rec.n_2q <= rec.logical_2q + 3 * rec.swaps


def test_all_to_all_needs_no_swaps():
    rec = Transpiler(get_backend("aer_ideal")).transpile(RING8)
    assert rec.swaps == 0 and rec.n_2q == 16 and rec.duration_s == 0.0
    ops = {i.operation.name for i in rec.circuit.data} - NON_GATES
    assert ops <= {"rz", "sx", "x", "cx"}


def test_too_wide_for_device_is_a_clear_error():
    with pytest.raises(BackendError, match="needs 8 qubits but fake_manila has 5"):
        Transpiler(get_backend("fake_manila")).transpile(RING8)
