"""The architecture, enforced: the harness imports no subject, and no module imports itself back.

The harness (`shiptwo.harness`, plus the shared base `shiptwo.cli`, `errors`, `fileio`) must run
in a project that installed `pip install shiptwo` alone, so it may not import a subject room or
the ML stack anywhere, not even inside a function. Subject rooms may import the harness and the
base, never the other way round.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "shiptwo"
SUBJECTS = (
    "shiptwo.tokenize",
    "shiptwo.shards",
    "shiptwo.apr",
    "shiptwo.ggml",
    "shiptwo.models",
    "shiptwo.qwen2",
    "shiptwo.fuzz",  # damages files of the subjects' formats, so a subject room itself
)
HEAVY = ("torch", "numpy", "tokenizers", "safetensors", "transformers", "gguf", "matplotlib", "tqdm")
HARNESS = sorted(
    [
        *(SRC / "harness").rglob("*.py"),
        SRC / "cli.py",
        SRC / "errors.py",
        SRC / "fileio.py",
        SRC / "__init__.py",
        SRC / "__main__.py",
    ]
)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST, *, top_level_only: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module) of every import; with `top_level_only`, those run when the module loads."""
    nodes = tree.body if top_level_only else ast.walk(tree)  # type: ignore[attr-defined]
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # `from shiptwo.x import y` may import the submodule y
                yield node.lineno, f"{node.module}.{alias.name}"


@pytest.mark.parametrize("path", HARNESS, ids=lambda p: str(p.relative_to(SRC)))
def test_the_harness_imports_no_subject_and_no_ml_library(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = [
        f"{path.relative_to(SRC.parent.parent)}:{line}: imports {name}"
        for line, name in imports(tree)
        if name.startswith(SUBJECTS) or name.split(".")[0] in HEAVY
    ]
    assert bad == [], "the harness must not depend on a subject room or the ML stack:\n" + "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = {m for _, m in imports(tree)}
        # `from pkg import sub` loads the submodule `pkg.sub`; the edge to `pkg` itself is real
        # only when nothing more specific was imported from it.
        deps = {m for m in found if m in modules and m != name}
        graph[name] = {m for m in deps if not any(d.startswith(m + ".") and d in modules for d in found)}
    return graph


def test_no_import_cycles() -> None:
    # Deferred imports count too: a cycle hidden inside a function is still two modules that
    # cannot be understood, tested or moved apart.
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_check_sees_a_planted_violation(tmp_path: Path) -> None:
    # The control of this test: a harness module importing a subject is caught, by line.
    tree = ast.parse("import os\n\ndef f():\n    from shiptwo.qwen2.model import Qwen2\n")
    assert [(line, name) for line, name in imports(tree) if name.startswith(SUBJECTS)] == [
        (4, "shiptwo.qwen2.model"),
        (4, "shiptwo.qwen2.model.Qwen2"),
    ]
