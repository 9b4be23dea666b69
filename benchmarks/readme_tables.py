"""Regenerate the README's results tables from the committed files in ``benchmarks/results/``.

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``
in README.md and is rebuilt from ``benchmarks/results/NAME.json``, so no
figure is typed by hand.  ``--check`` exits 1 when the README differs from the
files (the test suite runs it).  Tables covered so far: ``noise_aware``,
``search_quality``, ``default_job``.

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


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "noise_aware": noise_aware,
    "search_quality": search_quality,
    "default_job": default_job,
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
