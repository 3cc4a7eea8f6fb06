"""A project's shiptwo configuration: `[tool.shiptwo]` in its pyproject.toml, read in one place.

The pytest plugin and every `shiptwo pv` command resolve their paths and settings here, so the
two can never disagree about where the contracts or the run records live. Precedence, highest
first: a command-line flag, a pytest ini option (`shiptwo_contracts = ...`, plugin only), this
table, the defaults below.

    [tool.shiptwo]
    contracts = "spec"                 # contract directory, relative to the project root
    evidence = ".shiptwo/runs"         # run records
    tests = ["tests"]                  # where falsifier markers live (default: pytest testpaths)
    require = ["dataset"]              # host gates this project's CI claims to have
    record = true                      # write a run record per session
    record_host = false                # hostname, user and absolute paths in records (opt in)

    [tool.shiptwo.gates]               # the project's own host gates: name = "module:function"
    dataset = "myproject.gates:dataset_present"

    [tool.shiptwo.train]               # thresholds of `shiptwo train`'s gates (flags override)
    val_loss_max = 12.5
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shiptwo.errors import UsageError

DEFAULT_CONTRACTS = "contracts"
DEFAULT_EVIDENCE = "evidence/runs"
DEFAULT_TESTS = ("falsifiers",)  # when neither [tool.shiptwo] nor pytest's testpaths names any
# The files and directories that mark a project root, nearest first wins.
ROOT_MARKERS = ("pyproject.toml", "setup.cfg", "tox.ini", "pytest.ini", ".git")

_KEYS: dict[str, type | tuple[type, ...]] = {
    "contracts": str,
    "evidence": str,
    "tests": list,
    "require": list,
    "record": bool,
    "record_host": bool,
    "gates": dict,
    "train": dict,
}


@dataclass(frozen=True)
class ProjectConfig:
    """The settings of one project, paths already resolved against its root."""

    root: Path
    source: Path | None = None  # the pyproject.toml holding [tool.shiptwo], if any
    contracts: Path = Path(DEFAULT_CONTRACTS)
    evidence: Path = Path(DEFAULT_EVIDENCE)
    tests: tuple[Path, ...] = ()
    require: frozenset[str] = frozenset()
    record: bool = True
    record_host: bool = False
    gates: Mapping[str, str] = field(default_factory=dict)  # gate name -> "module:function"
    train: Mapping[str, float] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        """True when the project has a [tool.shiptwo] table: it asked for shiptwo explicitly."""
        return self.source is not None


def find_root(start: Path) -> Path:
    """The nearest ancestor of `start` (a file or directory) that looks like a project root."""
    start = start.resolve()
    for candidate in (start, *start.parents):
        if any((candidate / marker).exists() for marker in ROOT_MARKERS):
            return candidate
    return start.parent if start.is_file() else start


def load_config(root: Path) -> ProjectConfig:
    """Read `<root>/pyproject.toml`'s [tool.shiptwo] (defaults when there is none).

    A malformed table raises UsageError naming the file, the key, the value and what it wants.
    """
    root = root.resolve()
    pyproject = root / "pyproject.toml"
    table: dict[str, Any] = {}
    testpaths: list[str] = []
    source: Path | None = None
    if pyproject.is_file():
        import tomllib  # here, not at the top: every pytest session imports this module

        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{pyproject}: not valid TOML ({exc}); fix the file") from None
        tool = data.get("tool", {})
        if isinstance(tool.get("shiptwo"), dict):
            table, source = tool["shiptwo"], pyproject
        ini = tool.get("pytest", {}).get("ini_options", {})
        if isinstance(ini.get("testpaths"), list):
            testpaths = [str(p) for p in ini["testpaths"]]
    for key, value in table.items():
        want = _KEYS.get(key)
        if want is None:
            raise UsageError(
                f"{pyproject}: [tool.shiptwo] key {key!r} is unknown; known keys: {', '.join(_KEYS)}"
            )
        if not isinstance(value, want):
            raise UsageError(f"{pyproject}: [tool.shiptwo] {key} = {value!r} must be a {_type_name(want)}")
    tests = _strings(pyproject, "tests", table.get("tests")) or testpaths or list(DEFAULT_TESTS)
    return ProjectConfig(
        root=root,
        source=source,
        contracts=root / table.get("contracts", DEFAULT_CONTRACTS),
        evidence=root / table.get("evidence", DEFAULT_EVIDENCE),
        tests=tuple(root / t for t in tests),
        require=frozenset(_strings(pyproject, "require", table.get("require"))),
        record=table.get("record", True),
        record_host=table.get("record_host", False),
        gates=_gates(pyproject, table.get("gates", {})),
        train=_numbers(pyproject, table.get("train", {})),
    )


def _type_name(want: type | tuple[type, ...]) -> str:
    names = {str: "string", list: "list", bool: "boolean", dict: "table"}
    return names.get(want, str(want)) if isinstance(want, type) else "value"


def _strings(pyproject: Path, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    bad = [v for v in value if not isinstance(v, str) or not v]
    if bad:
        raise UsageError(
            f"{pyproject}: [tool.shiptwo] {key} holds {bad[0]!r}; every entry must be a non-empty string"
        )
    return list(value)


def _gates(pyproject: Path, value: dict[str, Any]) -> dict[str, str]:
    for name, target in value.items():
        if not isinstance(target, str) or ":" not in target:
            raise UsageError(
                f"{pyproject}: [tool.shiptwo.gates] {name} = {target!r} must be "
                '"module:function" (a function returning shiptwo.harness.gates.GateResult or a bool)'
            )
    return dict(value)


def _numbers(pyproject: Path, value: dict[str, Any]) -> dict[str, float]:
    for name, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise UsageError(f"{pyproject}: [tool.shiptwo.train] {name} = {number!r} must be a number")
    return {k: float(v) for k, v in value.items()}
