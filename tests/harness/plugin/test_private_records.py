"""Run records name no host, user or absolute path unless the project opts in (`record_host`)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from shiptwo.harness.evidence import read_run_record
from shiptwo.harness.host import Redaction

# A bound test whose failure and skip texts carry this machine's paths, as real ones do.
LEAKY_TESTS = """
import os

@pytest.mark.falsifier("FALSIFY-DEMO-FAIL-001")
def test_fail_names_a_path():
    raise AssertionError(f"cannot read {os.path.abspath(__file__)} on " + __import__("socket").gethostname())

@pytest.mark.falsifier("FALSIFY-DEMO-PASS-001")
def test_skip_names_a_path():
    pytest.skip(f"no data under {os.path.dirname(os.path.abspath(__file__))}")
"""


def _record(root: Path) -> tuple[str, dict[str, Any]]:
    (path,) = sorted((root / "evidence" / "runs").glob("*.json"))
    return path.read_text(), json.loads(path.read_text())


def _names_host(text: str) -> bool:
    """Whether `text` holds this machine's hostname as a whole word (a short one is a common substring)."""
    return re.search(rf"(?<![\w.-]){re.escape(socket.gethostname())}(?![\w-])", text) is not None


@pytest.fixture
def leaky(demo: pytest.Pytester) -> pytest.Pytester:
    tests = demo.path / "falsifiers" / "test_demo.py"
    tests.write_text(tests.read_text() + LEAKY_TESTS)
    return demo


def test_record_names_no_host_user_or_absolute_path_by_default(leaky: pytest.Pytester, pv_json: Any) -> None:
    leaky.runpytest("-k", "not notrun")
    text, record = _record(leaky.path)
    assert str(leaky.path) not in text and str(leaky.path.resolve()) not in text
    assert not _names_host(text)
    assert "hostname" not in record["host"] and record["redacted"] is True
    # What statuses need is still there.
    assert {"platform", "python"} <= set(record["host"]) and set(record["git"]) == {"commit", "dirty"}
    tests = {t["nodeid"].split("::")[1]: t for t in record["tests"]}
    assert tests["test_fail_names_a_path"]["failure"].startswith(
        "AssertionError: cannot read falsifiers/test_demo.py on <host>"
    )
    assert tests["test_skip_names_a_path"]["skip_reason"] == "no data under falsifiers"
    _, report = pv_json(leaky.path)
    assert {f["id"]: f["status"] for f in report["contracts"][0]["falsifiers"]}["FALSIFY-DEMO-GATED-001"] == (
        "HOST-GATED"
    )


def test_record_host_on_keeps_the_hostname_and_paths(leaky: pytest.Pytester) -> None:
    leaky.makeini("[pytest]\naddopts = -p no:cacheprovider -p no:randomly\nshiptwo_record_host = true\n")
    leaky.runpytest("-k", "not notrun")
    text, record = _record(leaky.path)
    assert record["host"]["hostname"] == socket.gethostname() and "redacted" not in record
    assert str(leaky.path) in text


def test_old_records_with_a_hostname_still_read(tmp_path: Path) -> None:
    old = {
        "schema": "shiptwo.run/v1",
        "schema_version": 2,
        "run_id": "20261130T120000Z-abcdef",
        "finished_at": "2026-11-30T12:00:00.000000Z",
        "host": {"hostname": "gpu-box-7", "platform": "Linux", "python": "3.11.7"},
        "tests": [
            {"nodeid": "falsifiers/test_x.py::test_x", "falsifiers": ["FALSIFY-X-001"], "outcome": "passed"}
        ],
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    (result,) = read_run_record(path).results()
    assert result.host == "gpu-box-7"


def test_a_redacted_field_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    from shiptwo.errors import EvidenceError

    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "schema": "shiptwo.run/v1",
                "schema_version": 2,
                "run_id": "r1",
                "finished_at": "2026-11-30T12:00:00Z",
                "redacted": "yes",
                "tests": [],
            }
        )
    )
    with pytest.raises(EvidenceError, match=r"bad.json: redacted is not true or false \(found 'yes'\)"):
        read_run_record(path)


def test_redaction_rewrites_root_home_user_and_host_only_where_they_stand_whole() -> None:
    r = Redaction.of(Path("/home/alice/proj"), home=Path("/home/alice"), user="alice", hostname="gpu7")
    assert r.text("cannot read /home/alice/proj/falsifiers/x.py") == "cannot read falsifiers/x.py"
    assert r.text("rootdir: /home/alice/proj") == "rootdir: ."
    assert r.text("/home/alice/proj2/y") == "~/proj2/y", "a sibling of the root is not under it"
    assert r.text("/home/alice/.cache/shiptwo/m.gguf") == "~/.cache/shiptwo/m.gguf"
    assert r.text("/tmp/pytest-of-alice/pytest-3/t0") == "/tmp/pytest-of-<user>/pytest-3/t0"
    assert r.text("ran on gpu7, not gpu70 or gpu7.example") == "ran on <host>, not gpu70 or <host>.example"
    assert r.text("/usr/lib/python3.11/os.py") == "/usr/lib/python3.11/os.py", "a system path names nobody"
