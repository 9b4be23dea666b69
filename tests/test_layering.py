"""The package's imports run one way: every import, at module level or inside a function, is read with ``ast``.

Layers, top to bottom (a module may import its own layer and any layer below):

    cli -> deploy -> reports -> search -> jobs, config -> hardware -> model -> data, atomic_write, locking, text,
    progress

This adapts the plan of the package-layout issue (``cli -> jobs/reports ->
search -> hardware/model -> config/data``) to two facts of the code: the
search submits device jobs itself (accuracy ``device``), so ``jobs`` sits
below ``search``; and ``config`` validates names against the search space,
the front-ends and the backend registry, so it sits above ``hardware`` and
``model``.  ``hardware`` imports ``model`` (circuits are built from the
architecture) and never the other way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import qnas_hw

PACKAGE = Path(qnas_hw.__file__).parent
LAYERS: list[set[str]] = [
    {"cli"},
    {"deploy"},  # export bundles and predict: reads the reports' picks, runs through search's scorer and jobs
    {"reports"},
    {"search"},
    {"jobs", "config"},
    {"hardware"},
    {"model"},
    {"data", "atomic_write", "locking", "text", "progress"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, name: str | None = None) -> set[str]:
    """Every ``qnas_hw`` module ``path`` imports, resolving relative imports and ``from pkg import module``."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # submodules imported by name
    known = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in out if m in known and m != name}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "qnas_hw"


def all_modules() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer() -> None:
    unknown = {m for m in all_modules() if m != "qnas_hw" and layer(m) not in RANK}
    assert not unknown, f"modules outside every layer: {sorted(unknown)}; add them to LAYERS and the README's Layout"


def test_no_import_runs_upward() -> None:
    upward = [
        f"{m} imports {t} ({layer(m)} is below {layer(t)})"
        for m, targets in all_modules().items()
        if m != "qnas_hw"  # the package root re-exports the public API
        for t in targets
        if t != "qnas_hw" and RANK[layer(t)] < RANK[layer(m)]
    ]
    assert not upward, "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circles() -> None:
    # a package's __init__ re-exporting its own modules is not a circle: drop package -> own submodule edges
    graph = {m: {t for t in ts if not t.startswith(m + ".") and t != "qnas_hw"} for m, ts in all_modules().items()}
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


@pytest.mark.parametrize(
    ("graph", "expected"),
    [({"a": {"b"}, "b": {"a"}}, True), ({"a": {"b"}, "b": {"c"}, "c": set()}, False)],
)
def test_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: bool) -> None:
    """The checker itself can fail: a planted circle is found, a chain is not."""
    assert (_cycle(graph) is not None) == expected


def test_upward_import_is_detected(tmp_path: Path) -> None:
    """A planted model -> search import is read by :func:`imports_of` and ranks as upward."""
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from ..search.nsga import run_search\n    from qnas_hw.reports import data\n")
    targets = imports_of(planted, "qnas_hw.model.planted")
    assert {"qnas_hw.search.nsga", "qnas_hw.reports.data"} <= targets
    assert all(RANK[layer(t)] < RANK[layer("qnas_hw.model.planted")] for t in targets)
