"""Regenerate the README's results tables from the committed files in ``benchmarks/results/``.

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``
in README.md and is rebuilt from ``benchmarks/results/NAME.json``, so no
figure is typed by hand.  ``--check`` exits 1 when the README differs from the
files (the test suite runs it).  Tables covered so far: ``noise_aware``,
``search_quality`` (and ``search_quality_10_generations``), ``default_job``,
``paper_table`` (or ``paper_table_<dataset>`` for a one-dataset run), ``mnist_fixed``, ``simulator``,
``executor``, ``cut_planning``, ``iris_kfold``, ``proxy_quality`` and ``supercircuit_quality``;
``noise_aware_goals`` judges the search-proof campaign's goals from ``noise_aware.json``.

The tables of ``examples/README.md`` are generated the same way.  A table whose
results file was timed at a load average above its core count gets a sentence
saying so, and both modes print a warning for it.

Both modes refuse (exit 1) a results file whose recorded commands (the
top-level ``command`` and any ``command`` inside it) name an absolute path
(``--data-dir /work/...``, ``--out /tmp/...``): a reader has none of those
places, so commands are recorded relative to the repository.

    python benchmarks/readme_tables.py          # rewrite README.md
    python benchmarks/readme_tables.py --check  # fail if it is stale
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"


def _pct(mean: float, ci: float | None) -> str:
    if ci is None or (isinstance(ci, float) and math.isnan(ci)):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * ci:.1f}"


def _pts_ci(mean: float, ci: list[float] | None) -> str:
    """A paired difference in points with its interval, bold when the interval excludes 0."""
    if ci is None:
        return f"{100 * mean:+.1f} (one seed)"
    text = f"{100 * mean:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
    return f"**{text}**" if ci[0] > 0 or ci[1] < 0 else text


def noise_aware(doc: dict[str, Any]) -> str:
    """Each search's picks tested once under noise; paired comparisons and hypervolume where the run has them."""
    lines = [
        "| data set | device | search | pick | test acc. under noise (%) | ideal (%) | seeds | product states "
        "| qubits | 2q gates | search s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        product = r.get("product_states")
        product_cell = "–" if product is None or r["mode"] == "classical" else f"{product} of {len(r['seeds'])}"
        lines.append(
            f"| {r['dataset']} | {r['backend']} | {r['mode']} | {r['pick']} | "
            f"{_pct(r['test_acc_noisy_mean'], r['test_acc_noisy_ci95'])} | "
            f"{_pct(r['test_acc_ideal_mean'], r['test_acc_ideal_ci95'])} | {len(r['seeds'])} | "
            f"{product_cell} | "
            f"{', '.join(str(q) for q in r['qubits'])} | {', '.join(str(g) for g in r['n_2q'])} | "
            f"{r['search_seconds']:.0f} |"
        )
    comparisons = doc.get("comparisons") or []
    if comparisons:
        lines += [
            "",
            "| data set | device | pick | noisy − other (points of noisy test accuracy), paired by seed | seeds |",
            "|---|---|---|---|---|",
        ]
        for c in comparisons:
            lines.append(
                f"| {c['dataset']} | {c['backend']} | {c['pick']} | noisy − {c['b']}: "
                f"{_pts_ci(c['diff_mean'], c['diff_ci95'])} | {len(c['seeds'])} |"
            )
    hv = doc.get("hypervolume") or []
    if hv:
        lines += [
            "",
            "| benchmark | search | hypervolume (the study's fixed box), mean ± 95% CI | seeds |",
            "|---|---|---|---|",
        ]
        for h in hv:
            ci = h["hypervolume_ci95"]
            lines.append(
                f"| {h['benchmark']} | {h['mode']} | {h['hypervolume_mean']:.4f}"
                f"{'' if ci is None or math.isnan(ci) else f' ± {ci:.4f}'} | {h['seeds']} |"
            )
    budget = doc.get("budget") or {}
    lines.append("")
    if budget:
        parts = [
            f"{name}: {b['space_size']:,} architectures, at most {b['max_evaluations']} evaluated per search, "
            f"{b['cpu_seconds']:.0f} CPU s per search"
            for name, b in budget.items()
        ]
        lines.append("Budget, the same for every search method: " + "; ".join(parts) + ".")
        lines.append("")
    state = "complete" if doc.get("complete", True) else "stopped before the end: the rows above are what it measured"
    commands = doc.get("commands") or [doc["command"]]
    runs = "; ".join(f"`{c}`" for c in commands)
    lines.append(
        f"Run{'s' if len(commands) > 1 else ''}: {runs} (last at `{doc['commit'][:7]}`), "
        f"{doc['seconds'] / 60:.0f} min of searches and retraining, {state}."
    )
    return "\n".join(lines)


#: The benchmarks of issue 32's goals: (data set, device) -> name.
_GOAL_BENCHMARKS = {
    ("mnist4", "fake_kolkata"): "MNIST-4 / fake_kolkata",
    ("fashion4", "fake_kolkata"): "Fashion-4 / fake_kolkata",
    ("mnist4", "fake_quito"): "MNIST-4 / fake_quito",
}


def _verdict(ci: list[float] | None, seeds: int, target: int) -> str:
    """Met only when the whole interval is above 0; short of the target seeds the verdict is provisional."""
    if ci is None:
        return "no interval (one seed)"
    return _so_far("met" if ci[0] > 0 else "not met", seeds, target)


def _so_far(word: str, seeds: int, target: int) -> str:
    """A verdict on fewer seeds than the campaign's target is marked as provisional."""
    return word if seeds >= target else f"{word} so far ({seeds} of {target} seeds)"


def _rows_by_key(doc: dict[str, Any]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """The summary rows by (data set, device, search, pick)."""
    return {(r["dataset"], r["backend"], r["mode"], r["pick"]): r for r in doc["rows"]}


def _headline_rows(doc: dict[str, Any]) -> list[str]:
    """Per benchmark: the noisy search's most-accurate pick (is it a product state?) beside its best entangling pick
    and the classical ablation of the same data set."""
    rows = _rows_by_key(doc)
    lines = [
        "| benchmark | `noisy` most-accurate pick (%) | a product state in | best entangling pick (%) | its 2q gates "
        "| classical ablation (%) |",
        "|---|---|---|---|---|---|",
    ]
    for (dataset, backend), name in _GOAL_BENCHMARKS.items():
        best = rows.get((dataset, backend, "noisy", "most-accurate"))
        ent = rows.get((dataset, backend, "noisy", "best-entangling"))
        classical = rows.get((dataset, "-", "classical", "no-circuit"))
        if best is None or ent is None:
            continue
        product = f"{best['product_states']} of {len(best['seeds'])} seeds"
        gates = ", ".join(str(g) for g in ent["n_2q"])
        ablation = (
            "–" if classical is None else _pct(classical["test_acc_noisy_mean"], classical["test_acc_noisy_ci95"])
        )
        lines.append(
            f"| {name} | {_pct(best['test_acc_noisy_mean'], best['test_acc_noisy_ci95'])} | {product} | "
            f"{_pct(ent['test_acc_noisy_mean'], ent['test_acc_noisy_ci95'])} | {gates} | {ablation} |"
        )
    return lines


def _goal_rows(doc: dict[str, Any], target: int) -> list[str]:
    """Each goal of the search-proof issue against its figure, computed from the comparisons and rows of the file."""
    comps = {(c["dataset"], c["backend"], c["pick"], c["b"]): c for c in doc.get("comparisons") or []}
    lines = ["| goal | benchmark | pick | figure | seeds | verdict |", "|---|---|---|---|---|---|"]
    goals = (("NSGA-II beats random: `noisy` − `random-noisy` > 0", "random-noisy", 2),)
    goals += (("the device in the loop helps: `noisy` − `ideal` > 0 on one benchmark", "ideal", 3),)
    goals += (("reported: `noisy` − `optuna-noisy`", "optuna-noisy", 3),)
    for goal, other, n_bench in goals:
        for (dataset, backend), name in list(_GOAL_BENCHMARKS.items())[:n_bench]:
            for pick in ("most-accurate", "best-entangling"):
                c = comps.get((dataset, backend, pick, other))
                if c is None:
                    continue
                verdict = "–" if other == "optuna-noisy" else _verdict(c["diff_ci95"], len(c["seeds"]), target)
                lines.append(
                    f"| {goal} | {name} | {pick} | {_pts_ci(c['diff_mean'], c['diff_ci95'])} | {len(c['seeds'])} "
                    f"| {verdict} |"
                )
    quito = _rows_by_key(doc).get(("mnist4", "fake_quito", "noisy", "most-accurate"))
    if quito is not None:
        mean, half, n = quito["test_acc_noisy_mean"], quito["test_acc_noisy_ci95"], len(quito["seeds"])
        ok = half is not None and not math.isnan(half) and mean >= 0.85 and half <= 0.03
        verdict = _so_far("met" if ok else "not met", n, target)
        lines.append(
            f"| mean >= 85% with a half-width <= 3 points | MNIST-4 / fake_quito | most-accurate | "
            f"{_pct(mean, half)} | {n} | {verdict if n > 1 else 'no interval (one seed)'} |"
        )
    return lines


def _evaluations(doc: dict[str, Any]) -> list[str]:
    """How many architectures each method scored in its budget (a search's picks share one count), per benchmark."""
    per: dict[str, dict[str, list[int]]] = {}
    for r in doc.get("runs") or []:
        if r["mode"] != "classical" and r["pick"] == "knee":
            per.setdefault(r["benchmark"], {}).setdefault(r["mode"], []).append(r["evaluations"])
    parts = [
        f"{bench}: " + ", ".join(f"{mode} {sum(n) / len(n):.0f}" for mode, n in sorted(modes.items()))
        for bench, modes in per.items()
    ]
    if not parts:
        return []
    return ["", "Architectures scored per search, mean over seeds (the same CPU budget): " + "; ".join(parts) + "."]


def noise_aware_goals(doc: dict[str, Any]) -> str:
    """The campaign's headline per benchmark and its goals, each judged from the same file as the tables above."""
    target = 5  # the "at least 5 paired seeds"
    state = "" if doc.get("complete") else ' The campaign is not complete: a verdict marked "so far" is progress.'
    return "\n".join(
        _headline_rows(doc)
        + [""]
        + _goal_rows(doc, target)
        + _evaluations(doc)
        + [
            "",
            f"Intervals: Student t over paired seeds, one per comparison (no correction for the several picks).{state}",
        ]
    )


def search_quality(doc: dict[str, Any]) -> str:
    lines = [
        "| method | hypervolume (fixed box), mean ± 95% CI | best val_error, mean | evaluations | seconds | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for s in doc["summary"]:
        rows = [r for r in doc["rows"] if r["method"] == s["method"]]
        evals = sorted({r["evaluations"] for r in rows})
        lines.append(
            f"| {s['method']} | {s['hypervolume_mean']:.4f} ± {s['hypervolume_ci95']:.4f} | "
            f"{s['best_val_error_mean']:.4f} | {', '.join(map(str, evals))} | {s['seconds_mean']:.0f} | {s['seeds']} |"
        )
    lines += ["", *_paired_hypervolume(doc["rows"], "nsga2")]
    lines.append(f"Run: `{doc['command']}` at `{doc['commit'][:7]}`, {doc['seconds'] / 60:.0f} min.")
    return "\n".join(lines)


def _paired_hypervolume(rows: list[dict[str, Any]], ours: str) -> list[str]:
    """``ours`` minus each other method's hypervolume, paired by seed, with a Student t interval (bold when it
    excludes 0): the seeds share a space and a data split, so the pairing removes most of the seed-to-seed spread."""
    from scipy import stats

    hv = {(r["method"], r["seed"]): r["hypervolume"] for r in rows}
    parts = []
    for other in sorted({m for m, _ in hv} - {ours}):
        diffs = [hv[(ours, s)] - hv[(other, s)] for m, s in hv if m == ours and (other, s) in hv]
        if len(diffs) < 2:
            continue
        mean, sem = sum(diffs) / len(diffs), float(stats.sem(diffs))
        lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=mean, scale=sem)
        text = f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        parts.append(f"{ours} − {other}: {f'**{text}**' if lo > 0 or hi < 0 else text} ({len(diffs)} seeds)")
    return ["Paired by seed, hypervolume " + "; ".join(parts) + ".", ""] if parts else []


def default_job(doc: dict[str, Any]) -> str:
    lines = ["| architecture | pick | val_error | runtime_s | subcircuits |", "|---|---|---|---|---|"]
    for f in doc["front"]:
        o = f["objectives"]
        arch = f["architecture"].replace("|", "\\|")
        lines.append(
            f"| `{arch}` | {', '.join(f['picks']) or '-'} | {o['val_error']:.4f} | {o['runtime_s']:.2f} | "
            f"{o['subcircuits']:.0f} |"
        )
    curve = ", ".join(f"{hv:.3f}" for _, hv in doc["hypervolume_per_generation"])
    lines.append("")
    lines.append(
        f"{doc['candidates']} candidates in {doc['wall_seconds']:.0f} s wall ({doc['machine']['cores']} cores); "
        f"hypervolume per generation in the study's fixed box (ceiling 1.331): {curve}. "
        f"Run: `{doc['command']}` at `{doc['commit'][:7]}`."
    )
    return "\n".join(lines)


#: How the README names the data sets of the paper table.
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "iris": "Iris"}
#: The generated sentence for each hybrid-vs-ablation outcome (the CI of the paired difference decides).
ABLATION_WORDS = {
    "hybrid better": "the hybrid beats its classical ablation",
    "ablation better": "**the classical ablation beats the hybrid**",
    "no difference": "**the classical ablation is as good as the hybrid** (the paired difference's CI contains 0)",
    "n/a": "one seed only: no interval, no verdict against the ablation",
}


def _pts(mean: float, ci: float | None, signed: bool = False) -> str:
    """Percent (or percentage points) with two decimals, ± the 95% half-width when there is one."""
    value = f"{100 * mean:+.2f}" if signed else f"{100 * mean:.2f}"
    return value if ci is None else f"{value} ± {100 * ci:.2f}"


def _paper_rows(doc: dict[str, Any]) -> list[str]:
    planned = len(doc["seeds"])
    rows = []
    for ds in doc["datasets"]:
        pub = ds["published"]
        for p in ds.get("picks", []):
            s = p.get("summary", {})
            if not s.get("seeds_done"):
                continue
            seeds = str(s["seeds_done"]) if s["seeds_done"] == planned else f"{s['seeds_done']} of {planned}"
            rows.append(
                f"| {DATASET_NAMES.get(ds['dataset'], ds['dataset'])} | {' = '.join(p['labels'])} | "
                f"`{p['arch'].replace('|', chr(92) + '|')}` | {p['qubits']} / {p['layers']} | "
                f"**{_pts(s['hybrid_test_mean'], s['hybrid_test_ci95'])}** | {100 * s['chosen_test_acc']:.2f} | "
                f"{_pts(s['ablation_test_mean'], s['ablation_test_ci95'])} | "
                f"{_pts(s['diff_test_mean'], s['diff_test_ci95'], signed=True)} | "
                f"{pub['acc']:g} ({pub['qubits']} / {pub['layers']}) | {s['verdict']} | {seeds} | "
                f"{ds['search']['seconds'] / 60:.1f} | {s['retrain_seconds'] / 60:.1f} |"
            )
    return rows


def _paper_settings(ds: dict[str, Any]) -> str:
    """One dataset's search and retrain settings, from the resolved config and the first pick's train config."""
    c, name = ds["config"], DATASET_NAMES.get(ds["dataset"], ds["dataset"])
    subset = c["data"]["limit_train"]
    pool = f"a {subset:,}-sample training subset" if subset else "the training file"
    sizes = ds.get("retrain_sizes", {})
    split = " / ".join(f"{sizes[k]:,} {k}" for k in ("train", "val", "test") if k in sizes)
    text = (
        f"{name}: search on {pool} (validation: {c['data']['val_fraction']:g} of the training file), space "
        f"{c['space']['qubits'][0]}-{c['space']['qubits'][1]} qubits / {c['space']['layers'][0]}-"
        f"{c['space']['layers'][1]} layers, {c['model']['frontend']} front-end, population "
        f"{c['search']['pop_size']} x {c['search']['generations']} generations ({ds['search']['n_candidates']} "
        f"candidates, front of {ds['search']['front_size']}), SuperCircuit {c['supercircuit']['epochs']} epochs at lr "
        f"{c['supercircuit']['lr']:g}, backend {c['hardware']['backend']} with a {c['hardware']['qubit_budget']}-qubit "
        f"budget; retrain from scratch on {split}"
    )
    tc = next((p["train_config"] for p in ds.get("picks", []) if "train_config" in p), None)
    if tc:
        text += f", at most {tc['epochs']} epochs (patience {tc['patience']}, lr {tc['lr']:g}, "
        text += f"batch {tc['batch_size']})"
    return text + "."


def _paper_ablation(ds: dict[str, Any]) -> list[str]:
    name = DATASET_NAMES.get(ds["dataset"], ds["dataset"])
    out = []
    for p in ds.get("picks", []):
        s = p.get("summary", {})
        if not s.get("seeds_done"):
            continue
        params = {r[m]["n_classical_params"] for r in p["runs"] for m in ("hybrid", "ablation") if m in r}
        same = f"both with {params.pop():,} classical parameters" if len(params) == 1 else "classical parameters differ"
        lead = "ablation" if s["diff_test_mean"] < 0 else "hybrid"
        higher = f"the {lead}'s mean is the higher one, by {abs(100 * s['diff_test_mean']):.2f} points"
        out.append(f"{name} {' = '.join(p['labels'])}: {ABLATION_WORDS[s['vs_ablation']]}; {higher}; {same}.")
    return out


def _paper_tally(doc: dict[str, Any]) -> str:
    """The whole table in one generated sentence: against the ablation and against the published figures."""
    summaries = [
        p["summary"] for ds in doc["datasets"] for p in ds.get("picks", []) if p.get("summary", {}).get("seeds_done")
    ]
    n = len(summaries)
    vs_abl = [s["vs_ablation"] for s in summaries]
    verdicts = [s["verdict"] for s in summaries]
    return (
        f"Over the {n} pick(s) measured: the hybrid beats its classical ablation in {vs_abl.count('hybrid better')}, "
        f"the ablation is as good as the hybrid in {vs_abl.count('no difference')} and better in "
        f"{vs_abl.count('ablation better')}; against the published figure the verdict is beats in "
        f"{verdicts.count('beats')}, matches in {verdicts.count('matches')} and below in {verdicts.count('below')}."
    )


def paper_table(doc: dict[str, Any]) -> str:
    """Searched picks vs the published figures: mean ± 95% CI over seeds, the chosen seed, the classical ablation."""
    lines = [
        "| data set | pick | architecture | qubits / layers | hybrid test %, mean ± 95% CI | chosen seed's test % "
        "| classical ablation test % | hybrid − ablation (points) | published % (qubits / layers) | verdict | seeds "
        "| search min | retrain min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *_paper_rows(doc),
        "",
    ]
    done = {ds["dataset"] for ds in doc["datasets"] if ds.get("complete")}
    missing = [DATASET_NAMES.get(d, d) for d in doc.get("datasets_planned", []) if d not in done]
    notes = [_paper_settings(ds) for ds in doc["datasets"] if "config" in ds]
    notes += [line for ds in doc["datasets"] for line in _paper_ablation(ds)]
    lines += [f"- {n}" for n in notes]
    lines += ["", _paper_tally(doc)]
    seeds = doc["seeds"]
    m = doc["machine"]
    unfinished = ", ".join(missing) or "the last pick"
    state = (
        "complete" if doc["complete"] else f"**incomplete**: written before the run ended (not finished: {unfinished})"
    )
    lines += [
        "",
        f"Model seeds {seeds[0]}-{seeds[-1]} ({len(seeds)}), hybrid and ablation paired per seed. Run: "
        f"`{doc['command']}` at `{doc['commit'][:7]}`"
        + (f" (plus uncommitted {', '.join(doc['uncommitted_changes'])})" if doc.get("uncommitted_changes") else "")
        + f", {doc['seconds'] / 60:.0f} min on {m['cores']} cores (torch {m['torch']}, qiskit {m['qiskit']}, "
        f"{m['torch_threads']} thread), {state}.",
    ]
    return "\n".join(lines)


def proxy_quality(doc: dict[str, Any]) -> str:
    """Every proxy against trained noisy accuracy, per set: Kendall tau with its bootstrap CI, regret, cost."""
    sets = [(g["dataset"], g["backend"]) for g in doc["ground_truth"]]
    rows: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for r in doc["rows"]:
        rows.setdefault(r["proxy"], {})[(r["dataset"], r["backend"])] = r
    head = "| proxy | " + " | ".join(f"{d} on {b}: tau [95% CI]; top-1 regret; s per candidate" for d, b in sets)
    lines = [head + " |", "|---|" + "---|" * len(sets)]
    for name, per_set in rows.items():
        cells = []
        for key in sets:
            r = per_set.get(key)
            cells.append(
                "–"
                if r is None
                else f"{r['kendall_tau']:+.2f} [{r['tau_ci95'][0]:+.2f}, {r['tau_ci95'][1]:+.2f}]; "
                f"{r['top1_regret']:.1f} pts; {r['seconds_per_candidate']:.2f} s"
            )
        label = f"**{name}** (default)" if name == doc.get("default") else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    truths = []
    for g in doc["ground_truth"]:
        ceiling = g["seed_to_seed_tau"]
        ci = g.get("seed_to_seed_tau_ci95") or [math.nan, math.nan]
        truths.append(
            f"{g['dataset']} on {g['backend']}: {g['n_architectures']} architectures, {g['epochs']} epochs on "
            f"{g['train_images']:,} training images, noisy accuracy on {g['val_samples']:,} validation samples, mean "
            f"of seeds {g['seeds']} (range {100 * g['accuracy_range'][0]:.1f}-{100 * g['accuracy_range'][1]:.1f}%); "
            f"seed-to-seed tau (the ceiling) {ceiling:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]; noise-free trained "
            f"accuracy ranks it at tau {g['ideal_vs_noisy_tau']:+.2f}"
        )
    merged = [
        f"{name} ran beside it (`{sd['provenance']['command']}` at `{sd['provenance']['commit'][:7]}`)"
        for name, sd in doc["sets"].items()
        if "provenance" in sd
    ]
    if merged:
        merged_text = "; ".join(merged) + f", merged by `{doc['merge_command']}`."
    lines.append("Ground truth: " + "; ".join(truths) + ". " + _run(doc) + (" " + merged_text if merged else ""))
    earlier = doc.get("earlier_runs") or []
    if earlier:
        samples = sorted({r["cheap"]["samples"] for sd in doc["sets"].values() for r in sd["records"] if "cheap" in r})
        runs = ", ".join(f"`{e['commit'][:7]}`" for e in earlier)
        sizes = ", ".join(map(str, samples))
        lines.append(
            f"\nThe records were first measured at {runs}; the run above continued them, adding the cheap rungs "
            f"(`r@` in a halving, `scratch-r@N`: the same training run scored on a nested {sizes}-sample subset of "
            "the 512) to every record."
        )
    return "\n".join(lines)


def supercircuit_quality(doc: dict[str, Any]) -> str:
    """SuperCircuit training variants: final loss against chance, the largest subcircuit, and ranking."""
    lines = [
        "| set | what varies | sharing | sampling | epochs (batch, steps) | final loss / ln C | "
        "largest: inherited vs alone | inherited tau | inherited+1 tau |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        tau = f"{r['inherited_tau']:+.2f}" if "inherited_tau" in r else "–"
        tau1 = f"{r['inherited+1_tau']:+.2f}" if "inherited+1_tau" in r else "–"
        steps = f" ({r['batch_size']}, {r['steps']:,})" if "steps" in r else ""
        lines.append(
            f"| {r['set']} | {r['varies']} | {r['sharing']} | {r['sampling']} | {r['epochs']}{steps} | "
            f"{r['final_loss']:.3f} / {r['chance_loss']:.3f} = {r['loss_ratio']:.2f} | "
            f"{100 * r['largest_inherited_acc']:.1f}% vs {100 * r['largest_alone_acc']:.1f}% | {tau} | {tau1} |"
        )
    dirty = doc.get("uncommitted_changes") or []
    extra = f" (plus {len(dirty)} uncommitted file(s), listed in the results file)" if dirty else ""
    lines += ["", f"Run: `{doc['command']}` at `{doc['commit'][:7]}`{extra}."]
    return "\n".join(lines)


def _run(doc: dict[str, Any], minutes: bool = True) -> str:
    """The provenance sentence every new table ends with: command, commit, dirty files, time, complete or not."""
    dirty = doc.get("uncommitted_changes") or []
    text = f"Run: `{doc['command']}` at `{doc['commit'][:7]}`"
    if dirty:
        text += f" (plus {len(dirty)} uncommitted file(s), listed in the results file)"
    text += f", {doc['seconds'] / 60:.0f} min" if minutes else f", {doc['seconds']:.0f} s"
    complete = doc.get("complete", True)
    return text + (
        ", complete." if complete else ", **incomplete**: stopped before the end; the rows are what it measured."
    )


def mnist_fixed(doc: dict[str, Any]) -> str:
    """The fixed 8-qubit MNIST model and its ablation over seeds: mean ± 95% CI and the paired difference."""
    s, runs = doc["summary"], [r for r in doc["runs"] if "hybrid" in r and "ablation" in r]
    if not s.get("seeds_done"):
        return "No seed finished yet. " + _run(doc)
    seeds = ", ".join(str(r["seed"]) for r in runs)
    lines = [
        f"| model | test %, mean ± 95% CI | test % per seed ({seeds}) | best val %, mean | classical params "
        "| quantum params | wall s per model, mean |",
        "|---|---|---|---|---|---|---|",
    ]
    arch = doc["arch"].replace("|", "\\|")
    for m, label in (("hybrid", f"hybrid `{arch}`"), ("ablation", "classical ablation (identity, same width)")):
        per_seed = ", ".join(f"{100 * r[m]['test_acc']:.2f}" for r in runs)
        lines.append(
            f"| {label} | **{_pts(s[f'{m}_test_mean'], s[f'{m}_test_ci95'])}** | {per_seed} | "
            f"{100 * sum(r[m]['best_val_acc'] for r in runs) / len(runs):.2f} | "
            f"{runs[0][m]['n_classical_params']:,} | {runs[0][m]['n_quantum_params']} | "
            f"{sum(r[m]['wall_seconds'] for r in runs) / len(runs):.0f} |"
        )
    diffs = ", ".join(f"{100 * (r['hybrid']['test_acc'] - r['ablation']['test_acc']):+.2f}" for r in runs)
    lines.append(
        f"| hybrid − ablation (points) | {_pts(s['diff_test_mean'], s['diff_test_ci95'], signed=True)} | {diffs} "
        "| | | | |"
    )
    half = s["diff_test_ci95"]
    verdict = (
        "n/a"
        if half is None
        else "hybrid better"
        if s["diff_test_mean"] - half > 0
        else "ablation better"
        if s["diff_test_mean"] + half < 0
        else "no difference"
    )
    lines += ["", f"Against its ablation: {ABLATION_WORDS[verdict]}."]
    sizes = doc["sizes"]
    subset = (
        f"a stratified {doc['limit_train']:,}-image subset of the training part (`--limit-train`), not the full 54,000"
        if doc.get("limit_train")
        else "the full training part"
    )
    m = doc["machine"]
    lines += [
        "",
        f"Training on {subset}: {sizes['train']:,} train / {sizes['val']:,} validation (picks the epoch) / "
        f"{sizes['test']:,} official test images, {doc['epochs']} epochs, batch {doc['batch_size']}, lr "
        f"{doc['lr']:g}, {len(runs)} seed(s), hybrid and ablation paired per seed (same initialisation and batch "
        f"order); {m['cores']} cores, torch {m['torch']}, {m['torch_threads']} thread. " + _run(doc),
    ]
    return "\n".join(lines)


def simulator(doc: dict[str, Any]) -> str:
    """Forward+backward ms per step at each thread count, beside PennyLane timed in the same run."""
    pl = any("pennylane_ms" in r for r in doc["rows"])
    lines = [
        "| threads | workload | qnas-hw ms | qnas-hw CPU ms | samples/s | bandwidth floor ms | /floor"
        + (" | PennyLane ms | PennyLane / qnas-hw | max abs diff |" if pl else " |"),
        "|---|---|---|---|---|---|---" + ("|---|---|---|" if pl else "|"),
    ]
    for r in doc["rows"]:
        line = (
            f"| {r['threads']} | {r['workload']} ({r['qubits']} q, {r['layers']} l) | {r['ms_median']:.2f} | "
            f"{r['cpu_ms']:.2f} | "
            f"{r['samples_per_s']:,.0f} | {r['floor_ms']:.2f} | {r['over_floor']:.2f} |"
        )
        if pl:
            line += (
                f" {r['pennylane_ms']:,.1f} | **{r['pennylane_ratio']:.1f}x** | {r['pennylane_max_abs_diff']:.1e} |"
                if "pennylane_ms" in r
                else " - | - | - |"
            )
        lines.append(line)
    m = doc["machine"]
    bandwidths = ", ".join(f"{b:.1f}" for b in dict.fromkeys(round(r["bandwidth_gb_s"], 1) for r in doc["rows"]))
    batch = doc["rows"][0]["batch"] if doc["rows"] else "-"
    lines += [
        "",
        f"Median wall time of {doc['repeats']} steps (PennyLane: {doc['pennylane_repeats']}) at batch {batch}; CPU ms "
        "is the process CPU time per step, all threads (what a step costs when other processes preempt it); PennyLane "
        f"{m['pennylane']} `default.qubit`, torch interface, backprop, same circuit and inputs; max abs diff = "
        f"largest difference of the two simulators' <Z>. Floor: bytes touched per gate x gates / measured copy "
        f"bandwidth ({bandwidths} GB/s). {m['cores']} cores, torch {m['torch']}, load average at start "
        f"{doc['load_average_at_start'][0]:.1f}. " + _run(doc),
    ]
    return "\n".join(lines)


def executor(doc: dict[str, Any]) -> str:
    """Circuits per second of each submission strategy, and the batched-vs-per-sample ratio."""
    lines = [
        "| strategy | rows per job | jobs | in flight | seconds | circuits/s | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['mode']} | {r['rows_per_job']} | {r['jobs']} | {r['concurrency']} | {r['seconds']:.2f} | "
            f"{r['circuits_per_s']:.1f} | {r['speedup']:.1f}x |"
        )
    m = doc["machine"]
    lines.append("")
    if len(doc["rows"]) > 1:
        last, first = doc["rows"][-1], doc["rows"][0]
        lines.append(
            f"One PUB for the candidate ({last['mode']}) against one job per sample: "
            f"**{first['seconds'] / last['seconds']:.1f}x** the throughput."
        )
        lines.append("")
    lines.append(
        f"`{doc['backend']}` (Aer with the device's noise model, runtime local mode), `{doc['arch']}` "
        f"(transpiled depth {doc['transpiled_depth']}), {doc['samples']} samples x {doc['shots']} shots; "
        f"{m['cores']} cores, qiskit {m['qiskit']}, qiskit-aer {m['qiskit_aer']}. " + _run(doc, minutes=False)
    )
    return "\n".join(lines)


def _secs(stats: dict[str, Any], key: str, timeout: float) -> str:
    value = stats[key]
    return f"> {timeout:g}" if value is None else f"{value:.3f}" if value < 10 else f"{value:.1f}"


def cut_planning(doc: dict[str, Any]) -> str:
    """Median and maximum cold cut-planning time per candidate, the planner beside the addon's full search."""
    t = doc["full_timeout_s"]
    lines = [
        "| group | plans | feasible | planner median s | planner max s | full search median s | full search max s "
        f"| full search stopped at {t:g} s | same plan (of both finished) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for group, label in (("by_budget", "budget {}"), ("by_entangler", "`{}`")):
        for key, g in doc["summary"][group].items():
            p, f = g["planner_s"], g["full_s"]
            lines.append(
                f"| {label.format(key)} | {p['n']} | {g['feasible']} | {_secs(p, 'median', t)} | "
                f"{_secs(p, 'max', t)} | {_secs(f, 'median', t)} | {_secs(f, 'max', t)} | {f['censored']} | "
                f"{g['agree']}/{g['compared']} |"
            )
    m = doc["machine"]
    widths = [int(c.split("|q")[1].split("|")[0]) for c in doc["candidates"]]
    width_list = ", ".join(map(str, sorted(set(widths))))
    lines += [
        "",
        f"{len(widths)} seeded candidates (one per entangler at {width_list} qubits, listed "
        "in the file), each "
        f"planned cold at every budget in {doc['budgets'][0]}-{doc['budgets'][-1]} narrower than it. Planner: "
        "`CutPlanner`'s default (lower bound first, greedy plan when it proves infeasibility); full search: the "
        f"same planner without the precheck (`max_backjumps={doc['full_settings']['max_backjumps']}`), stopped "
        f"after {t:g} s (counted as more than {t:g} s). {m['cores']} cores, qiskit {m['qiskit']}, "
        f"qiskit-addon-cutting {m['qiskit_addon_cutting']}, load average at start "
        f"{m['load_average_at_start'][0]:.1f}. " + _run(doc),
    ]
    return "\n".join(lines)


def iris_kfold(doc: dict[str, Any]) -> str:
    """The Iris pick against its ablation over repeated stratified k-fold: the paired difference's intervals."""
    s = doc["summary"]
    if not s.get("folds_done"):
        return "No fold finished yet. " + _run(doc)
    pick = doc["pick"]
    arch = pick["arch"].replace("|", "\\|")
    lines = [
        "| model | test %, mean over folds ± 95% CI (t) | folds better | best epoch, mean |",
        "|---|---|---|---|",
    ]
    done = [r for r in doc["runs"] if "hybrid" in r and "ablation" in r]
    for m, label, wins in (
        ("hybrid", f"hybrid `{arch}`", s["folds_hybrid_better"]),
        ("ablation", "classical ablation (identity, same width)", s["folds_ablation_better"]),
    ):
        epochs = sum(r[m]["best_epoch"] for r in done) / len(done)
        lines.append(f"| {label} | {_pts(s[f'{m}_test_mean'], s[f'{m}_test_ci95'])} | {wins} | {epochs:.0f} |")
    lines.append(
        f"| hybrid − ablation (points) | **{_pts(s['diff_test_mean'], s['diff_test_ci95_corrected'], signed=True)}** "
        f"(corrected); ± {100 * s['diff_test_ci95']:.2f} plain t | {s['folds_tied']} tied | |"
    )
    tc = pick["train_config"]
    n = doc["folds"] * doc["repeats"]
    lines += [
        "",
        f"{doc['repeats']} x {doc['folds']}-fold `RepeatedStratifiedKFold` over the 150 flowers ({s['folds_done']} of "
        f"{n} folds done): each test fold ({done[0]['sizes']['test']} flowers) is read once per model; the "
        f"validation split ({done[0]['sizes']['val']} flowers, {pick['val_fraction']:g} of the training fold) picks "
        f"the epoch; inputs standardised on the training part. Paper-table Iris retrain settings: at most "
        f"{tc['epochs']} epochs, patience {tc['patience']}, lr {tc['lr']:g}, batch {tc['batch_size']}, "
        f"`{tc['select']}`; model seed = fold number, hybrid and ablation paired per fold. The corrected interval "
        f"(Nadeau-Bengio: variance x (1/k + n_test/n_train)) allows for the folds' overlapping training sets; the "
        f"plain t interval over folds is too narrow. Against its ablation: "
        f"{ABLATION_WORDS[s['vs_ablation']].replace('paired difference', 'corrected paired difference')}. " + _run(doc),
    ]
    return "\n".join(lines)


#: Where a results file's recorded command may point: the repository, never a path of the machine it ran on.
ABSOLUTE = re.compile(r"(?:^|[\s=])(/[^\s]*|~[^\s]*)")


def _commands(node: Any) -> list[str]:
    """Every recorded command in a results document: the values of keys named ``command`` or ``*_command``, at any
    depth (the top-level run, and the commands a benchmark records for what it timed)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if (key == "command" or key.endswith("_command")) and isinstance(value, str):
                found.append(value)
            elif key.endswith("commands") and isinstance(value, list):
                found.extend(v for v in value if isinstance(v, str))
            else:
                found.extend(_commands(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_commands(value))
    return found


def absolute_paths_in_commands() -> list[str]:
    """Each results file whose recorded commands (top-level or inside its rows) name an absolute path.

    A reader reruns the top-level command and reads the inner ones as what was timed: a path of the machine that
    ran them (``/tmp/...``, ``/work/...``) means nothing to either.  A generated input is named as such
    (e.g. ``INPUTS.npz``, with a note saying how it was made).
    """
    found = []
    for path in sorted(RESULTS.glob("*.json")):
        for command in _commands(json.loads(path.read_text())):
            found.extend(f"{path.name}: {m.group(1)} in `{command}`" for m in ABSOLUTE.finditer(command))
    return found


#: Where benchmarks have recorded the load average before timing (1-minute figure first where it is a list).
LOAD_KEYS: tuple[tuple[str, ...], ...] = (
    ("load_before_timing", "load_average"),
    ("load_average_before_timing",),
    ("machine", "load_average_at_start"),
    ("machine", "load_at_start"),
    ("load_average_at_start",),
    ("load_at_start",),
)


def recorded_load(doc: dict[str, Any]) -> tuple[float | None, int | None]:
    """(1-minute load average before timing, cores) as the results file recorded them; None where it did not."""
    load: Any = None
    for keys in LOAD_KEYS:
        node: Any = doc
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            load = node[0] if isinstance(node, list) else node
            break
    cores = (doc.get("load_before_timing") or {}).get("cores") or (doc.get("machine") or {}).get("cores")
    return (None if load is None else float(load)), (None if cores is None else int(cores))


def load_note(doc: dict[str, Any]) -> str:
    """The sentence a table's timings get when they were taken on a loaded machine (load above the cores)."""
    load, cores = recorded_load(doc)
    if load is None:
        return (
            "\n\nThe load before timing was not recorded (a run older than that record): its seconds may include "
            "other jobs' contention."
        )
    if cores is None or load <= cores:
        return ""
    return (
        f"\n\nTimed on a loaded machine (load average {load:.1f} on {cores} cores before timing): its seconds are "
        "not evidence of speed; only ratios inside this run are."
    )


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "mnist_fixed": mnist_fixed,
    "simulator": simulator,
    "executor": executor,
    "cut_planning": cut_planning,
    "iris_kfold": iris_kfold,
    "proxy_quality": proxy_quality,
    "supercircuit_quality": supercircuit_quality,
    "noise_aware": noise_aware,
    "noise_aware_inherited": noise_aware,  # the earlier campaign (inherited proxy), kept beside the current one
    "noise_aware_fashion4": noise_aware,
    "noise_aware_goals": noise_aware_goals,
    "search_quality": search_quality,
    "search_quality_10_generations": search_quality,  # the same comparison with twice the generations
    "default_job": default_job,
    "paper_table": paper_table,
    **{f"paper_table_{d}": paper_table for d in DATASET_NAMES},  # one-dataset runs
}


#: Tables built from another table's results file: no timing of their own, so no load sentence.
DERIVED: dict[str, str] = {"noise_aware_goals": "noise_aware"}

#: The READMEs whose tables are generated: the project's and the examples'.
READMES: tuple[Path, ...] = (README, ROOT / "examples" / "README.md")


def render(readme: str) -> str:
    for name, build in TABLES.items():
        path = RESULTS / f"{DERIVED.get(name, name)}.json"
        pattern = re.compile(rf"(<!-- table:{name} -->\n)(?:.*?\n)?(<!-- /table:{name} -->)", re.S)
        if not pattern.search(readme):
            continue
        if not path.is_file():
            raise SystemExit(f"README has a {name} table but {path} does not exist; run its benchmark first")
        doc = json.loads(path.read_text())
        table = build(doc) + ("" if name in DERIVED else load_note(doc))
        readme = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), readme)
    return readme


def loaded_tables(readme: str) -> list[str]:
    """Warnings for the tables of ``readme`` whose timings were taken at a load above the core count."""
    out = []
    for name in TABLES:
        if name in DERIVED:
            continue  # its source table carries the warning
        path = RESULTS / f"{name}.json"
        if f"<!-- table:{name} -->" in readme and path.is_file():
            load, cores = recorded_load(json.loads(path.read_text()))
            if load is None:
                out.append(f"warning: {name} recorded no load before timing (labelled as unknown)")
            elif cores is not None and load > cores:
                out.append(f"warning: {name} was timed at load {load:.1f} on {cores} cores (labelled as loaded)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the results files")
    args = ap.parse_args(argv)
    absolute = absolute_paths_in_commands()
    if absolute:
        print(
            "recorded commands name absolute paths (a reader has none of them); record them relative to the "
            "repository (--data-dir ../shared/datasets, --out benchmarks/results/NAME.json):\n  "
            + "\n  ".join(absolute),
            file=sys.stderr,
        )
        return 1
    stale = []
    for readme in READMES:
        current = readme.read_text()
        for warning in loaded_tables(current):
            print(f"{readme.relative_to(ROOT)}: {warning}", file=sys.stderr)
        wanted = render(current)
        if wanted != current:
            stale.append(readme)
            if not args.check:
                readme.write_text(wanted)
    if args.check and stale:
        names = ", ".join(str(r.relative_to(ROOT)) for r in stale)
        print(f"{names}: tables are stale: run python benchmarks/readme_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
