"""Resolution-aware fronts, picks and the fixed hypervolume box, against definitions written out here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from qnas_hw.search.pareto import (
    Axis,
    HypervolumeBox,
    Resolution,
    accuracy_resolution,
    best_within_resolution,
    pareto_front,
    resolution_units,
    resolved_front,
)

RES3 = [Resolution(absolute=0.05), Resolution(relative=0.02), Resolution(absolute=1.0)]


def eps_dominates(za: np.ndarray, zb: np.ndarray) -> bool:
    """a beats b by a whole resolution unit somewhere and is nowhere a whole unit worse (the definition)."""
    return bool(np.any(za <= zb - 1 + 1e-9) and not np.any(za >= zb + 1 - 1e-9))


def ties(za: np.ndarray, zb: np.ndarray) -> bool:
    return bool(np.all(np.abs(za - zb) < 1 - 1e-9))


def test_a_millisecond_and_an_extra_subcircuit_do_not_win() -> None:
    """The Iris seed-1 case: 5 qubits / 2 subcircuits beat 3 qubits / 1 subcircuit by 1 ms at equal error."""
    F = np.array([[0.0, 6.300, 2.0], [0.0, 6.301, 1.0]])
    qubits = [5, 3]
    front = resolved_front(F, RES3, lambda i: (qubits[i], F[i, 2], F[i, 1]))
    assert pareto_front(F).tolist() == [0, 1]  # exactly, both are non-dominated
    assert front == [1]  # within 2% runtime they tie, and one subcircuit fewer is a real difference
    assert best_within_resolution(F, front, 0, RES3[0], lambda i: qubits[i]) == 1


def test_ties_in_every_objective_go_to_fewer_qubits() -> None:
    F = np.array([[0.10, 10.0, 1.0], [0.11, 10.1, 1.0], [0.30, 5.0, 1.0]])
    qubits = [6, 2, 2]
    front = resolved_front(F, RES3, lambda i: (qubits[i], F[i, 2], F[i, 1]))
    # row 0 dominates row 1 exactly, but by less than resolution (0.01 < 0.05, 1% < 2%): a tie the 2-qubit one wins
    assert pareto_front(F).tolist() == [0, 2]
    assert front == [1, 2]


def test_most_accurate_prefers_the_simpler_candidate_within_resolution() -> None:
    F = np.array([[0.100, 50.0, 2.0], [0.120, 10.0, 1.0], [0.300, 9.0, 1.0]])
    qubits = [6, 3, 2]
    pick = best_within_resolution(F, [0, 1, 2], 0, Resolution(absolute=0.05), lambda i: (qubits[i], F[i, 2]))
    assert pick == 1
    assert best_within_resolution(F, [0, 1, 2], 0, Resolution(absolute=0.01), lambda i: qubits[i]) == 0


@pytest.mark.parametrize("seed", range(6))
def test_resolved_front_meets_its_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    F = np.column_stack([rng.random(n) * 0.5, 10 ** rng.uniform(0.5, 1.5, n), rng.integers(1, 4, n).astype(float)])
    prefer = lambda i: (F[i, 2], F[i, 1], i)  # noqa: E731
    shown = resolved_front(F, RES3, prefer)
    Z = resolution_units(F, RES3)
    assert shown
    for a, b in itertools.permutations(shown, 2):
        assert not eps_dominates(Z[a], Z[b]), (a, b)
        assert not ties(Z[a], Z[b]), (a, b)
    for d in set(range(n)) - set(shown):  # every dropped row is beaten by, or ties with, another row
        assert any(eps_dominates(Z[k], Z[d]) or ties(Z[k], Z[d]) for k in range(n) if k != d), d
    # rows nothing beats by a whole unit are shown unless a preferred row ties with them
    for a in range(n):
        if not any(eps_dominates(Z[k], Z[a]) for k in range(n)) and a not in shown:
            assert any(ties(Z[k], Z[a]) and prefer(k) < prefer(a) for k in shown), a


def test_accuracy_resolution_is_the_standard_error_and_at_least_one_sample() -> None:
    assert accuracy_resolution(100, 0.1).absolute == pytest.approx(math.sqrt(0.1 * 0.9 / 100))
    assert accuracy_resolution(100, 0.0).absolute == pytest.approx(0.01)
    assert accuracy_resolution(24, 0.5).absolute == pytest.approx(math.sqrt(0.25 / 24))
    with pytest.raises(ValueError, match="n_samples=0"):
        accuracy_resolution(0, 0.1)


def test_box_hypervolume_by_hand() -> None:
    """Two points in a 2-D box, log runtime: the dominated area by rectangles, computed here."""
    box = HypervolumeBox((Axis("val_error", 0.0, 1.0), Axis("runtime_s", 1.0, 1000.0, log=True)), reference=1.1)
    # normalised: (0.2, log10(10)/3 = 1/3) and (0.5, 0)
    F = np.array([[0.2, 10.0], [0.5, 1.0]])
    a = (1.1 - 0.2) * (1.1 - 1 / 3) + (1.1 - 0.5) * (1 / 3 - 0.0)
    assert box.hypervolume(F) == pytest.approx(a)
    # beyond the nadir's reference nothing counts; a non-finite row is ignored
    assert box.hypervolume(np.array([[0.2, 1e9], [np.nan, 1.0]])) == 0.0
    assert HypervolumeBox.from_dict(box.to_dict()) == box
    assert box.for_names(["runtime_s", "val_error"]).names == ["runtime_s", "val_error"]


def test_box_refuses_a_degenerate_axis() -> None:
    with pytest.raises(ValueError, match="nadir > ideal > 0"):
        Axis("runtime_s", 0.0, 10.0, log=True)
    with pytest.raises(ValueError, match="nadir > ideal"):
        Axis("val_error", 1.0, 1.0)
