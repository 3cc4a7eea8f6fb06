"""The plugin's validated-contract cache: used while nothing changed, never past a change that matters.

Each change below is one that can turn a clean contract set into one with an error; after it the
next session must validate again and report that error, never the cached clean answer. The
validator (`validate_paths`) is the oracle for what a cache hit must return.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import shiptwo
import shiptwo.harness.gates as gates
from shiptwo.harness.contract import cache
from shiptwo.harness.contract.cache import FILE, Loaded, load_contracts
from shiptwo.harness.contract.validate import validate_paths

from .contract_project import GOOD, TEST_DEMO, Project, edit

# GOOD, covering a source file and requiring a gate that the project's conftest.py registers.
CONTRACT = edit(
    GOOD,
    ("requires: []", "requires: [dataset]"),
    (
        "    if_fails: Nothing demonstrates anything.\n",
        "    if_fails: Nothing demonstrates anything.\n    covers: [src/demo.py]\n",
    ),
)
CONFTEST = 'from shiptwo.harness.gates import register_gate\n\nregister_gate("dataset", lambda: True)\n'


class Sessions:
    """Loads a project's contracts the way each pytest session does, through one cache directory."""

    def __init__(self, project: Project, cache_dir: Path) -> None:
        self.root = project.root.resolve()
        self.entry = cache_dir / FILE

    def __call__(self) -> Loaded:
        return load_contracts(self.root / "contracts", self.root, self.entry.parent)


@pytest.fixture
def cached(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Sessions:
    """A clean project (contract, bound tests, a covered file, a conftest gate) and its sessions."""
    project.contract(CONTRACT)
    project.write("src/demo.py", "VALUE = 1\n")
    project.write("conftest.py", CONFTEST)
    return Sessions(project, tmp_path_factory.mktemp("cache"))


def test_a_clean_project_is_validated_once_then_served_as_the_validator_reads_it(
    project: Project, cached: Sessions
) -> None:
    first = cached()
    assert (first.cached, first.problems) == (False, [])
    second = cached()
    assert second.cached
    oracle = validate_paths([project.root.resolve() / "contracts"], test_dirs=[])
    assert not oracle.findings
    assert second.contracts == oracle.contracts == first.contracts
    assert [f.controls for c in second.contracts for f in c.falsifiers] == [
        f.controls for c in oracle.contracts for f in c.falsifiers
    ]


def _link_out(project: Project) -> None:
    """The bound test file becomes a symlink to the same bytes outside the project."""
    test = project.root / "falsifiers/test_demo.py"
    outside = project.root.parent / f"{project.root.name}-outside.py"
    test.rename(outside)
    test.symlink_to(outside)


# Each change, and the code of the error the next load must report (None: the answer is unchanged, only
# recomputed). Edits keep the file's size where they can: a stat alone would not see them.
CHANGES: dict[str, tuple[Callable[[Project], None], str | None]] = {
    "contract edited, same size": (
        lambda p: p.contract(edit(CONTRACT, ("DEMO-002]", "DEMO-003]"))),
        "PV303",
    ),
    "contract added": (lambda p: p.contract("schema: shiptwo.contract/v1\nid: x\n", stem="x"), "PV102"),
    "bound test file edited": (
        lambda p: p.write("falsifiers/test_demo.py", TEST_DEMO.replace("def test_demo(", "def test_demx(")),
        "PV402",
    ),
    "bound test file linked out of the project, bytes unchanged": (_link_out, "PV009"),
    "bound test file deleted": (lambda p: (p.root / "falsifiers/test_demo.py").unlink(), "PV401"),
    "conftest gate renamed": (
        lambda p: p.write("conftest.py", CONFTEST.replace("dataset", "datasex")),
        "PV501",
    ),
    "pyproject edited": (
        lambda p: p.write(
            "pyproject.toml", "[project]\nname = 'demo'\n[tool.shiptwo]\ncontracts = 'contracts'\n"
        ),
        None,
    ),
    "covered file deleted": (lambda p: (p.root / "src/demo.py").unlink(), "PV703"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_that_may_add_an_error_is_validated_again(
    project: Project, cached: Sessions, change: str
) -> None:
    apply, rule = CHANGES[change]
    cached()
    assert cached().cached
    apply(project)
    after = cached()
    assert not after.cached, f"{change}: the cached answer was served"
    if rule is None:
        assert after.problems == []
        assert cached().cached
    else:
        assert any(f": {rule} " in p for p in after.problems), after.problems


def test_an_answer_with_errors_is_never_kept(project: Project, cached: Sessions) -> None:
    project.contract(edit(CONTRACT, ("DEMO-002]", "DEMO-003]")))
    for _ in range(2):
        loaded = cached()
        assert not loaded.cached
        assert any(": PV303 " in p for p in loaded.problems), loaded.problems
    project.contract(CONTRACT)  # the fix is seen at once
    assert cached().problems == []


@pytest.mark.parametrize(
    "patch",
    [
        lambda m: m.setattr(shiptwo, "__version__", "9.9.9"),
        lambda m: m.setattr(gates, "installed_gates", lambda: {"qwen-gguf": "elsewhere:check"}),
        lambda m: m.setattr(cache, "_source_signature", lambda: "another checkout"),
    ],
    ids=["shiptwo-version", "installed-gates", "shiptwo-source"],
)
def test_another_validator_or_other_installed_gates_validate_again(
    cached: Sessions, monkeypatch: pytest.MonkeyPatch, patch: Callable[[pytest.MonkeyPatch], None]
) -> None:
    cached()
    assert cached().cached
    patch(monkeypatch)
    assert not cached().cached


@pytest.mark.parametrize(
    "garbage",
    [b"", b"{not json", b"[]", b'{"key": 1}', json.dumps({"key": {}, "files": 3}).encode(), b"\xff\xfe"],
    ids=["empty", "torn", "a-list", "short", "wrong-types", "not-utf8"],
)
def test_a_torn_or_foreign_cache_file_is_validated_over(
    project: Project, cached: Sessions, garbage: bytes
) -> None:
    cached()
    cached.entry.write_bytes(garbage)
    again = cached()
    assert (again.cached, again.problems) == (False, [])
    assert len(again.contracts) == 1
    assert cached().cached  # written afresh


def test_a_cache_that_cannot_be_written_only_costs_time(project: Project, tmp_path: Path) -> None:
    project.contract(CONTRACT)
    project.write("src/demo.py", "VALUE = 1\n")
    project.write("conftest.py", CONFTEST)
    not_a_dir = tmp_path / "cache-is-a-file"
    not_a_dir.write_text("")
    root = project.root.resolve()
    for _ in range(2):
        loaded = load_contracts(root / "contracts", root, not_a_dir)
        assert (loaded.cached, loaded.problems, len(loaded.contracts)) == (False, [], 1)
    assert not_a_dir.read_text() == ""
