"""The house's shape: imports point down the pipeline (data/augment -> model -> train -> search and budget ->
ensemble -> stage two -> report, with portable and semi-supervised beside the report -> export -> CLIs).

Every ``melanoma_search`` import in the package, at module level or inside a function, is checked against the
layer order, so a cycle (like the old export <-> report one) or an arrow back up cannot come back unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "melanoma_search"

LAYERS: dict[str, int] = {
    "errors": 0, "schema": 0, "cli": 0, "metrics": 0, "registry": 0,
    "data": 1, "augment": 1,
    "model": 2,
    "train": 3,
    "search": 4, "budget": 4,  # the budget plans what the search runs: each reads the other's parts
    "ensemble": 5,
    "stage_two": 6,
    "report": 7, "portable": 7, "semi_supervised": 7,
    "export": 8,
    "run": 9, "predict": 9, "pseudo": 9, "__init__": 9,
}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else LAYERS["__init__"]


def _imports() -> list[tuple[str, str]]:
    edges = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("melanoma_search", *path.relative_to(PACKAGE).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("melanoma_search."):
                edges.append((module, node.module))
            elif isinstance(node, ast.Import):
                edges.extend((module, a.name) for a in node.names if a.name.startswith("melanoma_search."))
    return edges


def test_imports_only_point_down_the_pipeline() -> None:
    up = [(a, b) for a, b in _imports()
          if not a.endswith("__init__") and _layer(b) > _layer(a)]
    assert not up, f"imports pointing up the pipeline: {up}"


def test_no_import_cycles_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for a, b in _imports():
        graph.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    # a facade (a package's __init__) re-exports its modules, so edges into and out of facades are not module cycles
    packages = {".".join(("melanoma_search", *init.parent.relative_to(PACKAGE).parts))
                for init in PACKAGE.rglob("__init__.py")}
    cycles = [(a, b) for a, targets in graph.items() for b in targets
              if not a.endswith("__init__") and b not in packages and reaches(b, a, set())]
    assert not cycles, f"modules importing each other: {cycles}"


#: The most lines a function of the package may span, its signature and docstring included: one screen, read at once.
MAX_FUNCTION_LINES = 60


def test_every_function_reads_at_once() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions longer than a screen: " + "; ".join(long)
