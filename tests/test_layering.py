"""The package's layering, read from the source with ast (every import, also those inside functions).

Two independent checks: no import cycle between the top-level parts of the package, and no part importing a
part at its own or a higher level of the order documented in docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "wherefrom"

# docs/architecture.md, bottom to top: each part imports only parts of lower levels.
LAYERS = [
    {"errors", "version"},
    {"fileio", "jobs", "options", "progress", "allocator", "collector", "folders"},
    {"data", "models", "synthetic"},
    {"engine"},
    {"curvature"},
    {"scoring"},
    {"index", "analysis", "solvers"},
    {"api", "costs", "scaling"},
    {"outputs"},
    {"explorer", "demo", "faithfulness"},
    {"cli"},
]
FACADE = {"__init__", "__main__"}  # the package's entry points, above everything


def part_of(path: Path, root: Path) -> str:
    """The top-level part a source file belongs to: its subpackage, or its own name for a top-level module."""
    relative = path.relative_to(root)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_parts(path: Path, root: Path) -> set[str]:
    """The other top-level parts of the package that the file imports, absolutely or relatively."""
    package = root.name
    module = [package, *path.relative_to(root).with_suffix("").parts]
    if module[-1] == "__init__":
        module.pop()
    parts: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module[:len(module) - node.level + (path.stem == "__init__")] if node.level else []
            target = base + (node.module.split(".") if node.module else [])
            # `from wherefrom import x` (or `from . import x` at the top) names parts in the imported names.
            names = [target + [alias.name] for alias in node.names] if target == [package] else [target]
        else:
            continue
        parts.update(name[1] for name in names if len(name) > 1 and name[0] == package)
    return parts - {part_of(path, root)}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Top-level part → the parts it imports."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        graph[part_of(path, root)] |= imported_parts(path, root)
    return dict(graph)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as the list of parts along it, or None (depth-first search)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            cycle = visit(successor)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a part at the importer's own level or above, as 'importer → imported'."""
    level = {part: i for i, layer in enumerate(LAYERS) for part in layer} | {part: len(LAYERS) for part in FACADE}
    return [f"{importer} → {imported}" for importer, imported_set in sorted(graph.items())
            for imported in sorted(imported_set) if level[imported] >= level[importer]]


def test_no_import_cycle_between_top_level_parts():
    assert find_cycle(import_graph(SOURCE)) is None


def test_every_import_goes_down_the_documented_layers():
    graph = import_graph(SOURCE)
    unplaced = set(graph) - set().union(*LAYERS) - FACADE
    assert not unplaced, f"parts missing from LAYERS and docs/architecture.md: {sorted(unplaced)}"
    assert upward_imports(graph) == []


def test_the_layer_order_is_the_documented_one():
    documented = (SOURCE.parents[1] / "docs" / "architecture.md").read_text()
    rows = [line for line in documented.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    parts = [{name.strip(" `") for name in row.split("|")[2].split(",")} for row in rows]
    assert parts == LAYERS


@pytest.fixture
def tangled(tmp_path: Path) -> Path:
    """A tiny package where a → b → c → a (c by a relative import) and a imports c from the package root."""
    root = tmp_path / "pkg"
    for part, source in {"a": "from pkg.b import x\nfrom pkg import c\n", "b": "def f():\n    import pkg.c.deep\n",
                         "c": "from ..a import y\n"}.items():
        (root / part).mkdir(parents=True)
        (root / part / "__init__.py").write_text("")
        (root / part / "mod.py").write_text(source)
    (root / "__init__.py").write_text("")
    return root


def test_the_checks_find_cycles_and_relative_imports(tangled: Path):
    graph = import_graph(tangled)
    assert graph == {"__init__": set(), "a": {"b", "c"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
