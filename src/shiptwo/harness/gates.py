"""Host gates: the hardware and artifacts a falsifier needs, checked in one place.

A gate answers "is this host able to run the test?" with a reason either way, so a skip says
exactly what was looked for. The gates themselves live in the rooms that own them and are found
through entry points (see `_Registry`), so the harness imports no subject. A project adds its own
in three ways: an entry point in its packaging, `name = "module:function"` under
[tool.shiptwo.gates], or `register_gate` / `@gate("name")` in a conftest.py.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path


@dataclass(frozen=True)
class GateResult:
    """Whether a gate is open on this host, why, and the artifacts it found (path -> sha256 later)."""

    name: str
    ok: bool
    reason: str
    artifacts: tuple[Path, ...] = field(default=())


ENTRY_POINT_GROUP = "shiptwo.gates"


class _Registry(Mapping[str, Callable[[], GateResult]]):
    """Gate name -> check, from the `shiptwo.gates` entry points, loaded on first use.

    The harness names no gate itself: each subject room registers the gates it owns (tokenize:
    qwen-tokenizer; models: qwen-artifacts, qwen-gguf; qwen2: cuda, multi-gpu), and any installed
    package can add its own the same way. A check is imported only when it is first called.
    """

    def __init__(self) -> None:
        self._points: dict[str, EntryPoint] | None = None
        self.project: dict[str, Callable[[], GateResult]] = {}  # registered by the project itself

    def installed(self) -> dict[str, EntryPoint]:
        """The entry points, read once per process (reading every installed package's takes ms)."""
        if self._points is None:
            self._points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return self._points

    def __getitem__(self, name: str) -> Callable[[], GateResult]:
        if name in self.project:
            return self.project[name]
        check: Callable[[], GateResult] = self.installed()[name].load()
        return check

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({*self.installed(), *self.project}))

    def __len__(self) -> int:
        return len({*self.installed(), *self.project})


_REGISTRY = _Registry()
GATES: Mapping[str, Callable[[], GateResult]] = _REGISTRY
Probe = Callable[[], "GateResult | bool"]


def register_gate(name: str, probe: Probe, *, closed: str = "") -> None:
    """Make `name` a host gate of this project, answered by `probe`.

    `probe` returns a GateResult, or a bool for the plain case; `closed` is the skip reason shown
    when a bool probe says no ("set DATASET_DIR to the corpus"). Call it from a conftest.py; a
    contract's `requires:` and `--shiptwo-require` then accept the name.
    """
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"gate name {name!r}: use letters, digits, '-' and '_'")

    def check() -> GateResult:
        answer = probe()
        if isinstance(answer, GateResult):
            return answer
        reason = f"{name}: open" if answer else (closed or f"{name}: the project's probe said no")
        return GateResult(name, bool(answer), reason)

    _REGISTRY.project[name] = check
    _cache.pop(name, None)


def gate(name: str, *, closed: str = "") -> Callable[[Probe], Probe]:
    """Decorator form of `register_gate`: `@gate("dataset", closed="no corpus at $DATA")`."""

    def decorate(probe: Probe) -> Probe:
        register_gate(name, probe, closed=closed)
        return probe

    return decorate


def conftest_files(root: Path, test_dirs: Iterable[Path]) -> list[Path]:
    """The conftest.py files that may register a project's gates: the root's and every one below
    the test directories (those that exist)."""
    top = root / "conftest.py"
    found = [top] if top.is_file() else []
    return found + sorted(c for d in test_dirs if d.is_dir() for c in d.rglob("conftest.py") if c != top)


def installed_gates() -> dict[str, str]:
    """Gate name -> `module:function` of every gate an installed package registers (entry points)."""
    return {name: point.value for name, point in _REGISTRY.installed().items()}


def registered_gates() -> frozenset[str]:
    """The gate names registered in this process so far (`register_gate`, `gate`, [tool.shiptwo.gates])."""
    return frozenset(_REGISTRY.project)


def conftest_gate_names(root: Path, test_dirs: Iterable[Path]) -> frozenset[str]:
    """The gate names the project's conftest.py files register, found by reading their source.

    Matches `register_gate("name", ...)` and `@gate("name", ...)` (any prefix: `gates.gate`), so
    `shiptwo pv validate` knows a project's gates without importing its test code.
    """
    names: set[str] = set()
    for path in conftest_files(root, test_dirs):
        try:
            tree = ast.parse(path.read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue  # pytest reports a broken conftest itself
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            name = getattr(node.args[0], "value", None)
            if called in ("register_gate", "gate") and isinstance(name, str):
                names.add(name)
    return frozenset(names)


def register_project_gates(gates: Mapping[str, str], root: Path) -> None:
    """Register the gates [tool.shiptwo.gates] names (`name = "module:function"`).

    The module is imported from the project root, the way pytest imports a rootdir conftest.
    """
    for name, target in gates.items():
        module_name, _, attr = target.partition(":")
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        try:
            probe = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(
                f"[tool.shiptwo.gates] {name} = {target!r}: cannot load it ({exc}); "
                "name an importable module and a function in it"
            ) from None
        register_gate(name, probe)


_cache: dict[str, GateResult] = {}


def check_gate(name: str) -> GateResult:
    """Check one gate by name (cached per process); an unknown name raises KeyError."""
    if name not in _cache:
        _cache[name] = GATES[name]()
    return _cache[name]


def clear_cache() -> None:
    """Forget cached gate results (tests change the environment between checks)."""
    _cache.clear()
