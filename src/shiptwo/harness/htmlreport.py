"""`shiptwo pv report`: one static HTML page of the contracts, their falsifiers and the evidence.

Self-contained (inline CSS and SVG, no script, nothing fetched: its Content-Security-Policy
forbids it), so a CI job can upload it as an artifact and anyone can open it from disk. Statuses
come from `report.to_json`; the measurements' names and bands from the contract model; each
measurement's history from every run record in the evidence directory. Every string that came
from YAML or a record is HTML-escaped.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiptwo import __version__
from shiptwo.fileio import atomic_write_bytes
from shiptwo.harness.contract.model import Measurement, Range
from shiptwo.harness.contract.rules import Severity
from shiptwo.harness.evaluate import Evaluation, FalsifierReport
from shiptwo.harness.evidence import RunRecord
from shiptwo.harness.report import _plural, to_json
from shiptwo.harness.status import ContractStatus, Status

REPORT_FILE = "index.html"

# Colours people learn once: green passed, red refuted, amber look again, grey nothing known.
STATUS_COLOURS: dict[str, str] = {
    Status.DISCHARGED.value: "#1a7f37",
    Status.FALSIFIED.value: "#cf222e",
    Status.VACUOUS.value: "#8250df",
    Status.ERROR.value: "#a40e26",
    Status.SUSPECT.value: "#bc4c00",
    Status.STALE.value: "#9a6700",
    Status.HOST_GATED.value: "#0969da",
    Status.NOT_RUN.value: "#6e7781",
    Status.UNBOUND.value: "#6e7781",
    ContractStatus.ACTIVE_RUNTIME.value: "#1a7f37",
    ContractStatus.DRAFT_PARTIAL_DISCHARGE.value: "#1b7c83",
    ContractStatus.DRAFT.value: "#6e7781",
    # ContractStatus.FALSIFIED has the same spelling as Status.FALSIFIED, and its colour.
}
CONTROL_COLOURS: dict[str, str] = {
    "refuted": "#1a7f37",
    "survived": "#cf222e",
    "error": "#a40e26",
    "not-run": "#6e7781",
}
PASS_BAND = "#c9ecd2"  # the `pass` range, under everything else in a chart
PLAUSIBLE_BAND = "#0969da"  # the `plausible` range: a translucent fill with a dashed edge
_POINT_OK, _POINT_SUSPECT, _POINT_FAIL = "#24292f", "#bc4c00", "#cf222e"

_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
  margin: 0; background: #f6f8fa; }
main { max-width: 1160px; margin: 0 auto; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0; }
h3 { font-size: 15px; margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
.muted { color: #59636e; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff; font-weight: 600;
  font-size: 12px; white-space: nowrap; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 16px 0; }
.tile { color: #fff; border-radius: 8px; padding: 8px 16px; min-width: 110px; }
.tile b { display: block; font-size: 26px; line-height: 1.1; }
section.contract { background: #fff; border: 1px solid #d1d9e0; border-radius: 8px; margin: 18px 0;
  padding: 16px 20px; }
.head { display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
article { border-top: 1px solid #d1d9e0; margin-top: 14px; padding-top: 12px; }
table { border-collapse: collapse; margin: 8px 0; }
caption { text-align: left; }
td, th { border: 1px solid #d1d9e0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 6px 0; }
figcaption { font-size: 12px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; }
ul.findings li { margin: 2px 0; }
"""


@dataclass(frozen=True)
class Point:
    """One recorded value of one measurement."""

    run_id: str
    finished_at: str
    value: float | None  # None: the test recorded NaN or an infinity


def measurement_history(records: Sequence[RunRecord]) -> dict[tuple[str, str], list[Point]]:
    """(falsifier id, measurement name) -> every value recorded, in the records' order (oldest first)."""
    history: dict[tuple[str, str], list[Point]] = {}
    for record in records:
        for result in record.results():
            for fid in result.falsifiers:
                for name, values in result.measurements.items():
                    points = history.setdefault((fid, name), [])
                    points.extend(Point(result.run_id, result.finished_at, v) for v in values)
    return history


def write_report(directory: Path, ev: Evaluation) -> dict[str, Any]:
    """Write `directory/index.html` atomically; returns its path and what it shows, as counts."""
    history = measurement_history(ev.records)
    path = directory / REPORT_FILE
    atomic_write_bytes(path, render_html(ev, history).encode("utf-8"))
    charts = [
        history.get((f.falsifier.id, name), [])
        for c in ev.contracts
        for f in c.falsifiers
        for name in f.falsifier.measurements
    ]
    summary = to_json(ev)["summary"]
    return {
        "report": str(path),
        "contracts": summary["contracts"],
        "falsifiers": summary["falsifiers"],
        "controls": summary["controls"],
        "runs": summary["runs"],
        "measurements": len(charts),
        "points": sum(len(points) for points in charts),
        "findings": len(ev.findings),
    }


# Control characters are not allowed in HTML text; they are shown as escapes, so a reader sees
# that the record held one. Tab and newline are left to the layout.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _e(text: object) -> str:
    """`text` HTML-escaped for an element or a quoted attribute."""
    visible = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
    return html.escape(visible, quote=True)


def _badge(word: str, colours: dict[str, str] = STATUS_COLOURS) -> str:
    return f'<span class="badge" style="background:{colours.get(word, "#6e7781")}">{_e(word)}</span>'


def render_html(ev: Evaluation, history: dict[tuple[str, str], list[Point]]) -> str:
    """The whole page as text."""
    data = to_json(ev)
    summary = data["summary"]
    errors = sum(f["severity"] == Severity.ERROR.value for f in data["findings"])
    warnings = len(data["findings"]) - errors
    falsifiers = sum(summary["falsifiers"].values())
    controls = summary["controls"]
    tiles = "".join(
        f'<div class="tile" style="background:{STATUS_COLOURS.get(status, "#6e7781")}">'
        f"<b>{n}</b>{_e(status)}</div>"
        for status, n in summary["falsifiers"].items()
    )
    body = [
        f"<h1>shiptwo report: {_e(ev.validation.root.name)}</h1>",
        f'<p class="muted">{len(ev.contracts)} contracts · {falsifiers} falsifiers · '
        f"{controls['refuted']}/{controls['declared']} controls refuted · {summary['runs']} run records · "
        f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')} · shiptwo {_e(__version__)}</p>",
        f'<div class="tiles">{tiles}</div>',
    ]
    body.append(_overview(data["contracts"]))
    if data["findings"]:
        items = "".join(
            f"<li>{_badge(f['severity'], {'error': '#cf222e', 'warning': '#9a6700'})} "
            f"<code>{_e(f['path'])}:{f['line']}:{f['column']}</code> <b>{_e(f['rule'])}</b> "
            f"{_e(f['name'])}: {_e(f['message'])}</li>"
            for f in data["findings"]
        )
        body.append(f'<h2>Findings</h2><ul class="findings">{items}</ul>')
    valid = data["contracts"][: len(ev.contracts)]
    for report, contract in zip(ev.contracts, valid, strict=True):
        articles = "".join(
            _falsifier(fr, fj, history)
            for fr, fj in zip(report.falsifiers, contract["falsifiers"], strict=True)
        )
        body.append(
            f'<section class="contract" id="{_e(_anchor(contract))}"><div class="head">'
            f'<h2>{_e(contract["id"])}</h2><span class="muted">{_e(contract["version"])}</span>'
            f"{_badge(contract['status'])}</div>"
            f'<p>{_e(report.contract.title)} <span class="muted">({_e(contract["path"])}; '
            f"written status {_e(contract['written_status'] or 'none')})</span></p>"
            f"{articles}</section>"
        )
    for contract in data["contracts"][len(ev.contracts) :]:
        body.append(
            f'<section class="contract" id="{_e(_anchor(contract))}"><div class="head">'
            f"<h2>{_e(contract['id'] or contract['path'])}</h2>{_badge('invalid', {'invalid': '#cf222e'})}"
            f"</div><p>{_e(contract['path'])}: not read as a contract; its findings say why.</p></section>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>shiptwo report: {_e(ev.validation.root.name)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def _anchor(contract: dict[str, Any]) -> str:
    return f"contract:{contract['path']}"


def _overview(contracts: list[dict[str, Any]]) -> str:
    """One row per contract: its status, its falsifiers' statuses, its controls refuted."""
    rows = []
    for c in contracts:
        statuses: dict[str, int] = {}
        for f in c["falsifiers"]:
            statuses[f["status"]] = statuses.get(f["status"], 0) + 1
        controls = [control for f in c["falsifiers"] for control in f["controls"]]
        refuted = sum(control["outcome"] == "refuted" for control in controls)
        rows.append(
            f'<tr><td><a href="#{_e(_anchor(c))}">{_e(c["id"] or c["path"])}</a></td>'
            f"<td>{_badge(c['status'] or 'invalid', {**STATUS_COLOURS, 'invalid': '#cf222e'})}</td>"
            f"<td>{' '.join(f'{n} {_badge(s)}' for s, n in statuses.items()) or '-'}</td>"
            f"<td>{refuted}/{len(controls)}</td></tr>"
        )
    return (
        "<table><tr><th>contract</th><th>status</th><th>falsifiers</th><th>controls refuted</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _falsifier(fr: FalsifierReport, fj: dict[str, Any], history: dict[tuple[str, str], list[Point]]) -> str:
    f = fr.falsifier
    parts = [
        f'<article id="{_e(f.id)}"><div class="head"><h3>{_e(f.id)}</h3>{_badge(fj["status"])}</div>',
        f"<p>{_e(f.prediction)}</p>",
        f'<p class="muted">{_e(fj["reason"])}</p>' if fj["reason"] else "",
    ]
    facts = [("obligations", ", ".join(fj["obligations"]) or "none")]
    facts.append(("tests", ", ".join(fj["tests"]) or "none bound"))
    if fj["requires"]:
        facts.append(("requires", ", ".join(fj["requires"])))
    if "run" in fj:
        facts.append(("decided by", f"run {fj['run']} at {fj['at']}, commit {fj['commit'] or 'unknown'}"))
    parts.append(
        '<p class="muted">'
        + " · ".join(f"{_e(label)}: <code>{_e(value)}</code>" for label, value in facts)
        + "</p>"
    )
    if fj["controls"]:
        rows = "".join(
            f"<tr><td><code>{_e(c['id'])}</code></td><td>{_e(c['defect'])}</td>"
            f"<td>{_badge(c['outcome'], CONTROL_COLOURS)}</td><td>{_e(c['detail'])}</td></tr>"
            for c in fj["controls"]
        )
        refuted = sum(c["outcome"] == "refuted" for c in fj["controls"])
        parts.append(
            f'<table><caption class="muted">controls: {refuted}/{len(fj["controls"])} refuted</caption>'
            f"<tr><th>control</th><th>defect planted</th><th>outcome</th><th>detail</th></tr>{rows}</table>"
        )
    else:
        parts.append('<p class="muted">no controls declared</p>')
    if f.measurements:
        charts = "".join(chart(spec, history.get((f.id, name), [])) for name, spec in f.measurements.items())
        parts.append(f'<div class="charts">{charts}</div>')
    parts.append("</article>")
    return "".join(parts)


# Chart geometry, in SVG user units (= CSS pixels).
_W, _H = 540, 160
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 12, 10, 30


def _view(spec: Measurement, values: list[float]) -> tuple[float, float]:
    """The y range a chart shows: every value and every finite band edge, with a margin."""
    seen = values + _edges(spec)
    if not seen:
        return 0.0, 1.0
    lo, hi = min(seen), max(seen)
    pad = (hi - lo) * 0.1 if hi > lo else (abs(lo) * 0.5 or 1.0)
    return lo - pad, hi + pad


def _judge(spec: Measurement, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return _POINT_FAIL
    if spec.passing is not None and not spec.passing.contains(value):
        return _POINT_FAIL
    if spec.plausible is not None and not spec.plausible.contains(value):
        return _POINT_SUSPECT
    return _POINT_OK


def chart(spec: Measurement, points: list[Point]) -> str:
    """One measurement's history as an inline SVG figure, over its pass and plausible bands."""
    finite = [p.value for p in points if p.value is not None and math.isfinite(p.value)]
    lo, hi = _view(spec, finite)
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def y(v: float) -> float:
        return _TOP + (hi - v) / (hi - lo) * ph

    def band(r: Range) -> tuple[float, float]:
        top = _TOP if r.max is None else y(min(r.max, hi))
        bottom = _TOP + ph if r.min is None else y(max(r.min, lo))
        return top, max(bottom - top, 1.0)  # a band of one value is still drawn, one unit high

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        f'role="img" aria-label="{_e(spec.name)}">',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{pw}" height="{ph}" fill="#fff" stroke="#d1d9e0"/>',
    ]
    if spec.passing is not None:
        top, height = band(spec.passing)
        svg.append(
            f'<rect x="{_LEFT}" y="{top:.1f}" width="{pw}" height="{height:.1f}" fill="{PASS_BAND}">'
            f"<title>pass {_e(spec.passing)}</title></rect>"
        )
    if spec.plausible is not None:
        top, height = band(spec.plausible)
        svg.append(
            f'<rect x="{_LEFT + 1}" y="{top:.1f}" width="{pw - 2}" height="{height:.1f}" '
            f'fill="{PLAUSIBLE_BAND}" fill-opacity="0.12" stroke="{PLAUSIBLE_BAND}" stroke-dasharray="5 3">'
            f"<title>plausible {_e(spec.plausible)}</title></rect>"
        )
    # The band edges are labelled first; the view's own ends only where they do not crowd them.
    ticks: list[float] = []
    for v in [*sorted(set(_edges(spec))), lo, hi]:
        if all(abs(y(v) - y(t)) >= 12 for t in ticks):  # a label on top of another helps nobody
            ticks.append(v)
    for v in ticks:
        svg.append(
            f'<text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11" fill="#59636e">'
            f"{v:.4g}</text>"
        )
    runs: list[str] = []
    for p in points:
        if not runs or runs[-1] != p.run_id:
            runs.append(p.run_id)
    index = {run: i for i, run in enumerate(runs)}

    def x(run: str) -> float:
        return _LEFT + pw * (index[run] + 0.5) / max(len(runs), 1)

    line = [
        f"{x(p.run_id):.1f},{y(p.value):.1f}"
        for p in points
        if p.value is not None and math.isfinite(p.value)
    ]
    if len(line) > 1:
        svg.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="#57606a" stroke-width="1.5"/>')
    for p in points:
        tip = f"<title>{_e(p.run_id)} ({_e(p.finished_at)}): {_e(p.value)}</title>"
        colour = _judge(spec, p.value)
        if p.value is None or not math.isfinite(p.value):
            cx, cy = x(p.run_id), _TOP + 6
            svg.append(
                f'<path d="M{cx - 4:.1f},{cy - 4:.1f}L{cx + 4:.1f},{cy + 4:.1f}M{cx - 4:.1f},{cy + 4:.1f}'
                f'L{cx + 4:.1f},{cy - 4:.1f}" stroke="{colour}" stroke-width="2">{tip}</path>'
            )
        else:
            svg.append(
                f'<circle cx="{x(p.run_id):.1f}" cy="{y(p.value):.1f}" r="4" fill="{colour}">{tip}</circle>'
            )
    if len(runs) == 1:
        svg.append(
            f'<text x="{x(runs[0]):.1f}" y="{_H - 10}" font-size="11" fill="#59636e" text-anchor="middle">'
            f"{_e(points[0].finished_at[:16])}</text>"
        )
    elif runs:
        first, newest = points[0].finished_at[:16], points[-1].finished_at[:16]
        svg.append(
            f'<text x="{_LEFT}" y="{_H - 10}" font-size="11" fill="#59636e">{_e(first)}</text>'
            f'<text x="{_W - _RIGHT}" y="{_H - 10}" font-size="11" fill="#59636e" text-anchor="end">'
            f"{_e(newest)}</text>"
        )
    else:
        svg.append(
            f'<text x="{_LEFT + pw / 2}" y="{_TOP + ph / 2}" text-anchor="middle" font-size="12" '
            'fill="#59636e">no recorded values</text>'
        )
    svg.append("</svg>")
    swatch = '<span class="swatch" style="background:{}{}"></span>'
    bands = []
    if spec.passing is not None:
        bands.append(swatch.format(PASS_BAND, "") + f"pass {_e(spec.passing)}")
    if spec.plausible is not None:
        edge = f";border:1px dashed {PLAUSIBLE_BAND};opacity:0.6"
        bands.append(swatch.format(PLAUSIBLE_BAND + "33", edge) + f"plausible {_e(spec.plausible)}")
    unfinite = len(points) - len(finite)
    caption = (
        f"<b>{_e(spec.name)}</b> ({_e(spec.unit)}) · {' · '.join(bands)} · "
        f"{_plural(len(points), 'value')} from {_plural(len(runs), 'run')}"
        + (f" · {unfinite} not finite" if unfinite else "")
    )
    return f"<figure>{''.join(svg)}<figcaption>{caption}</figcaption></figure>"


def _edges(spec: Measurement) -> list[float]:
    return [
        float(v)
        for band in (spec.passing, spec.plausible)
        if band is not None
        for v in (band.min, band.max)
        if v is not None
    ]
