"""Write falsifier and contract statuses back into contract YAML, touching nothing else.

A round-trip re-dump (even ruamel's) can re-wrap folded text, re-indent sequences or re-quote
scalars. Here only the byte spans of `status:` / `evidence:` lines change: the composer gives
each node's span, we splice new lines in, then re-parse and check that everything but those
keys is unchanged before the file is replaced atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shiptwo.errors import ContractError
from shiptwo.harness.contract.yamlsafe import LOADER, parse_yaml

if TYPE_CHECKING:
    from shiptwo.harness.evaluate import Evaluation
    from shiptwo.harness.status import Verdict


@dataclass(frozen=True)
class FalsifierUpdate:
    status: str
    evidence: dict[str, Any] | None  # None removes an `evidence:` key


def render_scalar(value: Any) -> str:
    """A YAML 1.1 scalar that PyYAML and ruamel read back as the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        if "." not in mantissa:  # PyYAML reads 1e-05 as a string; 1.0e-05 is a float
            mantissa += ".0"
        return f"{mantissa}e{exponent}" if exponent else mantissa
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {render_scalar(v)}" for k, v in value.items()) + "}"
    text = str(value).replace("\n", " ")
    return "'" + text.replace("'", "''") + "'"


def _last_line(node: yaml.Node) -> int:
    """0-based last line holding text of `node` (block collections end where the next token starts)."""
    if isinstance(node, yaml.ScalarNode) or getattr(node, "flow_style", False):
        end = node.end_mark
        return int(end.line if end.column > 0 else end.line - 1)
    last = int(node.start_mark.line)
    children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
    for child in children:
        last = max(last, _last_line(child))
    return last


def _key_span(mapping: yaml.MappingNode, key: str) -> tuple[int, int] | None:
    """0-based (first, last) lines of `key: value` in `mapping`, or None."""
    for key_node, value_node in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node.start_mark.line, max(key_node.start_mark.line, _last_line(value_node))
    return None


def _comment(lines: list[str], mapping: yaml.MappingNode, key: str) -> str:
    """The comment after a one-line `key: value` in `mapping` (with the spaces before it), or ''.

    A person's note on a status line (`status: DRAFT  # waiting on the GPU host`) outlives the
    status it annotates: the rewritten line keeps it.
    """
    for key_node, value_node in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            end = value_node.end_mark
            if end.line != key_node.start_mark.line or end.line >= len(lines):
                return ""
            rest = lines[end.line][end.column :].rstrip("\r\n")
            return rest if rest.lstrip(" \t").startswith("#") else ""
    return ""


def apply_updates(
    text: str, updates: dict[str, FalsifierUpdate], contract_status: str, *, source: str = "<contract>"
) -> str:
    """Return `text` with statuses and evidence of the falsifiers in `updates` (by id) rewritten."""
    root = yaml.compose(text, Loader=LOADER)
    if not isinstance(root, yaml.MappingNode):
        raise ContractError(f"{source}: not a mapping; cannot write statuses")
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += newline
    # (first line, last line, replacement lines); applied bottom-up so earlier offsets stay valid.
    edits: list[tuple[int, int, list[str]]] = []

    falsifiers = next((v for k, v in root.value if k.value == "falsifiers"), None)
    if isinstance(falsifiers, yaml.SequenceNode):
        for node in falsifiers.value:
            if not isinstance(node, yaml.MappingNode) or not node.value:
                continue
            fid = next(
                (v.value for k, v in node.value if k.value == "id" and isinstance(v, yaml.ScalarNode)), None
            )
            if fid not in updates:
                continue
            update = updates[fid]
            indent = " " * node.value[0][0].start_mark.column
            note = {key: _comment(lines, node, key) for key in _WRITTEN}
            new = {
                "status": [f"{indent}status: {update.status}{note['status']}{newline}"],
                "evidence": [f"{indent}evidence: {render_scalar(update.evidence)}{note['evidence']}{newline}"]
                if update.evidence
                else [],
            }
            append_at = _last_line(node) + 1
            status_span, evidence_span = _key_span(node, "status"), _key_span(node, "evidence")
            if status_span is None and evidence_span is None:
                edits.append((append_at, append_at - 1, new["status"] + new["evidence"]))
                continue
            if status_span is not None:
                edits.append((status_span[0], status_span[1], new["status"]))
            else:
                edits.append((append_at, append_at - 1, new["status"]))
            if evidence_span is not None:
                edits.append((evidence_span[0], evidence_span[1], new["evidence"]))
            elif new["evidence"]:
                at = status_span[1] + 1 if status_span is not None else append_at
                edits.append((at, at - 1, new["evidence"]))

    status_line = f"status: {contract_status}{_comment(lines, root, 'status')}{newline}"
    span = _key_span(root, "status")
    if span is not None:
        edits.append((span[0], span[1], [status_line]))
    else:
        after = _last_line(falsifiers) + 1 if falsifiers is not None else len(lines)
        edits.append((after, after - 1, [status_line]))

    # Bottom-up; at one insertion line the contract's status goes in first so that the last
    # falsifier's lines, inserted at the same index afterwards, land above it.
    contract_edit = edits[-1]
    for first, last, replacement in sorted(edits, key=lambda e: (e[0], e is contract_edit), reverse=True):
        lines[first : last + 1] = replacement
    out = "".join(lines)
    _verify(text, out, updates, contract_status, source)
    return out


_WRITTEN = ("status", "evidence")


def _strip(data: Any) -> Any:
    data = {k: v for k, v in data.items() if k not in _WRITTEN}
    data["falsifiers"] = [
        {k: v for k, v in f.items() if k not in _WRITTEN} if isinstance(f, dict) else f
        for f in data.get("falsifiers", [])
    ]
    return data


def _verify(before: str, after: str, updates: dict[str, FalsifierUpdate], status: str, source: str) -> None:
    """Refuse to write unless only the status fields changed and they read back as intended."""
    old, new = parse_yaml(before.encode()), parse_yaml(after.encode())
    if new.data is None or new.problems or _strip(old.data) != _strip(new.data):
        raise ContractError(
            f"{source}: writing statuses would change other content (unusual layout?); file left as it was"
        )
    if new.data.get("status") != status:
        raise ContractError(f"{source}: contract status did not read back as {status}; file left as it was")
    for f in new.data.get("falsifiers", []):
        want = updates.get(f.get("id"))
        if want and (f.get("status") != want.status or f.get("evidence") != _normalise(want.evidence)):
            raise ContractError(
                f"{source}: {f.get('id')}: status did not read back as written; file left as it was"
            )


def _normalise(value: Any) -> Any:
    """The value as our YAML reader returns it (dates stay text, floats stay floats)."""
    if value is None:
        return None
    return parse_yaml(f"v: {render_scalar(value)}\n".encode()).data["v"]


# Statuses whose reason is the news: why it is gated, blind to its defect, out of date, unproven.
_REASONED = ("HOST-GATED", "VACUOUS", "STALE", "NOT-RUN")


def evidence_of(verdict: Verdict, *, controls_declared: bool) -> dict[str, Any] | None:
    """The `evidence:` mapping written beside a falsifier's status (None: remove it)."""
    by = verdict.decided_by
    if by is None:
        return None
    evidence: dict[str, Any] = {"run": by.run_id, "commit": by.commit, "at": by.finished_at}
    if by.dirty:
        evidence["dirty"] = True  # the commit alone does not reproduce this result
    status = verdict.status.value
    if status in _REASONED:
        evidence["reason"] = verdict.reason[:300]
    if status != "HOST-GATED" and verdict.measured:
        evidence["measured"] = dict(verdict.measured)
    if controls_declared and by.outcome not in ("skipped", "interrupted"):
        # The count watched red: how many declared controls the deciding run saw refuted.
        evidence["controls"] = {"declared": len(verdict.controls), "refuted": verdict.refuted}
    return evidence


def _check_evidence(path: Path, fid: str, evidence: dict[str, Any] | None) -> None:
    """Refuse to write evidence the contract schema would reject: a record's values reach YAML checked."""
    if evidence is None:
        return
    from shiptwo.harness.contract.schema import describe_error, evidence_validator, finite

    errors = list(evidence_validator().iter_errors(finite(evidence)))
    if errors:
        where = ".".join(str(p) for p in errors[0].instance_path) or "evidence"
        raise ContractError(
            f"{path}: {fid}: evidence.{where}: {describe_error(errors[0])}; not writing it (a run record "
            "holds a value the contract format does not allow: re-run pytest)"
        )


@dataclass(frozen=True)
class _Write:
    """One contract's planned write: `old` is what was validated, `new` what replaces it."""

    path: Path  # the contract as validated
    target: Path  # the file its bytes live in: a symlinked contract is written through its link
    old: bytes
    new: bytes
    mode: int


# The temp files atomic_write_bytes (shiptwo.fileio) and `_replace` create beside their target:
# `.{name}.` + mkstemp's eight random characters + `.tmp`. A --write killed between creating one
# and renaming it leaves it behind; the next --write removes it.
_TEMP_PREFIX, _TEMP_SUFFIX = ".{name}.", ".tmp"
_TEMP_MIDDLE = re.compile(r"[a-z0-9_]{8}")


def write_statuses(evaluation: Evaluation, *, log: Callable[[str], None] | None = None) -> list[str]:
    """Write every contract's computed statuses into its file; returns the paths that changed.

    All or nothing: every new text is computed and checked first, and ContractError (nothing
    written) for a read-only contract or one whose bytes differ from those validated. Each file
    is re-read just before it is replaced; if it changed meanwhile (a hand edit), or a write
    fails, the files already written are put back, and the error lists what was written and
    what not. `log` hears of stale temp files removed.
    """
    plans: list[_Write] = []
    for report in evaluation.contracts:
        path = report.contract.path
        updates = {}
        for f in report.falsifiers:
            evidence = evidence_of(f.verdict, controls_declared=bool(f.falsifier.controls))
            _check_evidence(path, f.falsifier.id, evidence)
            updates[f.falsifier.id] = FalsifierUpdate(f.verdict.status.value, evidence)
        target, mode = _writable(path)
        raw = _read(path, target)
        validated = evaluation.validation.digests.get(path)
        if validated is not None and hashlib.sha256(raw).hexdigest() != validated:
            raise ContractError(f"{_shown(path)}: changed since validation; re-run (nothing written)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContractError(f"{_shown(path)}: not UTF-8; cannot write statuses") from exc
        new = apply_updates(text, updates, report.status.value, source=_shown(path))
        if new != text:
            plans.append(_Write(path, target, raw, new.encode("utf-8"), mode))
    for report in evaluation.contracts:
        for stale in _stale_temps(Path(os.path.realpath(report.contract.path))):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
                if log is not None:
                    log(f"removed {_shown(stale)}, a temp file a killed --write left behind")
    written: list[_Write] = []
    for plan in plans:
        try:
            _replace(plan.target, expect=plan.old, data=plan.new, mode=plan.mode, shown=_shown(plan.path))
        except (OSError, ContractError) as exc:
            raise ContractError(_failed(exc, plan, plans, written)) from exc
        written.append(plan)
    return [str(plan.path) for plan in written]


def _shown(path: Path) -> str:
    from shiptwo.harness.report import visible

    return visible(str(path))


def _writable(path: Path) -> tuple[Path, int]:
    """(the file to replace, its permission bits); ContractError if it is read-only."""
    target = Path(os.path.realpath(path))
    try:
        st = os.stat(target)
    except OSError as exc:
        raise ContractError(f"{_shown(path)}: cannot write statuses: {exc.strerror or exc}") from None
    # The mode bits as well as access(): root may write anything, yet a file made read-only on
    # purpose is still not ours to change.
    if not st.st_mode & stat.S_IWUSR or not os.access(target, os.W_OK):
        raise ContractError(
            f"{_shown(path)}: read-only (mode {stat.S_IMODE(st.st_mode):o}); no contract written: make it "
            "writable or leave it out of the paths"
        )
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise ContractError(
            f"{_shown(path)}: its directory {_shown(target.parent)} is not writable; no contract written"
        )
    return target, stat.S_IMODE(st.st_mode)


def _read(path: Path, target: Path) -> bytes:
    from shiptwo.harness.safefile import CONTRACT_LIMIT, FileRefused, read_file

    try:
        return read_file(target, within=None, limit=CONTRACT_LIMIT)
    except FileRefused as exc:
        raise ContractError(f"{_shown(path)}: {exc.reason}; no contract written") from None


def _stale_temps(target: Path) -> list[Path]:
    prefix = _TEMP_PREFIX.format(name=target.name)
    try:
        with os.scandir(target.parent) as entries:
            names = [e.name for e in entries if e.name.startswith(prefix) and e.name.endswith(_TEMP_SUFFIX)]
    except OSError:
        return []
    return [
        target.parent / name
        for name in names
        if _TEMP_MIDDLE.fullmatch(name[len(prefix) : -len(_TEMP_SUFFIX)])
    ]


def _replace(target: Path, *, expect: bytes, data: bytes, mode: int, shown: str) -> None:
    """Replace `target` with `data` atomically, only while it still holds `expect`.

    The new bytes go to a temp file first (fsync'd), so the window between the last comparison
    and the rename is a few syscalls, not a write. POSIX has no compare-and-rename, so the old
    file is kept by a second hard link across the rename and read once more afterwards: an edit
    that landed in that window is found there, put back in place, and reported.
    """
    prefix = _TEMP_PREFIX.format(name=target.name)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=_TEMP_SUFFIX)
    old = target.parent / f"{prefix}{secrets.token_hex(4)}{_TEMP_SUFFIX}"
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if _read(target, target) != expect:
            raise ContractError(f"{shown}: changed since validation; re-run")
        os.link(target, old)
        os.replace(tmp, target)
        if _read(old, old) != expect:
            os.replace(old, target)  # the old file with the edit it received is the one to keep
            raise ContractError(f"{shown}: changed since validation; re-run")
    finally:
        for leftover in (tmp, old):
            with contextlib.suppress(OSError):
                os.unlink(leftover)


def _failed(exc: BaseException, failed: _Write, plans: list[_Write], written: list[_Write]) -> str:
    """The error of a write that failed midway, after putting back the files already written."""
    why = str(exc) if isinstance(exc, ContractError) else f"{_shown(failed.path)}: {exc}"
    kept: list[_Write] = []
    for plan in reversed(written):
        try:
            _replace(plan.target, expect=plan.new, data=plan.old, mode=plan.mode, shown=_shown(plan.path))
        except (OSError, ContractError):
            kept.append(plan)
    if not kept:
        restored = f" ({', '.join(_shown(p.path) for p in written)} put back as they were)" if written else ""
        return f"{why}; no contract written{restored}"
    lines = [f"{why}; could not put back every file already written:"]
    lines += [f"written: {_shown(p.path)}" for p in reversed(kept)]
    lines += [f"not written: {_shown(p.path)}" for p in plans if p not in kept]
    return "\n".join(lines)
