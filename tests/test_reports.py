"""Reports: front against pymoo, knee on fronts with a known answer, hypervolume by hand, files parseable."""

from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from references import grid_hypervolume, naive_front

from qnas_hw.model.space import Architecture, SearchSpace
from qnas_hw.reports.data import analyze, hypervolume_history_from_records
from qnas_hw.reports.plots import log_axes
from qnas_hw.reports.report import front_table, write_report_data
from qnas_hw.search.pareto import Axis, HypervolumeBox, hypervolume, knee_point, pareto_front, resolution_units

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------- pareto_front
@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_front_matches_dominance_definition(m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Small integer grid: many ties and exact duplicates, the cases a sloppy dominance test gets wrong.
    F = rng.integers(0, 6, size=(150, m)).astype(float)
    expected = naive_front(F)
    np.testing.assert_array_equal(pareto_front(F), expected)


def test_front_continuous_matches_dominance_definition() -> None:
    F = np.random.default_rng(7).random((400, 3))
    expected = naive_front(F)
    np.testing.assert_array_equal(pareto_front(F), expected)


def test_front_skips_non_finite_and_handles_empty() -> None:
    F = np.array([[0.0, 0.0], [np.nan, -1.0], [1.0, 1.0], [-np.inf, 5.0]])
    np.testing.assert_array_equal(pareto_front(F), [0])
    assert pareto_front(np.zeros((0, 3))).size == 0


# ----------------------------------------------------------------- knee_point
def test_knee_on_convex_2d_front() -> None:
    # f2 = (1 - f1)^2: distance below the line f1 + f2 = 1 is f1 - f1^2, maximal at f1 = 0.5.
    f1 = np.linspace(0.0, 1.0, 101)
    front = np.column_stack([f1, (1 - f1) ** 2])
    perm = np.random.default_rng(0).permutation(len(front))
    assert knee_point(front[perm]) == int(np.flatnonzero(perm == 50)[0])


def test_knee_is_scale_invariant() -> None:
    f1 = np.linspace(0.0, 1.0, 41)
    front = np.column_stack([f1, (1 - np.sqrt(f1)) ** 2])
    scaled = front * np.array([0.01, 3000.0]) + np.array([0.1, 7.0])
    assert knee_point(front) == knee_point(scaled)
    # Known answer for f2 = (1 - sqrt(f1))^2: maximise f1^... numerically via a fine grid.
    fine = np.linspace(0, 1, 100001)
    best = fine[np.argmax(1 - fine - (1 - np.sqrt(fine)) ** 2)]
    assert abs(f1[knee_point(front)] - best) <= 0.5 / 40 + 1e-9


def test_knee_3d_uses_plane_through_extremes() -> None:
    # Extremes at the unit axes (plane f1+f2+f3=1); points on the plane have distance 0,
    # the bulge at 0.2 each lies farthest below it.
    front = np.array(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0], [0, 0.5, 0.5], [0.2, 0.2, 0.2], [0.3, 0.3, 0.3]], float
    )
    assert knee_point(front) == 5
    # A tilted plane: extremes on a non-symmetric simplex; the knee must still be the deepest point.
    tilt = front * np.array([1.0, 2.0, 5.0])
    assert knee_point(tilt) == 5


def test_knee_edge_cases() -> None:
    assert knee_point(np.array([[3.0, 4.0]])) == 0
    # One objective constant on the front: reduces to minimising the varying one.
    assert knee_point(np.array([[2.0, 1.0], [1.0, 1.0], [3.0, 1.0]])) == 1
    with pytest.raises(ValueError, match="non-empty"):
        knee_point(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        knee_point(np.array([[0.0, np.nan], [1.0, 0.0]]))


# ---------------------------------------------------------------- hypervolume
def test_hypervolume_by_hand() -> None:
    pts = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    # Slabs in f1: [0,.5) height 1.1-1, [.5,1) height 1.1-.5, [1,1.1) height 1.1.
    expected = 0.5 * 0.1 + 0.5 * 0.6 + 0.1 * 1.1
    assert hypervolume(pts, ideal=np.zeros(2), nadir=np.ones(2)) == pytest.approx(expected)
    # Same points in raw units (scaled and shifted) give the same normalised volume.
    raw = pts * np.array([10.0, 0.001]) + np.array([5.0, 2.0])
    assert hypervolume(raw, ideal=np.array([5.0, 2.0]), nadir=np.array([15.0, 2.001])) == pytest.approx(expected)
    assert hypervolume(np.zeros((0, 2)), np.zeros(2), np.ones(2)) == 0.0


def test_hypervolume_3d_matches_monte_carlo() -> None:
    rng = np.random.default_rng(3)
    pts = rng.random((12, 3))
    hv = hypervolume(pts, np.zeros(3), np.ones(3))
    samples = rng.random((200_000, 3)) * 1.1
    dominated = (pts[None, :, :] <= samples[:, None, :]).all(axis=2).any(axis=1)
    assert hv == pytest.approx(dominated.mean() * 1.1**3, abs=0.01)


# ------------------------------------------------------- synthetic study records
@dataclass
class Rec:
    """The attributes of the study's CandidateRecord that reports read."""

    arch: Architecture
    objectives: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    feasible: bool = True


@dataclass
class Gen:
    index: int
    population: list[str]
    front: list[str]
    hypervolume: float | None = None
    finished_at: str = ""


NAMES = ["val_error", "runtime_s", "subcircuits"]


def synthetic_study(seed: int = 0, n_gen: int = 4, pop: int = 10) -> tuple[list[Rec], list[Gen]]:
    """An elitist toy search: each generation keeps its whole front and refills with random architectures."""
    rng = np.random.default_rng(seed)
    space = SearchSpace(qubits=(2, 8), layers=(1, 3))
    records: list[Rec] = []
    gens: list[Gen] = []
    population: list[str] = []
    seen: dict[str, Rec] = {}
    for g in range(n_gen):
        while len(population) < pop:
            arch = space.sample(rng)
            key = arch.canonical()
            if key in seen:
                if key not in population:
                    population.append(key)
                continue
            size = arch.n_qubits * arch.n_layers * arch.rotations_per_qubit
            rec = Rec(
                arch=arch,
                objectives={
                    "val_error": float(np.clip(0.6 / math.sqrt(size) + rng.normal(0, 0.02), 0.0, 1.0)),
                    "runtime_s": float(size * 1e-3 * (1 + rng.random())),
                    "subcircuits": float(math.ceil(arch.n_qubits / 4)),
                },
                details={"n_2q": size, "cut": {"overhead": 9.0 ** (arch.n_qubits // 5)}},
                timings={"eval_s": float(rng.random())},
                generation=g,
                feasible=arch.n_qubits <= 7,
            )
            seen[key] = rec
            records.append(rec)
            population.append(key)
        F = np.array([seen[a].objectives[n] for a in population for n in NAMES]).reshape(-1, 3)
        ok = np.array([seen[a].feasible for a in population])
        rows = np.flatnonzero(ok)
        front = [population[rows[i]] for i in pareto_front(F[rows])]
        gens.append(Gen(g, list(population), front))
        # Elitism: the front survives, the rest is refilled next generation.
        population = list(front)
    return records, gens


def test_analyze_front_knee_and_picks() -> None:
    records, gens = synthetic_study()
    data = analyze(records, gens, NAMES, {"seed": 0})
    F = data.matrix()
    usable = np.array([c.usable for c in data.candidates])
    rows = np.flatnonzero(usable)
    expected = np.sort(rows[naive_front(F[rows])])
    assert sorted(data.exact_front) == expected.tolist()
    # the front shown is the exact front with ties within resolution collapsed: a subset, and every
    # exact-front point left out is within one resolution step of a shown point that is no worse elsewhere
    assert set(data.front) <= set(data.exact_front)
    units = resolution_units(F, [data.resolutions[n] for n in NAMES])
    for i in set(data.exact_front) - set(data.front):
        assert any(np.all(units[j] <= units[i] + 1.0) for j in data.front), data.candidates[i].arch.canonical()
    assert all(data.candidates[i].feasible for i in data.front)
    best = min(data.front, key=lambda i: F[i, 0])
    assert F[best, 0] - F[rows, 0].min() <= data.resolutions["val_error"].absolute
    assert data.most_accurate in data.front and data.knee in data.front
    assert data.front[knee_point(data.box.normalize(F[data.front]))] == data.knee


def test_equal_objectives_pick_the_smaller_circuit() -> None:
    """Seen on IQM Garnet: 2 and 5 qubits in the same scheduled time tie on every objective; pick the 2-qubit one."""
    big = Rec(Architecture.parse("angle-y|q5|l1|rx-ry|sparse"), {"val_error": 0.0, "runtime_s": 3.3, "subcircuits": 1})
    small = Rec(Architecture.parse("angle-x|q2|l1|rx-ry|sparse"), dict(big.objectives))
    cheap = Rec(Architecture.parse("angle-x|q2|l1|ry|linear"), {"val_error": 0.2, "runtime_s": 3.2, "subcircuits": 1})
    for order in ([big, small, cheap], [small, cheap, big]):
        data = analyze(order, [Gen(0, [r.arch.canonical() for r in order], [])], NAMES)
        picks = {data.candidates[data.knee].arch, data.candidates[data.most_accurate].arch}
        assert picks == {small.arch} and len(data.exact_front) == 3
        assert [data.candidates[i].arch for i in data.front] == [small.arch, cheap.arch]  # big ties small


def test_log_axes_only_for_positive_objectives_spanning_two_decades() -> None:
    archs = [Architecture.parse(f"angle-y|q{q}|l1|ry|linear") for q in (2, 3, 4)]
    runtimes, subcircuits = (6.3, 31.0, 2.0e6), (1, 2, 2)
    recs = [
        Rec(a, {"val_error": e, "runtime_s": r, "subcircuits": c})
        for a, e, r, c in zip(archs, (0.0, 0.1, 0.2), runtimes, subcircuits, strict=True)
    ]
    data = analyze(recs, [Gen(0, [a.canonical() for a in archs], [])], NAMES)
    assert log_axes(data) == [False, True, False]  # val_error has a 0; subcircuits spans 2x
    recs[2] = Rec(archs[2], {"val_error": 0.2, "runtime_s": 600.0, "subcircuits": 2})
    data = analyze(recs, [Gen(0, [a.canonical() for a in archs], [])], NAMES)
    assert log_axes(data) == [False, False, False]  # 6.3 .. 600 is under 100x


def test_hypervolume_history_is_monotone_for_elitist_search() -> None:
    records, gens = synthetic_study(seed=1, n_gen=5)
    F = np.array([[r.objectives[n] for n in NAMES] for r in records if r.feasible])
    box = HypervolumeBox(tuple(Axis(n, float(F[:, j].min()), float(F[:, j].max())) for j, n in enumerate(NAMES)))
    hist = hypervolume_history_from_records(records, gens, NAMES, box)
    assert [g for g, _ in hist] == [0, 1, 2, 3, 4]
    values = [hv for _, hv in hist]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))
    assert 0 < values[-1] <= box.reference**3
    # Each value is the volume dominated by every feasible record evaluated up to that generation, in the one box
    for g, value in hist:
        upto = np.array([[r.objectives[n] for n in NAMES] for r in records if r.feasible and r.generation <= g])
        assert value == pytest.approx(grid_hypervolume(box.normalize(upto), box.reference))


def test_duplicate_records_keep_the_latest() -> None:
    a = Architecture.parse("angle-y|q2|l1|ry|linear")
    b = Architecture.parse("angle-y|q3|l1|ry|linear")
    recs = [
        Rec(a, {"val_error": 0.5, "runtime_s": 1.0}, generation=0),
        Rec(b, {"val_error": 0.4, "runtime_s": 2.0}, generation=0),
        Rec(a, {"val_error": 0.3, "runtime_s": 1.0}, generation=1),  # re-evaluated, now dominates b
    ]
    data = analyze(recs, [], ["val_error", "runtime_s"])
    assert len(data.candidates) == 2
    assert [data.candidates[i].arch for i in data.front] == [a]
    assert data.candidates[data.front[0]].generation == 0
    assert data.candidates[data.front[0]].objectives["val_error"] == 0.3


def test_write_report_files_parse(tmp_path: Path) -> None:
    records, gens = synthetic_study(seed=2)
    data = analyze(records, gens, NAMES, {"seed": 2, "data": {"dataset": "iris"}})
    files = write_report_data(data, tmp_path / "report")
    for p in files.all():
        assert p.is_file() and p.stat().st_size > 0, p

    with files.candidates_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(data.candidates)
    assert {"architecture", "embedding", "n_qubits", "val_error", "details.cut.overhead", "timings.eval_s"} <= set(
        rows[0]
    )
    assert sum(r["on_front"] == "True" for r in rows) == len(data.front)
    for r in rows:
        Architecture.parse(r["architecture"])
    with files.front_csv.open() as fh:
        front_rows = list(csv.DictReader(fh))
    assert {r["architecture"] for r in front_rows} == {data.candidates[i].arch.canonical() for i in data.front}
    assert [r["knee"] for r in front_rows].count("True") == 1

    report = json.loads(files.report_json.read_text())
    assert report["objective_names"] == NAMES
    assert len(report["candidates"]) == len(data.candidates)
    assert report["knee"]["architecture"] == data.candidates[data.knee].arch.canonical()
    assert len(report["hypervolume"]) == len(gens)

    names = {p.name for p in files.plots}
    assert names == {
        "front_val_error_vs_runtime_s.png",
        "front_val_error_vs_subcircuits.png",
        "front_runtime_s_vs_subcircuits.png",
        "front_3d.png",
        "hypervolume.png",
    }
    for p in files.plots:
        blob = p.read_bytes()
        assert blob.startswith(PNG_MAGIC) and len(blob) > 5000, p

    summary = files.summary_md.read_text()
    assert data.candidates[data.knee].arch.canonical() in summary
    assert data.candidates[data.most_accurate].arch.canonical() in summary
    assert '"seed": 2' in summary


def test_front_table_lists_the_front() -> None:
    from rich.console import Console

    records, gens = synthetic_study(seed=3)
    data = analyze(records, gens, NAMES)
    table = front_table(data)
    assert table.row_count == len(data.front)
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "knee" in text and "best-acc" in text


def test_no_feasible_candidate_still_reports(tmp_path: Path) -> None:
    a = Architecture.parse("angle-y|q2|l1|ry|linear")
    data = analyze([Rec(a, {"val_error": 0.5, "runtime_s": 1.0}, feasible=False)], [], ["val_error", "runtime_s"])
    assert data.front == [] and data.knee is None and data.most_accurate is None
    files = write_report_data(data, tmp_path)
    assert "no feasible candidate" in files.summary_md.read_text()
    assert json.loads(files.report_json.read_text())["knee"] is None


def test_hardware_results_become_columns_per_backend(tmp_path: Path) -> None:
    from rich.console import Console

    records, gens = synthetic_study(seed=4)
    data0 = analyze(records, gens, NAMES)
    a, b = (data0.candidates[i].arch.canonical() for i in data0.front[:2])
    hw = [  # newest first; the older "ibm_x" row of `a` must be hidden by the newer one
        {"arch": a, "backend": "ibm_x", "accuracy": 0.75, "simulator_accuracy": 0.8, "n_samples": 20, "shots": 2000,
         "quantum_seconds": 3.5, "wall_seconds": 60.0, "batch": "new", "created_at": "2"},
        {"arch": a, "backend": "aer_noisy", "accuracy": 0.6, "simulator_accuracy": 0.8, "n_samples": 20, "shots": 100,
         "quantum_seconds": None, "wall_seconds": 1.25, "batch": "aer", "created_at": "1"},
        {"arch": b, "backend": "ibm_x", "accuracy": 0.5, "simulator_accuracy": None, "n_samples": 20, "shots": 2000,
         "quantum_seconds": 2.0, "wall_seconds": 9.0, "batch": "new", "created_at": "1"},
        {"arch": a, "backend": "ibm_x", "accuracy": 0.1, "simulator_accuracy": 0.8, "n_samples": 20, "shots": 10,
         "quantum_seconds": 1.0, "wall_seconds": 5.0, "batch": "old", "created_at": "0"},
    ]  # fmt: skip
    data = analyze(records, gens, NAMES, hardware=hw)
    assert data.front == data0.front and data.knee == data0.knee  # reported, never used for picking
    assert data.hw_backends == ["aer_noisy", "ibm_x"]
    files = write_report_data(data, tmp_path)
    rows = {r["architecture"]: r for r in csv.DictReader(files.candidates_csv.open())}
    assert (rows[a]["hw_acc@ibm_x"], rows[a]["hw_shots@ibm_x"], rows[a]["hw_seconds@ibm_x"]) == ("0.75", "2000", "3.5")
    assert (rows[a]["hw_acc@aer_noisy"], rows[a]["hw_seconds@aer_noisy"]) == ("0.6", "1.25")
    assert rows[b]["hw_acc@ibm_x"] == "0.5" and rows[b]["hw_acc@aer_noisy"] == ""
    others = [r for k, r in rows.items() if k not in (a, b)]
    assert others and all(r["hw_acc@ibm_x"] == "" for r in others)
    report = json.loads(files.report_json.read_text())
    by_arch = {c["architecture"]: c for c in report["candidates"]}
    assert by_arch[a]["hardware"]["ibm_x"]["batch"] == "new"
    assert by_arch[a]["hardware"]["ibm_x"]["seconds_source"] == "QPU"
    assert by_arch[b]["hardware"]["ibm_x"]["simulator_accuracy"] is None
    summary = files.summary_md.read_text()
    a_md, b_md = a.replace("|", "\\|"), b.replace("|", "\\|")  # escaped: '|' would split the cell
    assert f"| `{a_md}` | yes | ibm_x | 20 | 80.00% | 75.00% | 2000 | 3.50 (QPU) |" in summary
    assert f"| `{a_md}` | yes | aer_noisy | 20 | 80.00% | 60.00% | 100 | 1.25 (wall) |" in summary
    assert f"| `{b_md}` | yes | ibm_x | 20 | - | 50.00% | 2000 | 2.00 (QPU) |" in summary
    assert "10.00%" not in summary  # the superseded batch
    console = Console(width=300, record=True)
    console.print(front_table(data))
    text = console.export_text()
    assert "hw_acc@ibm_x" in text and "75.00%" in text and "hw_acc@aer_noisy" in text


def test_report_without_hardware_has_no_hardware_columns(tmp_path: Path) -> None:
    records, gens = synthetic_study(seed=4)
    files = write_report_data(analyze(records, gens, NAMES), tmp_path)
    assert "hw_" not in files.candidates_csv.read_text().splitlines()[0]
    assert "Hardware evaluation" not in files.summary_md.read_text()
    assert json.loads(files.report_json.read_text())["hardware_backends"] == []


# ------------------------------------------------------- reports that explain themselves
def _markdown_table(summary: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first Markdown table after ``heading`` (cells split on unescaped '|')."""
    import re

    lines = summary[summary.index(heading) :].splitlines()
    rows = [line for line in lines if line.startswith("|")]
    block = []
    for line in lines[lines.index(rows[0]) :]:
        if not line.startswith("|"):
            break
        block.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return block[0], block[2:]


def _front_study(backend: str, timing: str, dollars: float | None = None) -> tuple[list[Rec], list[Gen]]:
    records, gens = synthetic_study(seed=5)
    for r in records:
        r.details["runtime_s"] = {"timing_source": timing, "dollars": None if dollars is None else dollars}
    return records, gens


def test_summary_header_names_where_every_figure_comes_from(tmp_path: Path) -> None:
    config = {
        "data": {"dataset": "iris"},
        "hardware": {"backend": "aer_ideal", "qubit_budget": 4},
        "search": {"accuracy": "ideal"},
    }
    records, gens = _front_study("aer_ideal", "wall")
    summary = write_report_data(analyze(records, gens, NAMES, config), tmp_path / "a").summary_md.read_text()
    assert "- data set: iris" in summary
    assert "- backend: aer_ideal; qubit budget: 4 qubits per subcircuit" in summary
    assert "- accuracy: ideal (exact statevector simulation" in summary
    # aer_ideal ships a fitted wall-clock calibration: the header says so, with its held-out fit quality
    cost_line = next(line for line in summary.splitlines() if line.startswith("- runtime cost model:"))
    assert "fitted on measured local wall-clock seconds" in cost_line and "aer_ideal.json" in cost_line
    assert "held-out R^2" in cost_line and "MAPE" in cost_line
    assert "runtime_s = simulator runtime per evaluation (wall s, cost model)" in summary
    assert "- prices:" not in summary  # a local simulator bills nothing

    config["hardware"]["backend"] = "fake_kolkata"
    records, gens = _front_study("fake_kolkata", "device")
    summary = write_report_data(analyze(records, gens, NAMES, config), tmp_path / "b").summary_md.read_text()
    cost_line = next(line for line in summary.splitlines() if line.startswith("- runtime cost model:"))
    assert cost_line.startswith("- runtime cost model: prior, not fitted: IBM's documented usage estimate")
    assert "MAPE" not in cost_line  # the snapshot file's wall-clock fit is not the device model's quality
    assert "runtime_s = device runtime per evaluation (QPU s, cost model)" in summary


def test_summary_front_table_holds_picks_every_objective_and_hardware(tmp_path: Path) -> None:
    records, gens = synthetic_study(seed=4)
    data0 = analyze(records, gens, NAMES)
    measured = data0.candidates[data0.front[0]].arch.canonical()
    hw = [{"arch": measured, "backend": "ibm_x", "accuracy": 0.75, "shots": 100, "n_samples": 20}]
    data = analyze(records, gens, NAMES, {"hardware": {"backend": "fake_kolkata"}}, hardware=hw)
    summary = write_report_data(data, tmp_path).summary_md.read_text()
    header, rows = _markdown_table(summary, "## Pareto front")
    assert header[:3] == ["pick", "architecture", "val acc"]
    assert {"val_error (fraction)", "runtime_s (QPU s)", "subcircuits (count)", "hw_acc@ibm_x", "ESP"} <= set(header)
    assert len(rows) == len(data.front)
    by_arch = {row[1].strip("`").replace("\\|", "|"): dict(zip(header, row, strict=True)) for row in rows}
    assert set(by_arch) == {data.candidates[i].arch.canonical() for i in data.front}
    assert "knee" in by_arch[data.candidates[data.knee].arch.canonical()]["pick"]
    assert "best-acc" in by_arch[data.candidates[data.most_accurate].arch.canonical()]["pick"]
    assert by_arch[measured]["hw_acc@ibm_x"] == "75.00%"
    for i in data.front:
        c = data.candidates[i]
        row = by_arch[c.arch.canonical()]
        assert float(row["runtime_s (QPU s)"]) == pytest.approx(c.objectives["runtime_s"], rel=1e-3)
        assert float(row["subcircuits (count)"]) == c.objectives["subcircuits"]


def test_priced_backend_reports_dollars(tmp_path: Path) -> None:
    config = {"hardware": {"backend": "braket_iqm_garnet", "qubit_budget": 4}, "data": {"dataset": "iris"}}
    records, gens = _front_study("braket_iqm_garnet", "device", dollars=0.3 + 32 * 1024 * 0.00145)
    data = analyze(records, gens, NAMES, config)
    summary = write_report_data(data, tmp_path / "a").summary_md.read_text()
    assert "- prices: $0.3 per task + $0.00145 per shot" in summary
    assert "runtime cost model: prior, not fitted" in summary  # Braket's documented-by-us prior
    header, rows = _markdown_table(summary, "## Pareto front")
    column = header.index("USD per eval")
    assert [row[column] for row in rows] == ["$47.81"] * len(data.front)
    assert "$47.81 per evaluation at the provider's prices" in summary  # in the picks too

    # with cost_usd as an objective the dollars are that column; no second one
    names = ["val_error", "cost_usd"]
    for r in records:
        r.objectives["cost_usd"] = 1.0 + r.objectives["runtime_s"]
    summary = write_report_data(analyze(records, gens, names, config), tmp_path / "b").summary_md.read_text()
    header, _ = _markdown_table(summary, "## Pareto front")
    assert "cost_usd (USD)" in header and "USD per eval" not in header


def test_infeasible_and_failed_are_counted_apart(tmp_path: Path) -> None:
    from qnas_hw.search.study import OutcomeCounts

    a, b, c, d = (Architecture.parse(f"angle-y|q{q}|l1|ry|linear") for q in (2, 3, 4, 5))
    ok = {"G": [0.0, 0.0], "evaluation": 0.0, "max_candidate_runtime_s": 0.0}
    over_cap = {"constraints": {**ok, "max_candidate_runtime_s": 2.0}}
    not_scored = {"constraints": ok, "val_error": {"accuracy": {"skipped": "cut plan infeasible: no plan found"}}}
    failed = {"constraints": {**ok, "evaluation": 1.0}, "error": "val_error: RuntimeError: boom"}
    recs = [
        Rec(a, {"val_error": 0.2, "runtime_s": 1.0}, {"constraints": ok}),
        Rec(b, {"val_error": 0.1, "runtime_s": 9e9}, over_cap, feasible=False),
        Rec(c, {"val_error": math.nan, "runtime_s": 2.0}, not_scored, feasible=False),
        Rec(d, {"val_error": math.nan, "runtime_s": 3.0}, failed, feasible=False),
    ]
    data = analyze(recs, [Gen(0, [r.arch.canonical() for r in recs], [])], ["val_error", "runtime_s"])
    assert data.outcomes == OutcomeCounts(feasible=1, infeasible=2, failed=1)
    files = write_report_data(data, tmp_path)
    summary = files.summary_md.read_text()
    assert "- study holds 4 candidates (1 feasible, 2 infeasible, 1 failed)" in summary
    assert "constraint max_candidate_runtime_s violated (1)" in summary
    assert "val_error not scored: cut plan infeasible (1)" in summary
    assert "infeasible or failed" not in summary
    report = json.loads(files.report_json.read_text())
    assert report["outcomes"] == {"feasible": 1, "infeasible": 2, "failed": 1}


def test_plots_are_wide_and_label_their_axes(tmp_path: Path) -> None:
    from PIL import Image

    from qnas_hw.reports.data import short_name
    from qnas_hw.reports.plots import MIN_WIDTH_PX, front_figure

    records, gens = _front_study("fake_kolkata", "device")
    config = {"hardware": {"backend": "fake_kolkata"}, "search": {"accuracy": "noisy"}}
    data = analyze(records, gens, NAMES, config)
    files = write_report_data(data, tmp_path)
    for p in files.plots:
        with Image.open(p) as img:
            assert img.width >= MIN_WIDTH_PX >= 1000, (p.name, img.size)

    fig = front_figure(data, NAMES.index("runtime_s"), NAMES.index("subcircuits"))
    try:
        fig.canvas.draw()
        (ax,) = fig.axes
        assert ax.get_xlabel() == "device runtime per evaluation (QPU s, cost model)"
        assert ax.get_ylabel() == "subcircuits after cutting (count)"
        assert "fake_kolkata" in ax.get_title()
        visible = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert visible and all(float(t).is_integer() for t in visible)
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert labels and all(label.lstrip("−-").isdigit() for label in labels), labels
        annotations = {t.get_text() for t in ax.texts}
        assert {short_name(data.candidates[i].arch) for i in data.front} <= annotations
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_coinciding_picks_stay_visible_in_the_plot() -> None:
    import matplotlib.pyplot as plt

    from qnas_hw.reports.plots import BEST_LABEL, KNEE_LABEL, front_figure

    a = Architecture.parse("angle-y|q2|l1|ry|linear")
    b = Architecture.parse("angle-y|q3|l1|ry|linear")
    recs = [Rec(a, {"val_error": 0.1, "subcircuits": 1.0}), Rec(b, {"val_error": 0.3, "subcircuits": 2.0})]
    data = analyze(recs, [Gen(0, [a.canonical(), b.canonical()], [])], ["val_error", "subcircuits"])
    assert data.knee == data.most_accurate  # one candidate dominates: both picks are it
    fig = front_figure(data, 0, 1)
    try:
        (ax,) = fig.axes
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert KNEE_LABEL in texts and BEST_LABEL in texts
        knee, best = (next(c for c in ax.collections if c.get_label() == label) for label in (KNEE_LABEL, BEST_LABEL))
        assert knee.get_offsets().tolist() == best.get_offsets().tolist()  # the same point...
        assert knee.get_sizes()[0] > 2 * best.get_sizes()[0]  # ...drawn as a ring around a smaller marker
        assert not np.array_equal(knee.get_paths()[0].vertices, best.get_paths()[0].vertices)  # ring vs diamond
    finally:
        plt.close(fig)


def test_console_front_table_never_cuts_an_architecture_at_80_columns() -> None:
    from rich.console import Console

    records, gens = synthetic_study(seed=6)
    data = analyze(records, gens, NAMES, {"hardware": {"backend": "fake_kolkata"}})
    console = Console(width=80, record=True)
    console.print(front_table(data))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    for i in data.front:  # each architecture whole, on one line (what `qnas-hw train --arch` takes)
        assert any(data.candidates[i].arch.canonical() in line for line in lines), data.candidates[i].arch
    assert not any("…" in line for line in lines)


# ------------------------------------------------ one front, one numbering (issue 22)
def _console_lines(text: str) -> list[tuple[int, int, int, int | None]]:
    """``(number, total, front, exact or None)`` of every ``generation N/T: ... front F (exact E)`` console line."""
    import re

    pattern = r"generation (\d+)/(\d+): .*?; front (\d+)(?: \(exact (\d+)\))?, hypervolume"
    return [
        (int(n), int(t), int(f), int(e) if e else None) for n, t, f, e in re.findall(pattern, text.replace("\n", " "))
    ]


def _searched_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int = 5) -> tuple[Any, str]:
    """The synthetic search replayed through the search's own record and console code into a real study file.

    Each generation's records are stored as the search stores them, then
    :func:`~qnas_hw.search.nsga.generation_record` and
    :func:`~qnas_hw.search.nsga.generation_summary` run exactly as after a real
    generation and the CLI prints the line; returns the study and the console text.
    """
    from types import SimpleNamespace

    from rich.console import Console

    import qnas_hw.cli.common as cli
    from qnas_hw.cli.search import _print_generation
    from qnas_hw.search.nsga import generation_record, generation_summary
    from qnas_hw.search.study import Study

    records, gens = synthetic_study(seed=seed)
    console = Console(record=True, width=400)
    monkeypatch.setattr(cli, "err_console", console)
    study = Study.create(tmp_path / "study.sqlite", {"seed": seed}, objective_names=NAMES)
    run = SimpleNamespace(
        study=study,
        evaluator=SimpleNamespace(settings_key="k", evaluated=0, reused=0, failed=0),
        names=NAMES,
        box=None,
        ledger=None,
    )
    for g in gens:
        for r in (r for r in records if r.generation == g.index):
            study.add_candidate(r.arch, "k", r.objectives, r.details, r.timings, r.generation, r.feasible)
            run.evaluator.evaluated += 1
        rec = study.commit_generation(generation_record(run, g.index, g.population), b"state")
        _print_generation(generation_summary(run, rec, len(gens)))
    return study, console.export_text()


def test_console_study_report_and_hw_eval_share_one_front_and_one_numbering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen on the default job: the console said "front 5", the table "3 of 59", hw-eval measured 5, gens 1/5 vs 0."""
    from qnas_hw.reports.data import study_report_data
    from qnas_hw.reports.plots import hypervolume_figure
    from qnas_hw.search.hw_eval import pick_architectures

    study, console = _searched_study(tmp_path, monkeypatch)
    data = study_report_data(study)
    assert len(data.exact_front) > len(data.front) > 0  # the case where the two definitions disagree
    shown = [data.candidates[i].arch.canonical() for i in data.front]
    files = write_report_data(data, tmp_path / "report")
    report = json.loads(files.report_json.read_text())
    summary = files.summary_md.read_text()
    _, front_rows = _markdown_table(summary, "## Pareto front")

    lines = _console_lines(console)
    n = len(study.generations())
    assert [(number, total) for number, total, _, _ in lines] == [(g, n) for g in range(1, n + 1)]
    _, _, front, exact = lines[-1]
    # the front size: console line == study record == report table == summary.md == report.json == hw-eval
    assert front == len(study.generations()[-1].front) == front_table(data).row_count == len(front_rows)
    assert front == len(report["front"]) == len(shown) and f"({front} of {len(data.candidates)} candidates" in str(
        front_table(data).title
    )
    assert exact == len(report["exact_front"]) == len(data.exact_front)
    assert study.generations()[-1].front == shown
    assert [a.canonical() for a in pick_architectures(study, "front")] == shown

    # one numbering: the console's generation N is summary.md's, report.json's and the plot's generation N
    _, hv_rows = _markdown_table(summary, "## Hypervolume")
    console_rows = [[str(g), str(f) if e is None else f"{f} (exact {e})"] for g, _, f, e in lines]
    assert [row[:2] for row in hv_rows] == console_rows
    assert report["generation_numbering"].startswith("1-based")
    assert [g["generation"] for g in report["generations"]] == [g for g, _, _, _ in lines]
    assert [(g["front"], g["exact_front"]) for g in report["generations"]] == [(f, e or f) for _, _, f, e in lines]
    assert [h["generation"] for h in report["hypervolume"]] == list(range(1, n + 1))
    fig = hypervolume_figure(data)
    try:
        assert list(fig.axes[0].lines[0].get_xdata()) == list(range(1, n + 1))
        assert "1 = initial population" in fig.axes[0].get_xlabel()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    stored = {c.arch.canonical(): c.generation for c in study.candidates()}
    assert all(c["generation"] == stored[c["architecture"]] + 1 for c in report["candidates"])
    header, _ = _markdown_table(summary, "## Pareto front")
    gen_col = header.index("gen")
    assert all(row[gen_col] == str(stored[row[1].strip("`").replace("\\|", "|")] + 1) for row in front_rows)
    csv_rows = list(csv.DictReader(files.candidates_csv.open()))
    assert all(int(r["generation"]) == stored[r["architecture"]] + 1 for r in csv_rows)


def test_hw_eval_front_of_an_older_study_is_the_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Studies written before the record held the resolved front store the exact one: hw-eval still measures the
    report's rows, never the stored list."""
    from qnas_hw.reports.data import study_report_data
    from qnas_hw.search.hw_eval import pick_architectures
    from qnas_hw.search.study import GenerationRecord

    study, _ = _searched_study(tmp_path, monkeypatch)
    data = study_report_data(study)
    last = study.generations()[-1]
    exact = [data.candidates[i].arch.canonical() for i in data.exact_front]
    study.commit_generation(GenerationRecord(last.index + 1, last.population, exact, last.hypervolume), b"old")
    assert [a.canonical() for a in pick_architectures(study, "front")] == [
        data.candidates[i].arch.canonical() for i in data.front
    ]


def test_cut_candidate_layout_lists_every_subcircuit(tmp_path: Path) -> None:
    """A 5-qubit candidate cut into 2-qubit pieces all placed on qubits 24 and 25 showed ``[24, 25]``."""
    from qnas_hw.reports.data import layout_text

    cut = Rec(
        Architecture.parse("angle-y|q5|l1|ry|none"),
        {"val_error": 0.1, "runtime_s": 2.0, "subcircuits": 3},
        details={
            "val_error": {"accuracy": {"layout": [24, 25], "subcircuit_layouts": [[24, 25], [24, 25], [24]]}},
            "runtime_s": {"layout": [20, 21, 24, 25, 26]},
        },
    )
    uncut = Rec(
        Architecture.parse("angle-y|q2|l1|ry|none"),
        {"val_error": 0.3, "runtime_s": 1.0, "subcircuits": 1},
        details={"val_error": {"accuracy": {"layout": [3, 5]}}},
    )
    unplaced = Rec(  # accuracy "ideal": the subcircuits were never placed; the uncut placement is not what runs
        Architecture.parse("angle-y|q4|l1|ry|none"),
        {"val_error": 0.2, "runtime_s": 1.5, "subcircuits": 2},
        details={"runtime_s": {"layout": [1, 2, 3, 4]}},
    )
    recs = [cut, uncut, unplaced]
    data = analyze(recs, [Gen(0, [r.arch.canonical() for r in recs], [])], NAMES)
    by_arch = {c.arch.canonical(): c for c in data.candidates}
    assert layout_text(by_arch[cut.arch.canonical()]) == "A:[24,25] B:[24,25] C:[24]"
    assert layout_text(by_arch[uncut.arch.canonical()]) == "[3,5]"
    assert layout_text(by_arch[unplaced.arch.canonical()]) == "2 subcircuits, placements not stored"
    files = write_report_data(data, tmp_path)
    header, rows = _markdown_table(files.summary_md.read_text(), "## Pareto front")
    layouts = {row[1].strip("`").replace("\\|", "|"): row[header.index("layout")] for row in rows}
    assert layouts[cut.arch.canonical()] == "A:[24,25] B:[24,25] C:[24]"
    csv_rows = {r["architecture"]: r for r in csv.DictReader(files.candidates_csv.open())}
    assert json.loads(csv_rows[cut.arch.canonical()]["subcircuit_layouts"]) == [[24, 25], [24, 25], [24]]


def test_runtime_plot_keeps_infeasible_outliers_off_the_axis() -> None:
    """A cut plan costed at 1e48 QPU s stretched the runtime axis to 10^48 and squashed the front into its edge."""
    import matplotlib.pyplot as plt

    from qnas_hw.reports.plots import BEYOND_LABEL, front_figure

    records, gens = synthetic_study(seed=5)
    huge = [r for r in records if not r.feasible]
    assert huge
    for r in huge:
        r.objectives["runtime_s"] = 1e48
    data = analyze(records, gens, NAMES, {"hardware": {"backend": "fake_kolkata"}})
    usable_max = max(c.objectives["runtime_s"] for c in data.candidates if c.usable)
    fig = front_figure(data, NAMES.index("runtime_s"), NAMES.index("subcircuits"))
    try:
        fig.canvas.draw()
        (ax,) = fig.axes
        assert ax.get_xlim()[1] < 10 * usable_max  # the axis spans the feasible candidates
        pinned = [c for c in ax.collections if c.get_label() == BEYOND_LABEL]
        assert len(pinned) == 1 and len(pinned[0].get_offsets()) == len(huge)
        assert all(x == pytest.approx(ax.get_xlim()[1]) for x, _ in pinned[0].get_offsets())  # at the edge
        notes = [t.get_text() for t in ax.texts if t.get_text().startswith("note:")]
        assert notes == [f"note: {len(huge)} infeasible candidates beyond the axes (runtime_s up to 1e+48), drawn "
                         "at the edge; the axes span the feasible candidates"]  # fmt: skip
    finally:
        plt.close(fig)


def test_3d_labels_sit_apart_from_their_markers_and_the_z_label_is_readable() -> None:
    import matplotlib.pyplot as plt

    from qnas_hw.reports.data import short_name
    from qnas_hw.reports.plots import LABEL_SIZE_3D, front_figure_3d

    records, gens = synthetic_study(seed=5)
    data = analyze(records, gens, NAMES, {"hardware": {"backend": "fake_kolkata"}})
    fig = front_figure_3d(data)
    try:
        fig.canvas.draw()
        (ax,) = fig.axes
        renderer = fig.canvas.get_renderer()
        F = data.matrix()
        names = {short_name(data.candidates[i].arch): i for i in data.front}
        labels = [t for t in ax.texts if t.get_text() in names]
        assert len(labels) == len(data.front)
        for t in labels:  # the label is anchored away from its point in every data direction that has a range
            x, _, z = t.get_position_3d()
            i = names[t.get_text()]
            assert (x, z) != (F[i, 0], F[i, 2]), t.get_text()
        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
            assert axis.label.get_fontsize() >= LABEL_SIZE_3D >= 10
        box = ax.zaxis.label.get_window_extent(renderer)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1
    finally:
        plt.close(fig)


def test_counts_are_singular_for_one() -> None:
    """ "(2 qubits, 1 layers)": every count the reports print goes through one helper."""
    from qnas_hw.reports.report import summary_markdown
    from qnas_hw.text import plural

    assert [plural(n, "layer") for n in (0, 1, 2, 1.0)] == ["0 layers", "1 layer", "2 layers", "1 layer"]
    assert plural(3, "batch", "batches") == "3 batches"
    one = Rec(Architecture.parse("angle-y|q2|l1|ry|linear"), {"val_error": 0.1, "runtime_s": 1.0})
    data = analyze([one], [Gen(0, [one.arch.canonical()], [])], ["val_error", "runtime_s"],
                   {"hardware": {"qubit_budget": 1}, "data": {"dataset": "iris"}})  # fmt: skip
    summary = summary_markdown(data)
    assert "(2 qubits, 1 layer)" in summary and "1 layers" not in summary
    assert "qubit budget: 1 qubit per subcircuit" in summary
    assert "study holds 1 candidate (" in summary
    assert "(1 of 1 candidate)" in str(front_table(data).title)


def test_every_report_says_how_many_two_qubit_gates_and_which_are_product_states(tmp_path: Path) -> None:
    """Reference: qiskit's own transpilation of each architecture's circuit (cx count on all-to-all)."""
    from qiskit import transpile

    from qnas_hw.model.circuits import PRODUCT_STATE, build_circuit

    records, gens = synthetic_study(seed=4)
    records = [
        Rec(
            r.arch,
            r.objectives,
            {k: v for k, v in r.details.items() if k != "n_2q"},
            r.timings,
            r.generation,
            r.feasible,
        )
        for r in records
    ]
    data = analyze(records, gens, NAMES, {"seed": 4})
    files = write_report_data(data, tmp_path / "report")
    report = json.loads(files.report_json.read_text())
    summary = files.summary_md.read_text()
    header, rows = _markdown_table(summary, "## Pareto front")
    column = header.index("2q gates")
    by_arch = {row[1].strip("`").replace("\\|", "|"): row[column] for row in rows}
    kinds = set()
    for cand in report["candidates"]:
        arch = Architecture.parse(cand["architecture"])
        expected = (
            transpile(build_circuit(arch), basis_gates=["rz", "sx", "x", "cx"], optimization_level=1, seed_transpiler=0)
            .count_ops()
            .get("cx", 0)
        )
        assert cand["two_qubit_gates"] == expected, arch.canonical()
        assert cand["circuit_class"] == (PRODUCT_STATE if expected == 0 else "entangling")
        kinds.add(cand["circuit_class"])
        if cand["architecture"] in by_arch:
            assert by_arch[cand["architecture"]] == (f"{expected} (product)" if expected == 0 else str(expected))
    assert kinds == {PRODUCT_STATE, "entangling"}  # the synthetic study holds both kinds
    assert PRODUCT_STATE in summary


def test_a_stored_device_count_is_the_one_reported() -> None:
    from qnas_hw.reports.data import circuit_class, two_qubit_gates

    arch = Architecture.parse("angle-y|q4|l2|ry|ring|z")
    rec = Rec(arch, {"val_error": 0.1}, {"runtime_s": {"n_2q": 27}}, {}, 0, True)  # routing added SWAPs
    assert two_qubit_gates(rec) == 27 and circuit_class(rec) == "entangling"


def test_min_two_qubit_gates_makes_product_states_infeasible() -> None:
    from qnas_hw.config import ConfigError, config_from_dict
    from qnas_hw.search.problem import Constraints

    c = Constraints(cut_plan=False, min_two_qubit_gates=1)
    assert c.names == ["evaluation", "min_two_qubit_gates"]
    product = Architecture.parse("angle-y|q4|l2|ry|none|z")
    ring = Architecture.parse("angle-y|q4|l2|ry|ring|z")
    assert c.values(product, {})[-1] == 1.0  # one gate short
    assert c.values(ring, {})[-1] <= 0.0
    assert Constraints(cut_plan=False).names == ["evaluation"]  # the default adds nothing
    with pytest.raises(ConfigError, match="min_two_qubit_gates=-1"):
        config_from_dict({"search": {"min_two_qubit_gates": -1}})
