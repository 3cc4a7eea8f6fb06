"""Render an evaluation as GitHub-flavoured Markdown, for a workflow's job summary.

A headline with the counts by status, one table row per falsifier (status, controls refuted,
why), then the error findings as a list and the warnings folded away. Every string that came
from a contract or a run record goes through `escape`, so none can break the table or inject
markup.
"""

from __future__ import annotations

import re
from typing import Any

from shiptwo.harness.contract.rules import Severity
from shiptwo.harness.evaluate import Evaluation
from shiptwo.harness.report import _plural, to_json
from shiptwo.harness.status import Status

# A mark beside each status, so a long table can be scanned by eye.
_MARK = {
    Status.DISCHARGED.value: "✅",
    Status.FALSIFIED.value: "❌",
    Status.VACUOUS.value: "❌",
    Status.ERROR.value: "💥",
    Status.SUSPECT.value: "⚠️",
    Status.STALE.value: "⏳",
    Status.HOST_GATED.value: "🔒",
    Status.NOT_RUN.value: "➖",
    Status.UNBOUND.value: "➖",
}
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: any of them can end a
# table row or hide text.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Characters with a meaning in GFM inline text; `<`, `>` and `&` become entities instead, because
# GitHub renders raw HTML.
_SPECIAL = re.compile(r"([\\`*_\[\]|~#!])")


def escape(text: object) -> str:
    """`text` as inert Markdown on one line: markup characters escaped, controls as spaces.

    The backslash is escaped first of all, so an input `\\|` cannot turn our `\\|` back into a
    column separator.
    """
    one_line = _CONTROL.sub(" ", str(text))
    inert = one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\1", inert)


def render_markdown(ev: Evaluation) -> str:
    data = to_json(ev)
    summary = data["summary"]
    falsifiers = sum(summary["falsifiers"].values())
    errors = [f for f in data["findings"] if f["severity"] == Severity.ERROR.value]
    warnings = [f for f in data["findings"] if f["severity"] != Severity.ERROR.value]
    tally = " · ".join(
        f"{_MARK.get(status, '')} **{n}** {status}".strip() for status, n in summary["falsifiers"].items()
    )
    controls = summary["controls"]
    out = [
        f"## shiptwo: {len(data['contracts'])} contracts, {falsifiers} falsifiers",
        "",
        tally or "no falsifiers",
        "",
        f"{controls['refuted']}/{controls['declared']} controls refuted · {summary['runs']} run records · "
        f"{_plural(len(errors), 'error')}, {_plural(len(warnings), 'warning')}",
        "",
    ]
    if data["contracts"]:
        out += [
            "| Contract | Falsifier | Status | Controls refuted | Why |",
            "| --- | --- | --- | --- | --- |",
        ]
        for c in data["contracts"]:
            out.extend(_rows(c))
        out.append("")
    if errors:
        out += ["### Errors", ""]
        out += [_finding(f) for f in errors]
        out.append("")
    if warnings:
        out += [f"<details><summary>{_plural(len(warnings), 'warning')}</summary>", ""]
        out += [_finding(f) for f in warnings]
        out += ["", "</details>", ""]
    return "\n".join(out)


def _rows(contract: dict[str, Any]) -> list[str]:
    name = escape(contract["id"] or contract["path"])
    if not contract["valid"]:
        return [
            f"| {name} | | invalid | | its findings are listed under Errors ({escape(contract['path'])}) |"
        ]
    rows = []
    for f in contract["falsifiers"]:
        controls = f["controls"]
        refuted = sum(c["outcome"] == "refuted" for c in controls)
        shown = f"{refuted}/{len(controls)}" if controls else "none declared"
        why = "" if f["status"] == Status.DISCHARGED.value else escape(f["reason"])
        mark = _MARK.get(f["status"], "")
        rows.append(f"| {name} | {escape(f['id'])} | {mark} {escape(f['status'])} | {shown} | {why} |")
    return rows


def _finding(f: dict[str, Any]) -> str:
    where = escape(f"{f['path']}:{f['line']}:{f['column']}")
    return f"- {where} **{escape(f['rule'])}** {escape(f['name'])}: {escape(f['message'])}"
