"""Regenerate the README's results tables from the committed files in ``benchmarks/results/``.

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``
in README.md and is rebuilt from ``benchmarks/results/NAME.json``, so no
figure is typed by hand.  ``--check`` exits 1 when the README differs from the
files (the test suite runs it).  Tables covered so far: ``noise_aware``,
``search_quality``, ``default_job``, ``paper_table`` (or ``paper_table_<dataset>``
for a one-dataset run).

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


def noise_aware(doc: dict[str, Any]) -> str:
    lines = [
        "| data set | device | search | pick | test acc. under noise (%) | ideal (%) | seeds | qubits | 2q gates "
        "| search s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['dataset']} | {r['backend']} | {r['mode']} | {r['pick']} | "
            f"{_pct(r['test_acc_noisy_mean'], r['test_acc_noisy_ci95'])} | "
            f"{_pct(r['test_acc_ideal_mean'], r['test_acc_ideal_ci95'])} | {len(r['seeds'])} | "
            f"{', '.join(str(q) for q in r['qubits'])} | {', '.join(str(g) for g in r['n_2q'])} | "
            f"{r['search_seconds']:.0f} |"
        )
    state = "complete" if doc.get("complete", True) else "stopped before the end: the rows above are what it measured"
    lines.append("")
    lines.append(f"Run: `{doc['command']}` at `{doc['commit'][:7]}`, {doc['seconds'] / 60:.0f} min, {state}.")
    return "\n".join(lines)


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
    lines.append("")
    lines.append(f"Run: `{doc['command']}` at `{doc['commit'][:7]}`, {doc['seconds'] / 60:.0f} min.")
    return "\n".join(lines)


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


def rank_correlation(doc: dict[str, Any]) -> str:
    """Kendall/Spearman of each proxy against from-scratch validation accuracy, one row per proxy."""
    sizes = doc["sizes"]
    lines = [
        "| dataset | proxy | Kendall tau (p) | Spearman rho (p) | mean proxy val acc | architectures |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in doc["correlations"].items():
        mode, _, k = name.partition(" k=")
        proxy = f"{mode} sampling, inherited + {k} fine-tune epoch(s)" if k != "0" else f"{mode}, inherited only"
        lines.append(
            f"| {doc['dataset']} ({sizes['train']:,} train / {sizes['val']:,} val) | {proxy} | "
            f"{c['kendall_tau']:+.3f} (p = {c['kendall_p']:.2g}) | "
            f"{c['spearman_rho']:+.3f} (p = {c['spearman_p']:.2g}) | "
            f"{c['mean_proxy_acc']:.3f} | {len(doc['architectures'])} |"
        )
    lines.append("")
    lines.append(
        f"Ground truth: each architecture trained from scratch for {doc['full_epochs']} epochs (mean validation "
        f"accuracy {sum(doc['full']) / len(doc['full']):.3f}); SuperCircuit {doc['sc_epochs']} epochs. "
        f"Run: `{doc['command']}` at `{doc['commit'][:7]}`."
    )
    return "\n".join(lines)


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "rank_correlation_mnist": rank_correlation,
    "noise_aware": noise_aware,
    "noise_aware_fashion4": noise_aware,
    "search_quality": search_quality,
    "default_job": default_job,
    "paper_table": paper_table,
    **{f"paper_table_{d}": paper_table for d in DATASET_NAMES},  # one-dataset runs
}


def render(readme: str) -> str:
    for name, build in TABLES.items():
        path = RESULTS / f"{name}.json"
        pattern = re.compile(rf"(<!-- table:{name} -->\n)(?:.*?\n)?(<!-- /table:{name} -->)", re.S)
        if not pattern.search(readme):
            continue
        if not path.is_file():
            raise SystemExit(f"README has a {name} table but {path} does not exist; run its benchmark first")
        table = build(json.loads(path.read_text()))
        readme = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), readme)
    return readme


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the results files")
    args = ap.parse_args(argv)
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README.md tables are stale: run python benchmarks/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
