"""The plugin's validated-contract cache: used while nothing changed, never past a change that matters.

Each change below is one that can turn a clean contract set into one with an error; after it the
next session must validate again and report that error, never the cached clean answer. The
validator (`validate_paths`) is the oracle for what a cache hit must return.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import shiptwo
import shiptwo.harness.gates as gates
import shiptwo.harness.safefile as safefile
from shiptwo.harness.contract import cache
from shiptwo.harness.contract import validate as validate_module
from shiptwo.harness.contract.cache import FILE, Loaded, load_contracts
from shiptwo.harness.contract.validate import validate_paths

from .contract_project import GOOD, TEST_DEMO, Project, edit, settle

# GOOD, covering a source file and requiring a gate that the project's conftest.py registers.
CONTRACT = edit(
    GOOD,
    ("requires: []", "requires: [dataset]"),
    (
        "    if_fails: Nothing demonstrates anything.\n",
        "    if_fails: Nothing demonstrates anything.\n    covers: ['**/demo.py']\n",
    ),
)
CONFTEST = 'from shiptwo.harness.gates import register_gate\n\nregister_gate("dataset", lambda: True)\n'


class Sessions:
    """Loads a project's contracts the way each pytest session does, through one cache directory."""

    def __init__(self, project: Project, cache_dir: Path, contracts: Path | None = None) -> None:
        self.root = project.root.resolve()
        self.contracts = contracts or self.root / "contracts"
        self.entry = cache_dir / FILE

    def __call__(self) -> Loaded:
        return load_contracts(self.contracts, self.root, self.entry.parent)

    def warm(self) -> None:
        """Settle the files, validate, and check that the next session is served from the cache."""
        settle(self.root.parent)
        assert self().problems == []
        assert self().cached


@pytest.fixture
def cached(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Sessions:
    """A clean project (contract, bound tests, a covered file, a conftest gate) and its sessions."""
    project.contract(CONTRACT)
    project.write("src/demo.py", "VALUE = 1\n")
    project.write("conftest.py", CONFTEST)
    return Sessions(project, tmp_path_factory.mktemp("cache"))


def errors(sessions: Sessions) -> list[str]:
    """The error findings of validating the project now: what a session must report."""
    result = validate_paths([sessions.contracts], root=sessions.root, test_dirs=[])
    return [
        f"{f.path}:{f.line}: {f.rule} {f.message}" for f in result.findings if f.severity.value == "error"
    ]


def assert_validated_again(loaded: Loaded, code: str) -> None:
    """The session validated (not served from the cache) and reports the error `code`."""
    assert not loaded.cached, "the cached answer was served"
    assert any(f": {code} " in p for p in loaded.problems), loaded.problems


def test_a_clean_project_is_validated_once_then_served_as_the_validator_reads_it(
    project: Project, cached: Sessions
) -> None:
    settle(project.root)
    first = cached()
    assert (first.cached, first.problems) == (False, [])
    second = cached()
    assert second.cached
    oracle = validate_paths([cached.contracts], test_dirs=[])
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


def _covered_dir_linked(project: Project) -> None:
    """src/ moves out and a symlink takes its place: glob's `**` does not follow it."""
    shutil.move(project.root / "src", project.root.parent / f"{project.root.name}-src")
    (project.root / "src").symlink_to(project.root.parent / f"{project.root.name}-src")


# Each change, and the code of the error the next load must report (None: the answer is
# unchanged, only recomputed). Edits keep the file's size where they can: a stat alone would not
# see them.
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
    "covered directory now a symlink": (_covered_dir_linked, "PV703"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_that_may_add_an_error_is_validated_again(
    project: Project, cached: Sessions, change: str
) -> None:
    apply, rule = CHANGES[change]
    cached.warm()
    apply(project)
    after = cached()
    assert after.problems == errors(cached)
    if rule is None:
        assert (after.cached, after.problems) == (False, [])
        cached.warm()
    else:
        assert_validated_again(after, rule)


def test_an_answer_with_errors_is_never_kept(project: Project, cached: Sessions) -> None:
    project.contract(edit(CONTRACT, ("DEMO-002]", "DEMO-003]")))
    settle(project.root)
    for _ in range(2):
        loaded = cached()
        assert not loaded.cached
        assert any(": PV303 " in p for p in loaded.problems), loaded.problems
    project.contract(CONTRACT)  # the fix is seen at once
    assert cached().problems == []


def test_inputs_written_just_now_are_not_trusted_yet(project: Project, cached: Sessions) -> None:
    assert cached().problems == []
    assert not cached().cached  # the files are seconds old: the entry waits for a later session
    settle(project.root)
    assert not cached().cached
    assert cached().cached


def test_a_file_edited_while_validation_runs_is_not_kept_as_read(
    project: Project, cached: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    settle(project.root)
    real = validate_module.validate_paths

    def racing(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)  # type: ignore[arg-type]
        project.contract(edit(CONTRACT, ("DEMO-002]", "DEMO-003]")))  # after it was read
        return result

    monkeypatch.setattr(validate_module, "validate_paths", racing)
    assert cached().problems == []  # this session saw the clean bytes
    monkeypatch.undo()
    assert_validated_again(cached(), "PV303")


def test_a_gate_no_longer_registered_in_the_process_is_validated_again(
    project: Project, cached: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Registered by code pytest loaded (a plugin, a conftest outside the scanned test dirs), so
    # no file the cache hashes says so: `pytest tests/` registers it, `pytest other/` may not.
    project.contract(edit(CONTRACT, ("requires: [dataset]", "requires: [at-runtime]")))
    monkeypatch.setitem(
        gates._REGISTRY.project, "at-runtime", lambda: gates.GateResult("at-runtime", True, "")
    )
    cached.warm()
    monkeypatch.delitem(gates._REGISTRY.project, "at-runtime")
    assert_validated_again(cached(), "PV501")


@pytest.mark.parametrize("name", ["conftest.py", "pyproject.toml"])
def test_a_project_file_linked_out_of_the_root_is_hashed_through_the_link(
    project: Project, cached: Sessions, name: str
) -> None:
    # Validation reads conftest.py and pyproject.toml wherever they lead, so the cache must too.
    if name == "pyproject.toml":
        project.write("conftest.py", "")
        project.write("pyproject.toml", "[tool.shiptwo.gates]\ndataset = 'probes:dataset'\n")
    target = project.root.parent / f"{project.root.name}-{name}"
    (project.root / name).rename(target)
    (project.root / name).symlink_to(target)
    cached.warm()
    target.write_text(target.read_text().replace("dataset", "datasex"))
    assert_validated_again(cached(), "PV501")


def test_a_contracts_dir_outside_the_root_does_not_widen_where_test_files_may_lead(
    project: Project, tmp_path_factory: pytest.TempPathFactory
) -> None:
    spec = project.root.parent / f"{project.root.name}-spec"
    project.contract(CONTRACT)
    project.write("src/demo.py", "VALUE = 1\n")
    project.write("conftest.py", CONFTEST)
    shutil.move(project.root / "contracts", spec)
    sessions = Sessions(project, tmp_path_factory.mktemp("cache"), contracts=spec)
    sessions.warm()
    test = project.root / "falsifiers/test_demo.py"
    (spec / "test_demo.py").write_bytes(test.read_bytes())
    test.unlink()
    test.symlink_to(spec / "test_demo.py")  # the same bytes, in a place validation does not read
    assert_validated_again(sessions(), "PV009")


def test_a_contracts_subdirectory_that_cannot_be_listed_is_validated_again(
    project: Project, cached: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    drafts = project.root / "contracts" / "drafts"
    drafts.mkdir()
    cached.warm()
    real = os.walk

    def walk(
        top: object, onerror: Callable[[OSError], None] | None = None, **kwargs: object
    ) -> Iterator[object]:
        for entry in real(top, onerror=onerror, **kwargs):  # type: ignore[call-overload]
            if Path(entry[0]) == drafts and onerror is not None:
                onerror(PermissionError(13, "Permission denied", str(drafts)))  # as for chmod 000
                continue
            yield entry

    monkeypatch.setattr(safefile.os, "walk", walk)
    after = cached()
    assert not after.cached
    assert after.problems == errors(cached) != []


@pytest.mark.parametrize(
    "patch",
    [
        lambda m: m.setattr(shiptwo, "__version__", "9.9.9"),
        lambda m: m.setattr(gates, "installed_gates", lambda: {"qwen-gguf": "elsewhere:check"}),
        lambda m: m.setattr(cache, "VALIDATOR_PACKAGES", ("shiptwo", "yaml")),
    ],
    ids=["shiptwo-version", "installed-gates", "validator-code"],
)
def test_another_validator_or_other_installed_gates_validate_again(
    cached: Sessions, monkeypatch: pytest.MonkeyPatch, patch: Callable[[pytest.MonkeyPatch], None]
) -> None:
    cached.warm()
    patch(monkeypatch)
    assert not cached().cached


def test_the_validator_signature_sees_a_reinstall_that_keeps_mtimes(tmp_path: Path) -> None:
    package = tmp_path / "pkg_for_signature"
    package.mkdir()
    (package / "__init__.py").write_text("X = 1\n")
    st = (package / "__init__.py").stat()
    with pytest.MonkeyPatch.context() as m:
        m.syspath_prepend(str(tmp_path))
        before = cache._code_signature(["pkg_for_signature"])
        (package / "__init__.py").unlink()
        (package / "__init__.py").write_text("X = 2\n")  # a new file, the old size and mtime
        os.utime(package / "__init__.py", ns=(st.st_atime_ns, st.st_mtime_ns))
        assert cache._code_signature(["pkg_for_signature"]) != before


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"key": 1}',
        json.dumps({"key": {}, "files": 3}).encode(),
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["empty", "torn", "a-list", "short", "wrong-types", "not-utf8", "nested-too-deep"],
)
def test_a_torn_or_foreign_cache_file_is_validated_over(cached: Sessions, garbage: bytes) -> None:
    cached.warm()
    cached.entry.write_bytes(garbage)
    again = cached()
    assert (again.cached, again.problems, len(again.contracts)) == (False, [], 1)
    assert cached().cached  # written afresh


def test_a_cache_entry_that_is_a_fifo_is_not_waited_on(cached: Sessions) -> None:
    cached.warm()
    cached.entry.unlink()
    os.mkfifo(cached.entry)
    loaded = cached()  # a blocking read would hang here
    assert (loaded.cached, loaded.problems) == (False, [])


def test_a_cache_that_cannot_be_written_only_costs_time(project: Project, tmp_path: Path) -> None:
    project.contract(CONTRACT)
    project.write("src/demo.py", "VALUE = 1\n")
    project.write("conftest.py", CONFTEST)
    settle(project.root)
    not_a_dir = tmp_path / "cache-is-a-file"
    not_a_dir.write_text("")
    root = project.root.resolve()
    for _ in range(2):
        loaded = load_contracts(root / "contracts", root, not_a_dir)
        assert (loaded.cached, loaded.problems, len(loaded.contracts)) == (False, [], 1)
    assert not_a_dir.read_text() == ""
