"""Static view of the test files: which tests exist and which falsifiers their markers claim.

Everything here reads source with `ast`; nothing is imported or run, so validating contracts
never executes test code.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from shiptwo.fileio import display_path
from shiptwo.harness.covers import cover_pattern_problem
from shiptwo.harness.safefile import TEST_FILE_LIMIT, FileRefused, check_file, read_file, walk_files


def unparametrized(nodeid: str) -> str:
    """The node id of the test function itself: `f.py::test_x[bf16-real]` -> `f.py::test_x`.

    The name a marker, a `tests:` entry and a bound-test index all use for a test, whatever
    parameters (controls included) pytest runs it with.
    """
    return nodeid.split("[", 1)[0]


@dataclass(frozen=True)
class TestFile:
    """The tests of one file: node name (`func` or `Class::func`) -> falsifier ids marked on it."""

    __test__ = False  # not a pytest test class, despite the name

    path: Path
    tests: dict[str, frozenset[str]] = field(hash=False)
    classes: frozenset[str] = frozenset()
    error: str | None = None
    lines: dict[str, int] = field(default_factory=dict, hash=False)  # node -> line of its marker or `def`
    refused: FileRefused | None = field(default=None, hash=False, compare=False)  # not read at all


def _falsifier_ids(decorators: list[ast.expr]) -> set[str]:
    ids: set[str] = set()
    for deco in decorators:
        if isinstance(deco, ast.Call) and _is_falsifier_mark(deco.func):
            ids.update(a.value for a in deco.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return ids


def _is_falsifier_mark(func: ast.expr) -> bool:
    # pytest.mark.falsifier(...) or mark.falsifier(...)
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "falsifier"
        and (
            (isinstance(func.value, ast.Attribute) and func.value.attr == "mark")
            or (isinstance(func.value, ast.Name) and func.value.id == "mark")
        )
    )


def _marker_line(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    for deco in node.decorator_list:
        if isinstance(deco, ast.Call) and _is_falsifier_mark(deco.func):
            return deco.lineno
    return node.lineno


def _module_marks(tree: ast.Module) -> set[str]:
    ids: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets
        ):
            value = stmt.value
            items = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
            ids |= _falsifier_ids(list(items))
    return ids


def _is_test(node: ast.stmt) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")


def _refused(exc: FileRefused) -> TestFile:
    return TestFile(exc.path, {}, error=exc.reason, refused=exc)


@lru_cache(maxsize=4096)
def _scan(absolute: str, mtime_ns: int, size: int, within: tuple[Path, ...] | None) -> TestFile:
    try:
        path = Path(absolute).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, before Python 3.13
        return TestFile(Path(absolute), {}, error=f"{type(exc).__name__}: {exc}")
    try:
        source = read_file(Path(absolute), within=within, limit=TEST_FILE_LIMIT)
    except FileRefused as exc:
        return _refused(exc)
    try:
        tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError, RecursionError) as exc:
        return TestFile(path, {}, error=f"{type(exc).__name__}: {exc}")
    module_ids = _module_marks(tree)
    tests: dict[str, frozenset[str]] = {}
    lines: dict[str, int] = {}
    classes: set[str] = set()
    for stmt in tree.body:
        if _is_test(stmt):
            assert isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
            tests[stmt.name] = frozenset(module_ids | _falsifier_ids(stmt.decorator_list))
            lines[stmt.name] = _marker_line(stmt)
        elif isinstance(stmt, ast.ClassDef):
            classes.add(stmt.name)
            class_ids = module_ids | _falsifier_ids(stmt.decorator_list)
            for body_stmt in stmt.body:
                if _is_test(body_stmt):
                    assert isinstance(body_stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
                    ids = class_ids | _falsifier_ids(body_stmt.decorator_list)
                    tests[f"{stmt.name}::{body_stmt.name}"] = frozenset(ids)
                    lines[f"{stmt.name}::{body_stmt.name}"] = _marker_line(body_stmt)
    return TestFile(path, tests, frozenset(classes), lines=lines)


def scan_test_file(path: Path, *, root: Path | None = None) -> TestFile:
    """Parse a test file (cached until it changes).

    With `root` (resolved), a symlink is followed only to a file under it. A FIFO, device,
    dangling link or file over TEST_FILE_LIMIT is never opened: the TestFile says `refused`.
    """
    # The size joins the mtime in the key: a file rewritten within the clock's granularity
    # keeps its mtime, and would otherwise be served from the cache.
    # Keyed by the absolute path, not the resolved one: resolving costs a syscall per
    # component, and only a cache miss needs it.
    within = None if root is None else (root,)
    try:
        stat = check_file(path, within=within, limit=TEST_FILE_LIMIT)
    except FileRefused as exc:
        return _refused(exc)
    return _scan(os.path.abspath(path), stat.st_mtime_ns, stat.st_size, within)


class TestFiles:
    """The test files that `tests:` entries name, each found, scanned and placed once per run."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, root: Path) -> None:
        self.root = root
        self._found: dict[str, tuple[TestFile, str] | None] = {}

    def get(self, file: str) -> tuple[TestFile, str] | None:
        """(scan, path relative to the root) of the file an entry names; None if there is no such file.

        An entry that is absolute or climbs out with `..` (`outside_project`) is never read: None.
        A file that exists but is refused (a FIFO, a link out of the root) comes back `refused`.
        """
        if file not in self._found:
            target = self.root / file
            tf = (
                scan_test_file(target, root=self.root)
                if outside_project(file) is None and os.path.lexists(target)
                else None
            )
            self._found[file] = None if tf is None else (tf, display_path(tf.path, self.root))
        return self._found[file]


def outside_project(file: str) -> str | None:
    """Why a `tests:` entry's file is not under the project root (absolute, `..`), or None."""
    return cover_pattern_problem(file)


def scan_tree(
    directory: Path, *, root: Path | None = None, refused: list[FileRefused] | None = None
) -> list[TestFile]:
    """Scan every `test_*.py` / `*_test.py` under `directory` (none if it does not exist).

    With `root`, symlinks may lead under it or under `directory`; files that are not read, and
    subdirectories that cannot be listed, are appended to `refused`.
    """
    if not directory.is_dir():
        return []
    problems: list[FileRefused] = [] if refused is None else refused
    files = sorted(
        p
        for p in walk_files(directory, problems)
        if (p.name.startswith("test_") or p.name.endswith("_test.py")) and p.suffix == ".py"
    )
    scanned = []
    for p in files:
        if "__pycache__" in p.parts:
            continue
        tf = scan_test_file(p, root=None if root is None else _base(root, directory))
        if tf.refused is not None:
            problems.append(tf.refused)
        else:
            scanned.append(tf)
    return scanned


def _base(root: Path, directory: Path) -> Path:
    """The directory symlinks in `directory` may lead into: the root, or the directory if it lies outside."""
    resolved = directory.resolve()
    return root if resolved.is_relative_to(root) else resolved


@dataclass(frozen=True)
class TestRef:
    __test__ = False  # not a pytest test class, despite the name
    file: str
    node: str  # `func` or `Class::func`, parametrization stripped

    @classmethod
    def parse(cls, text: str) -> TestRef | None:
        parts = text.split("::")
        if len(parts) not in (2, 3) or not parts[0].endswith(".py") or not all(parts) or "\x00" in text:
            return None
        node = "::".join(parts[1:])
        return cls(parts[0], unparametrized(node))
