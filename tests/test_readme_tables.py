"""Every README results table is what benchmarks/readme_tables.py builds from benchmarks/results/."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "readme_tables.py"


def test_readme_tables_match_the_committed_results() -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_a_hand_edited_figure_is_caught() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import readme_tables
    finally:
        sys.path.remove(str(SCRIPT.parent))
    readme = (ROOT / "README.md").read_text()
    assert "<!-- table:search_quality -->" in readme
    tampered = re.sub(
        r"(<!-- table:search_quality -->\n\|[^\n]*\n\|[^\n]*\n\| \w[\w-]* \| )[0-9.]+", r"\g<1>9.9999", readme, count=1
    )
    assert tampered != readme
    assert readme_tables.render(tampered) == readme


def _benchmark_module(name: str) -> ModuleType:
    """A script of benchmarks/ imported by path (they import their sibling ``presets`` that way)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(SCRIPT.parent))


def _pair(seed: int, h_val: float, h_test: float, a_test: float) -> dict[str, object]:
    model = {"val_loss": 0.1, "best_epoch": 2, "wall_seconds": 60.0, "n_classical_params": 100}
    return {
        "seed": seed,
        "hybrid": {**model, "val_acc": h_val, "test_acc": h_test},
        "ablation": {**model, "val_acc": 0.9, "test_acc": a_test},
    }


def test_paper_table_verdict_needs_the_whole_interval_on_one_side() -> None:
    pt = _benchmark_module("paper_table")
    assert pt.compare(97.5, 0.2, 97.16) == "beats"
    assert pt.compare(97.3, 0.2, 97.16) == "matches"
    assert pt.compare(96.0, 0.5, 97.16) == "below"
    assert pt.compare(99.0, None, 97.16) == "n/a"  # one seed: no interval, no verdict
    assert pt.t_interval([1.0]) == (1.0, None)
    mean, half = pt.t_interval([0.9, 0.92, 0.94])
    assert abs(mean - 0.92) < 1e-12 and abs(half - 4.302652729911275 * 0.02 / 3**0.5) < 1e-9


def test_paper_table_chooses_the_seed_on_validation_never_on_test() -> None:
    pt = _benchmark_module("paper_table")
    pick = {"runs": [_pair(0, 0.95, 0.99, 0.97), _pair(1, 0.97, 0.90, 0.97), {"seed": 2, "hybrid": {}}]}
    s = pt.summarize(pick, 97.16)
    assert s["seeds_done"] == 2  # the half-finished pair is not counted
    assert s["chosen_seed"] == 1 and s["chosen_test_acc"] == 0.90
    assert abs(s["diff_test_mean"] - (0.02 - 0.07) / 2) < 1e-12


def test_paper_table_renders_a_stopped_run_as_incomplete() -> None:
    pt, rt = _benchmark_module("paper_table"), _benchmark_module("readme_tables")
    pick = {"labels": ["knee"], "arch": "angle-x|q3|l1|ry|linear|z", "qubits": 3, "layers": 1}
    pick["runs"] = [_pair(0, 0.95, 0.96, 0.97), _pair(1, 0.96, 0.97, 0.98)]
    pick["summary"] = pt.summarize(pick, 97.16)
    doc = {
        "command": "python benchmarks/paper_table.py --dataset all",
        "commit": "0123456789",
        "seeds": [0, 1, 2],
        "machine": {"cores": 2, "torch": "2", "qiskit": "2", "torch_threads": 1},
        "seconds": 600.0,
        "complete": False,
        "datasets_planned": ["mnist", "fashion-mnist"],
        "datasets": [{"dataset": "mnist", "published": {"acc": 97.16, "qubits": 8, "layers": 2}, "picks": [pick]}],
    }
    doc["datasets"][0]["search"] = {"seconds": 180.0}
    text = rt.paper_table(doc)
    assert "| MNIST | knee | `angle-x\\|q3\\|l1\\|ry\\|linear\\|z` | 3 / 1 | **96.50 ± 6.35** | 97.00 |" in text
    assert "| 2 of 3 |" in text
    assert "**incomplete**: written before the run ended (not finished: MNIST, Fashion-MNIST)" in text
    assert "the classical ablation beats the hybrid" in text or "as good as the hybrid" in text


def test_an_absolute_path_in_a_recorded_command_is_refused(tmp_path: Path, monkeypatch) -> None:
    rt = _benchmark_module("readme_tables")
    (tmp_path / "ok.json").write_text(
        '{"command": "python benchmarks/x.py --data-dir ../shared/datasets --out benchmarks/results/ok.json"}'
    )
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    assert rt.absolute_paths_in_commands() == []
    (tmp_path / "bad.json").write_text('{"command": "python benchmarks/x.py --out=/work/bench/x.json"}')
    found = rt.absolute_paths_in_commands()
    assert len(found) == 1 and found[0].startswith("bad.json: /work/bench/x.json")
    assert rt.main(["--check"]) == 1


def test_iris_kfold_never_validates_or_standardises_on_the_test_fold() -> None:
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.model_selection import RepeatedStratifiedKFold

    ik = _benchmark_module("iris_kfold")
    bunch = load_iris()
    x, y = bunch.data, bunch.target
    train, test = next(RepeatedStratifiedKFold(n_splits=5, n_repeats=1, random_state=0).split(x, y))
    s = ik.fold_splits(x, y, train, test, 0.2, seed=0)
    idx = s.indices
    assert set(idx["test"]) == set(test)
    assert not set(idx["val"]) & set(test) and not set(idx["train"]) & set(test)
    assert set(idx["train"]) | set(idx["val"]) == set(train)
    assert np.allclose(s.train.tensors[0].numpy().mean(axis=0), 0, atol=1e-5)  # standardised on train only
    # Nadeau-Bengio: the plain t half-width scaled by sqrt(1 + k * n_test/n_train)
    diffs = [0.0, 0.02, -0.01, 0.03, 0.01]
    _, plain = _benchmark_module("paper_table").t_interval(diffs)
    assert abs(ik.corrected_interval(diffs, 0.25) - plain * (1 + 5 * 0.25) ** 0.5) < 1e-12


def test_an_absolute_path_inside_a_results_files_rows_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Not only the top-level command: a timed inner command naming a temporary input is caught too (predict.json
    once recorded ``--data /tmp/qnas-predict-bench-.../inputs.npz``)."""
    rt = _benchmark_module("readme_tables")
    monkeypatch.setattr(rt, "RESULTS", tmp_path)
    inner = {"command": "python benchmarks/p.py", "timed": {"command": "qnas-hw predict B --data INPUTS.npz"}}
    (tmp_path / "ok.json").write_text(json.dumps(inner))
    assert rt.absolute_paths_in_commands() == []
    inner["timed"] = [{"command": "qnas-hw predict B --data /tmp/qnas-x/inputs.npz"}]
    (tmp_path / "bad.json").write_text(json.dumps(inner))
    found = rt.absolute_paths_in_commands()
    assert len(found) == 1 and found[0].startswith("bad.json: /tmp/qnas-x/inputs.npz")
    (tmp_path / "bad.json").write_text(json.dumps({"commands": ["python b.py --out /work/x.json", "python b.py"]}))
    found = rt.absolute_paths_in_commands()  # a campaign's list of contributing commands too
    assert len(found) == 1 and found[0].startswith("bad.json: /work/x.json")


def test_a_timing_taken_on_a_loaded_machine_is_labelled_and_a_quiet_one_is_not() -> None:
    rt = _benchmark_module("readme_tables")
    loaded = {"machine": {"cores": 2, "load_average_at_start": [6.4, 5.8, 4.9]}}
    quiet = {"machine": {"cores": 2, "load_at_start": 0.9}}
    newer = {"load_before_timing": {"load_average": [3.1, 2.0, 1.0], "cores": 4}}
    assert rt.recorded_load(loaded) == (6.4, 2)
    assert "loaded machine (load average 6.4 on 2 cores" in rt.load_note(loaded)
    assert rt.load_note(quiet) == "" and rt.load_note(newer) == ""
    assert "not recorded" in rt.load_note({})
    readme = (ROOT / "README.md").read_text()
    for name in rt.TABLES:  # every loaded table of the README says so, and none that was quiet
        path = rt.RESULTS / f"{name}.json"
        if f"<!-- table:{name} -->" not in readme or not path.is_file():
            continue
        block = readme.split(f"<!-- table:{name} -->")[1].split(f"<!-- /table:{name} -->")[0]
        note = rt.load_note(json.loads(path.read_text()))
        assert ("loaded machine" in note) == ("Timed on a loaded machine" in block), name
        assert ("not recorded" in note) == ("load before timing was not recorded" in block), name


def test_the_examples_readme_figures_are_generated_too() -> None:
    """examples/README.md once held hand-typed MNIST figures; its table is now built from mnist_fixed.json."""
    rt = _benchmark_module("readme_tables")
    examples = (ROOT / "examples" / "README.md").read_text()
    assert rt.README.parent / "examples" / "README.md" in rt.READMES
    assert "<!-- table:mnist_fixed -->" in examples
    tampered = re.sub(r"\*\*\d+\.\d+ ± ", "**99.99 ± ", examples, count=1)  # the hybrid's mean, hand-edited
    assert tampered != examples and rt.render(tampered) == examples
    assert "98.60%" not in examples and "pilot" not in examples


def _row(dataset: str, backend: str, mode: str, pick: str, accs: list[float], product: int = 0) -> dict[str, object]:
    na = _benchmark_module("noise_aware")
    return {
        "dataset": dataset,
        "backend": backend,
        "mode": mode,
        "pick": pick,
        "test_acc_noisy_mean": sum(accs) / len(accs),
        "test_acc_noisy_ci95": na.ci95(accs),
        "seeds": list(range(len(accs))),
        "product_states": product,
        "n_2q": [3] * len(accs),
    }


def test_noise_aware_goals_judge_each_goal_on_the_whole_interval_and_the_seed_count() -> None:
    rt, na = _benchmark_module("readme_tables"), _benchmark_module("noise_aware")
    assert rt._verdict([0.001, 0.05], 5, 5) == "met"
    assert rt._verdict([-0.001, 0.05], 5, 5) == "not met"
    assert rt._verdict([0.01, 0.05], 3, 5) == "met so far (3 of 5 seeds)"
    assert rt._verdict(None, 1, 5) == "no interval (one seed)"
    # noisy beats random on every one of 5 seeds (a positive interval); quito at 86% with a narrow interval
    noisy, random = [0.86, 0.87, 0.86, 0.85, 0.86], [0.84, 0.845, 0.85, 0.835, 0.84]
    runs = []
    for seed in range(5):
        for mode, acc in (("noisy", noisy[seed]), ("random-noisy", random[seed])):
            base = {"dataset": "mnist4", "backend": "fake_kolkata", "mode": mode, "seed": seed}
            runs.append({**base, "pick": "most-accurate", "test_acc_noisy": acc})
    quito = [0.86, 0.855, 0.865, 0.86, 0.862]
    doc = {
        "rows": [
            _row("mnist4", "fake_kolkata", "noisy", "most-accurate", noisy, product=4),
            _row("mnist4", "fake_kolkata", "noisy", "best-entangling", [0.8, 0.82, 0.78, 0.8, 0.8]),
            _row("mnist4", "-", "classical", "no-circuit", [0.9, 0.89, 0.91, 0.9, 0.9]),
            _row("mnist4", "fake_quito", "noisy", "most-accurate", quito),
        ],
        "comparisons": na.comparisons(runs),
        "complete": True,
    }
    text = rt.noise_aware_goals(doc)
    diffs = [a - b for a, b in zip(noisy, random, strict=True)]
    lo, hi = stats.t.interval(0.95, 4, loc=np.mean(diffs), scale=stats.sem(diffs))  # the independent reference
    assert f"| most-accurate | **+{100 * np.mean(diffs):.1f} [+{100 * lo:.1f}, +{100 * hi:.1f}]** | 5 | met |" in text
    assert "| MNIST-4 / fake_kolkata | 86.0 ± 0.9 | 4 of 5 seeds | 80.0 ± 1.8 | 3, 3, 3, 3, 3 | 90.0 ± 0.9 |" in text
    assert "| MNIST-4 / fake_quito | most-accurate | 86.0 ± 0.5 | 5 | met |" in text
    assert "not complete" not in text
    doc["rows"][-1] = _row("mnist4", "fake_quito", "noisy", "most-accurate", [0.80, 0.9, 0.86, 0.84, 0.88])
    assert "| 5 | not met |" in rt.noise_aware_goals(doc)  # a half-width above 3 points misses


def test_search_quality_pairs_hypervolume_by_seed() -> None:
    rt = _benchmark_module("readme_tables")
    ours, theirs = [1.25, 1.26, 1.24, 1.27], [1.24, 1.24, 1.235, 1.25]
    rows = [{"method": "nsga2", "seed": s, "hypervolume": h} for s, h in enumerate(ours)]
    rows += [{"method": "random", "seed": s, "hypervolume": h} for s, h in enumerate(theirs)]
    rows.append({"method": "random", "seed": 9, "hypervolume": 2.0})  # no partner: not paired
    ci = stats.ttest_rel(ours, theirs).confidence_interval(0.95)  # the independent reference
    mean = float(np.mean(np.subtract(ours, theirs)))
    line = rt._paired_hypervolume(rows, "nsga2")[0]
    assert (
        line
        == f"Paired by seed, hypervolume nsga2 − random: **{mean:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]** (4 seeds)."
    )
