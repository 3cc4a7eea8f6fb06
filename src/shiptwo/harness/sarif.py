"""Render an evaluation as a SARIF 2.1.0 log, for code-scanning tools (GitHub, VS Code's viewer).

One run whose `tool.driver.rules` are the validation rule catalog (`shiptwo pv rules`), by code,
followed by one rule per falsifier status that needs a person (`status/FALSIFIED`, ...). Every
finding is a result at its file:line; every falsifier in such a status is a result at the line of
its `id:` in the contract YAML. URIs are relative to the project root (`%SRCROOT%`).
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from shiptwo import __version__, jsonout
from shiptwo.fileio import display_path
from shiptwo.harness.contract.rules import BY_CODE, Severity
from shiptwo.harness.contract.yamlsafe import parse_yaml
from shiptwo.harness.evaluate import Evaluation
from shiptwo.harness.report import ALERTS, to_json
from shiptwo.harness.status import Status

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
SRCROOT = "%SRCROOT%"
STATUS_RULE_PREFIX = "status/"

# The statuses that need a person, with their level: the same alerts as `--format github`.
STATUS_RULES = ALERTS


def status_rule_id(status: Status) -> str:
    """The SARIF rule id of a falsifier status, e.g. `status/FALSIFIED`."""
    return STATUS_RULE_PREFIX + status.value


def _rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {
            "id": rule.code,
            "name": rule.name,
            "shortDescription": {"text": rule.summary},
            "defaultConfiguration": {"level": _level(rule.severity)},
        }
        for rule in BY_CODE.values()
    ]
    for status, (level, summary) in STATUS_RULES.items():
        rules.append(
            {
                "id": status_rule_id(status),
                "name": status.value.lower(),
                "shortDescription": {"text": summary},
                "defaultConfiguration": {"level": level},
            }
        )
    return rules


def _level(severity: Severity) -> str:
    return "error" if severity is Severity.ERROR else "warning"


def _location(path: Path, line: int, column: int, root: Path) -> dict[str, Any]:
    """A physicalLocation; paths under `root` become relative URIs, others absolute file: URIs.

    A relative `path` is taken as relative to `root` (how findings name their files).
    """
    shown = display_path(root / path, root)
    artifact: dict[str, Any]
    if Path(shown).is_absolute():
        artifact = {"uri": Path(shown).as_uri()}
    else:
        artifact = {"uri": urllib.parse.quote(Path(shown).as_posix(), safe="/"), "uriBaseId": SRCROOT}
    return {
        "physicalLocation": {
            "artifactLocation": artifact,
            # SARIF lines and columns are 1-based; a finding about a whole file says line 1.
            "region": {"startLine": max(1, line), "startColumn": max(1, column)},
        }
    }


def to_sarif(ev: Evaluation) -> dict[str, Any]:
    """The SARIF log as JSON-ready data; statuses and findings come from `report.to_json`."""
    data = to_json(ev)
    root = ev.validation.root
    rules = _rules()
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    results: list[dict[str, Any]] = []
    for f in data["findings"]:
        results.append(
            {
                "ruleId": f["rule"],
                "ruleIndex": index[f["rule"]],
                "level": "error" if f["severity"] == Severity.ERROR.value else "warning",
                "message": {"text": f"{f['name']}: {f['message']}"},
                "locations": [_location(Path(f["path"]), f["line"], f["column"], root)],
            }
        )
    # The valid contracts come first in `data`, in `ev.contracts`' order; the invalid ones after
    # them have no statuses (their findings are the results).
    valid = data["contracts"][: len(ev.contracts)]
    for report, contract in zip(ev.contracts, valid, strict=True):
        path = report.contract.path.absolute()
        parsed = None
        for i, f in enumerate(contract["falsifiers"]):
            status = Status(f["status"])
            if status not in STATUS_RULES:
                continue
            if parsed is None:
                parsed = parse_yaml(path.read_bytes())
            line, column = parsed.position(("falsifiers", i, "id"))
            rule_id = status_rule_id(status)
            results.append(
                {
                    "ruleId": rule_id,
                    "ruleIndex": index[rule_id],
                    "level": STATUS_RULES[status][0],
                    "message": {"text": f"{f['id']} is {status.value}: {f['reason'] or 'no reason given'}"},
                    "locations": [_location(path, line, column, root)],
                    "properties": {"contract": contract["id"], "falsifier": f["id"], "status": status.value},
                }
            )
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "shiptwo",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "originalUriBaseIds": {SRCROOT: {"uri": root.as_uri() + "/"}},
                "results": results,
                "properties": {"summary": data["summary"]},
            }
        ],
    }


def render_sarif(ev: Evaluation) -> str:
    return jsonout.dumps(to_sarif(ev), indent=2)
