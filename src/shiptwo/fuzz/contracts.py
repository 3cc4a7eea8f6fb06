"""Damaged contracts and run records, each run through the harness's readers and `shiptwo pv validate`.

    python -m shiptwo.fuzz.contracts --count 2000 --seed 0 [--format contracts|run-record|all]

Contracts: seeded mutations of the shipped contracts (`contracts/*.yaml` beside this checkout,
or `--contracts DIR`): truncation, byte flips, deep nesting, huge integers, values of the wrong
type, control characters (in keys too), duplicate keys, aliases (bombs, cycles, merges, unknown
anchors), non-UTF-8 bytes, empty and multi-document files, damaged lines, tabs. Run records:
mutations of a small valid record written by the project's own `write_run_record` (the JSON
damage of `shiptwo.fuzz.text`, plus fields the reader checks set to odd values).

Each input goes through `validate_paths` (contracts) or `read_evidence` (run records), then
through `shiptwo.cli.main(["pv", "validate", ...])`. It must come back clean: findings and
errors of one line, the CLI returning 0, 1 or 2 with no traceback and no raw ESC on stdout,
within the per-input deadline. The tally is the one of `shiptwo.fuzz.text`: `loaded` (no error
finding), `refused` (a clean error finding or record error), `traceback`, `hang`, `unclear`.

Input `index` of format `name` is rebuilt exactly from `random.Random(f"{seed}:{name}:{index}")`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import re
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from shiptwo.errors import ContractError, EvidenceError, UsageError
from shiptwo.fuzz.binary import DEFAULT_DEADLINE_S, Tally, indexes
from shiptwo.fuzz.text import (
    CONTROL,
    NOT_UTF8,
    TextTarget,
    _damage_lines,
    _json_paths,
    _set,
    classify,
    damage,
)

FORMATS = ("contracts", "run-record")
REPO = Path(__file__).resolve().parents[3]

# Values a damaged YAML value may take (what yaml.safe_dump can write): every type, past every limit.
ODD_YAML: tuple[Any, ...] = (
    None,
    True,
    -1,
    0,
    2**63,
    10**40,
    1.5,
    float("inf"),
    float("nan"),
    "",
    "x",
    "FALSIFY-X-001",
    "9.9.9",
    "\x1b[2J\x07",
    "line\n::error file=x::forged",
    [],
    [1, "a", None],
    {},
    {"a": {"b": [1]}},
)
# Extra top-level text: alias bombs, cycles, merges, an alias of no anchor, a forged key.
ALIAS_SNIPPETS: tuple[str, ...] = (
    "lol: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"l{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)),
    "cycle: &c [*c]\n",
    "cycle: &c {k: *c}\n",
    "merge: &m {<<: *m}\n",
    "base: &b {x: 1}\nmerged: {<<: [*b, *b], y: 2}\n",
    "ref: *nowhere\n",
    "big: &big [" + ", ".join(["z"] * 1000) + "]\nrep: [" + ", ".join(["*big"] * 200) + "]\n",
    '"sneaky\\n::error file=x::forged": 1\n',
    '"\\e[31mred\\e[0m": 1\n',
    "? [complex, key]\n: 1\n",
    "!!python/object:os.system {}\n",
)
EMPTY: tuple[bytes, ...] = (
    b"",
    b"\n",
    b"\xef\xbb\xbf",
    b"---\n",
    b"--- \n...\n",
    b"null\n",
    b"[]\n",
    b"'x'\n",
    b"---\na: 1\n---\nb: 2\n",
    b"# only a comment\n",
)

# A contract small enough to validate in a few milliseconds: the one run records are judged against.
FUZZ_CONTRACT = """\
schema: shiptwo.contract/v1
id: fuzz-v1
version: 1.0.0
title: Fuzz contract
description: The contract the damaged run records are judged against.
references: [shiptwo.fuzz.contracts]
requires: []
obligations:
  - id: FUZZ-001
    statement: The fuzz test holds.
falsifiers:
  - id: FALSIFY-FUZZ-001
    obligations: [FUZZ-001]
    prediction: The fuzz test passes with a plausible loss.
    tests: [falsifiers/test_fuzz.py::test_fuzz]
    controls: [{id: broken, defect: the fuzz test is broken on purpose}]
    covers: [src/fuzzed.py]
    measurements:
      loss: {unit: nats, pass: {max: 9.0}, plausible: {min: 0.5, max: 5.0}}
status: DRAFT
changelog:
  - {version: 1.0.0, date: 2026-11-30, change: first version}
"""
FUZZ_TEST = """\
import pytest


@pytest.mark.falsifier("FALSIFY-FUZZ-001")
def test_fuzz(falsifier_control):
    assert falsifier_control is None
"""


# -- damage -----------------------------------------------------------------------------------


def _scalar_lines(text: str) -> list[int]:
    return [i for i, line in enumerate(text.split("\n")) if re.search(r":\s+\S", line)]


def damage_contract(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One damaged copy of a contract's bytes and a short label of what was done."""
    kinds = ("truncate", "flip", "deep", "huge", "type", "type", "control", "duplicate", "alias")
    kind = rng.choice((*kinds, "not-utf8", "empty", "lines", "tab"))
    text = data.decode("utf-8")
    lines = text.split("\n")
    if kind == "truncate":
        cut = rng.randrange(len(data))
        return data[:cut], f"truncate at {cut}"
    if kind == "flip":
        buf = bytearray(data)
        n = rng.choice((1, 2, 8))
        for _ in range(n):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        return bytes(buf), f"flip {n} byte(s)"
    if kind == "deep":
        depth = rng.choice((99, 100, 101, 1000, 100_000))
        at = rng.choice(_scalar_lines(text))
        key, _, _ = lines[at].partition(":")
        if rng.random() < 0.5:
            lines[at] = f"{key}: " + "[" * depth + "1" + "]" * depth
        else:  # block nesting: one more indented mapping per line
            levels = min(depth, 5000)
            lines[at] = (
                f"{key}:\n"
                + "\n".join(" " * (len(key) - len(key.lstrip()) + 1 + i) + f"k{i}:" for i in range(levels))
                + " 1"
            )
        return "\n".join(lines).encode(), f"line {at + 1} nested {depth} deep"
    if kind == "huge":
        at = rng.choice(_scalar_lines(text))
        key, _, _ = lines[at].partition(":")
        value = rng.choice(
            ("9" * rng.choice((31, 4301, 5000, 100_000)), "1e999", "-.inf", ".nan", "0x" + "f" * 40)
        )
        lines[at] = f"{key}: {value}"
        return "\n".join(lines).encode(), f"line {at + 1} = {value[:20]}..."
    if kind == "type":
        data_ = yaml.safe_load(text)
        path = rng.choice(_json_paths(data_))
        value = rng.choice(ODD_YAML)
        out = yaml.safe_dump(_set(data_, path, value), allow_unicode=True, sort_keys=False)
        return out.encode(), f"{list(path)} = {value!r}"
    if kind == "control":
        if rng.random() < 0.5:
            piece = rng.choice((*CONTROL, b"\xc2\x85", b"\xe2\x80\xa8", b"\x1b"))
            at = rng.randrange(len(data) + 1)
            return data[:at] + piece + data[at:], f"insert {piece!r} at {at}"
        at = rng.choice(_scalar_lines(text))
        key, _, rest = lines[at].partition(":")
        forged = rng.choice(("\\n::error file=x::forged", "\\e[31m", "\\u202e", "\\r", "\\0"))
        lines[at] = f'{key[: len(key) - len(key.lstrip())]}"{key.strip()}{forged}":{rest}'
        return "\n".join(lines).encode(), f"line {at + 1}: key with {forged}"
    if kind == "duplicate":
        at = rng.randrange(len(lines))
        lines.insert(at, lines[at])
        return "\n".join(lines).encode(), f"line {at + 1} twice"
    if kind == "alias":
        snippet = rng.choice(ALIAS_SNIPPETS)
        if rng.random() < 0.3:
            at = rng.choice(_scalar_lines(text))
            key, _, _ = lines[at].partition(":")
            lines[at] = f"{key}: " + rng.choice(("*nowhere", "&a x", "!!binary AAAA", "!custom x"))
            return "\n".join(lines).encode(), f"line {at + 1}: alias or tag"
        return data + b"\n" + snippet.encode(), f"append {snippet[:30]!r}"
    if kind == "not-utf8":
        piece = rng.choice(NOT_UTF8)
        at = rng.randrange(len(data) + 1)
        return data[:at] + piece + data[at:], f"insert {piece!r} at {at}"
    if kind == "empty":
        return rng.choice(EMPTY), "empty"
    if kind == "tab":
        at = rng.choice([i for i, line in enumerate(lines) if line.startswith(" ")] or [0])
        lines[at] = "\t" + lines[at].lstrip(" ")
        return "\n".join(lines).encode(), f"line {at + 1} indented with a tab"
    return _damage_lines(rng, data)


# Fields the record reader checks one by one, and values that test each check.
RECORD_FIELDS: tuple[tuple[Any, ...], ...] = (
    ("run_id",),
    ("finished_at",),
    ("started_at",),
    ("schema_version",),
    ("sequence",),
    ("git", "commit"),
    ("git", "dirty"),
    ("tests", 0, "outcome"),
    ("tests", 0, "nodeid"),
    ("tests", 0, "falsifiers"),
    ("tests", 0, "measurements", "loss"),
    ("tests", 0, "controls", "FALSIFY-FUZZ-001", "broken", "outcome"),
    ("covers", "FALSIFY-FUZZ-001", "files"),
    ("covers", "FALSIFY-FUZZ-001", "digest"),
)
ODD_RECORD_VALUES: tuple[Any, ...] = (
    "9999-12-31T00:00:00Z",
    "2026-11-30T00:00:00",
    "../../etc/passwd",
    "x" * 200,
    "\x1b[2J\n::error file=x::forged",
    2**63,
    -1,
    99,
    [None, 1e308],
    {"../outside.py": "0" * 64},
)


def damage_record(target: TextTarget, rng: random.Random) -> tuple[bytes, str]:
    """One damaged copy of the seed run record: a checked field set to an odd value, or text's damage."""
    if rng.random() < 0.3:
        doc = json.loads(target.seed)
        path = rng.choice(RECORD_FIELDS)
        value = rng.choice((*ODD_RECORD_VALUES, None, True, [], {}))
        return json.dumps(_set(doc, path, value)).encode(), f"{list(path)} = {value!r}"
    return damage(target, rng)


# -- the project every input is validated in ---------------------------------------------------


class _Project:
    """A project root: a tests file, the files contracts cover, and where the damaged file goes."""

    def __init__(self, workdir: Path, seeds: dict[str, bytes]) -> None:
        from shiptwo.harness.covers import covered_files
        from shiptwo.harness.evidence import format_time, run_record, write_run_record

        self.root = workdir / "project"
        (self.root / "falsifiers").mkdir(parents=True)
        (self.root / "pyproject.toml").write_text("[project]\nname = 'fuzz'\n")
        (self.root / "falsifiers" / "test_fuzz.py").write_text(FUZZ_TEST)
        for path in sorted((REPO / "falsifiers").glob("*.py")):  # what shipped `tests:` entries name
            (self.root / "falsifiers" / path.name).write_bytes(path.read_bytes())
        for pattern in _covers(seeds) | {"src/fuzzed.py"}:  # each shipped `covers:` entry matches a file
            target = self.root / pattern
            if target.suffix != ".py":
                target = target / "__init__.py"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("# covered\n")
        self.empty = self.root / "no-tests"
        self.empty.mkdir()
        self.contracts = self.root / "contracts"
        self.contracts.mkdir()
        (self.contracts / "fuzz-v1.yaml").write_text(FUZZ_CONTRACT)
        self.evidence = self.root / "evidence"
        self.evidence.mkdir()
        now = format_time(datetime.now(UTC))
        record = run_record(
            run_id="20261130T000000Z-f0220f",
            sequence=3,
            started_at=now,
            finished_at=now,
            exit_status=1,
            git={"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
            host={"platform": "linux", "python": "3.11"},
            gates={"cuda": {"open": False, "reason": "no GPU"}},
            artifacts={},
            covers={"FALSIFY-FUZZ-001": covered_files(self.root, ["src/fuzzed.py"])},
            tests=[
                {
                    "nodeid": "falsifiers/test_fuzz.py::test_fuzz[real]",
                    "falsifiers": ["FALSIFY-FUZZ-001"],
                    "outcome": "passed",
                    "duration": 0.5,
                    "measurements": {"loss": [1.25, None]},
                    "fingerprints": {"FALSIFY-FUZZ-001": "0" * 64},
                    "controls": {
                        "FALSIFY-FUZZ-001": {
                            "broken": {
                                "outcome": "refuted",
                                "detail": "loss = 12.0 nats is outside the pass range",
                                "nodeid": "falsifiers/test_fuzz.py::test_fuzz[control=broken]",
                            }
                        }
                    },
                }
            ],
        )
        self.record = write_run_record(self.evidence, record)


def _covers(seeds: dict[str, bytes]) -> set[str]:
    out: set[str] = set()
    for raw in seeds.values():
        for f in (yaml.safe_load(raw) or {}).get("falsifiers", []):
            out.update(c for c in f.get("covers") or [] if isinstance(c, str) and "*" not in c)
    return out


def shipped_contracts(directory: Path | None = None) -> dict[str, bytes]:
    """file name -> bytes of every contract shipped in `directory` (default: this checkout's)."""
    directory = directory or REPO / "contracts"
    seeds = {p.name: p.read_bytes() for p in sorted(directory.glob("*.yaml"))}
    if not seeds:
        raise UsageError(f"{directory}: no contracts to damage; pass --contracts DIR")
    return seeds


@contextlib.contextmanager
def _one_parser() -> Iterator[None]:
    """`shiptwo.cli.main` as it is, but with its argument parser built once for the whole run.

    Building every subject's subcommands costs more than validating a contract; `main`'s own
    code (exit codes, error handling) is what runs for each input.
    """
    import shiptwo.cli as cli

    build = cli.build_parser
    parser = build()
    cli.build_parser = lambda: parser
    try:
        yield
    finally:
        cli.build_parser = build


def _cli(argv: list[str]) -> tuple[int, str, str]:
    from shiptwo.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["pv", "validate", *argv])
    return code, out.getvalue(), err.getvalue()


def _check_cli(argv: list[str]) -> None:
    code, out, err = _cli(argv)
    if code not in (0, 1, 2) or "Traceback" in err:
        raise ValueError(f"pv validate exited {code}: {(err or out)[-300:]!r}")
    forged = [line for line in out.splitlines() if line.startswith("::")]
    if "\x1b" in out or forged:
        raise ValueError(
            f"pv validate printed a raw ESC or a workflow command: {(forged or [out])[0][:300]!r}"
        )


def build_targets(workdir: Path, contracts: Path | None = None) -> dict[str, TextTarget]:
    """The two formats' seeds (one project under `workdir`) and their checks."""
    from shiptwo.harness.contract.rules import Severity
    from shiptwo.harness.contract.validate import validate_paths
    from shiptwo.harness.evidence import read_evidence
    from shiptwo.harness.report import visible

    seeds = shipped_contracts(contracts)
    project = _Project(workdir, seeds)
    seed_dir = workdir / "seed-contracts"
    seed_dir.mkdir()
    for name, raw in seeds.items():
        (seed_dir / name).write_bytes(raw)

    def check_contract(d: Path) -> None:
        result = validate_paths([d], root=project.root, test_dirs=[])
        for f in result.findings:
            # Raw controls may stand in a finding (a key quoted as written): the renderers escape them.
            if not (f.path and f.message and f.line >= 1 and f.column >= 1):
                raise ValueError(f"finding without a place or a message: {f!r}"[:300])
        _check_cli(
            [
                "--root",
                str(project.root),
                "--tests-dir",
                str(project.empty),
                "--evidence",
                str(project.evidence),
                str(d),
            ]
        )
        errors = [f for f in result.findings if f.severity is Severity.ERROR]
        if errors:
            raise ContractError(visible(f"{d / errors[0].path}: {errors[0].rule} {errors[0].message}"))

    def check_record(d: Path) -> None:
        records, errors = read_evidence([d])
        for r in records:
            list(r.results())
        for e in errors:
            if not isinstance(e, EvidenceError):
                raise e
        _check_cli(
            [
                "--root",
                str(project.root),
                "--tests-dir",
                str(project.empty),
                "--evidence",
                str(d),
                str(project.contracts),
            ]
        )
        if errors:
            raise errors[0]

    return {
        "contracts": TextTarget("contracts", seed_dir, "", False, check_contract),
        "run-record": TextTarget("run-record", project.evidence, project.record.name, True, check_record),
    }


def make_input(target: TextTarget, seed: int, index: int) -> tuple[str, bytes, str]:
    """(file name, bytes, label) of input `index`: the same three for the same seed and index."""
    rng = random.Random(f"{seed}:{target.name}:{index}")
    if target.name == "contracts":
        names = sorted(p.name for p in target.seed_dir.iterdir())
        name = rng.choice(names)
        data, how = damage_contract((target.seed_dir / name).read_bytes(), rng)
        return name, data, f"{name}: {how}"
    data, how = damage_record(target, rng)
    return target.file, data, how


def run(
    target: TextTarget,
    workdir: Path,
    *,
    count: int,
    seed: int = 0,
    deadline_s: float = DEFAULT_DEADLINE_S,
    only: int | None = None,
) -> Tally:
    """Try `count` damaged inputs (or only input `only`) of one format and tally what each did."""
    tally = Tally(target.name, seed)
    directory = workdir / f"{target.name}-input"
    directory.mkdir(parents=True, exist_ok=True)
    with _one_parser():
        start = time.perf_counter()
        for index in indexes(count, only):
            name, data, how = make_input(target, seed, index)
            for old in directory.iterdir():
                old.unlink()
            (directory / name).write_bytes(data)
            outcome, detail = classify(target, directory, deadline_s)
            tally.add(index, outcome, how, detail)
        tally.seconds = time.perf_counter() - start
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shiptwo.fuzz.contracts", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--format", choices=(*FORMATS, "all"), default="all")
    parser.add_argument("--count", type=int, default=500, help="inputs per format (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_S, help="seconds per input")
    parser.add_argument("--only", type=int, metavar="INDEX", help="run the one input INDEX")
    parser.add_argument(
        "--contracts", type=Path, metavar="DIR", help="seed contracts (default: the checkout's)"
    )
    parser.add_argument("--format-output", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    if args.count < 0 or args.deadline <= 0:
        parser.error("--count must be >= 0 and --deadline > 0")
    import tempfile

    names = list(FORMATS) if args.format == "all" else [args.format]
    with tempfile.TemporaryDirectory(prefix="shiptwo-fuzz-") as tmp:
        targets = build_targets(Path(tmp), args.contracts)
        tallies = []
        for name in names:
            tally = run(
                targets[name],
                Path(tmp) / name,
                count=args.count,
                seed=args.seed,
                deadline_s=args.deadline,
                only=args.only,
            )
            tallies.append(tally)
            if args.format_output == "text":
                c = tally.counts
                print(
                    f"{name}: {tally.tried} inputs (seed {tally.seed}) in {tally.seconds:.1f} s: "
                    f"{c['loaded']} loaded, {c['refused']} clean refusals, {c['traceback']} tracebacks, "
                    f"{c['hang']} hangs, {c['unclear']} unclear"
                )
                if tally.findings:
                    print(tally.report(limit=20).split("\n", 1)[1])
    if args.format_output == "json":
        print(
            json.dumps(
                {
                    "formats": [
                        {
                            "format": t.format,
                            "seed": t.seed,
                            "tried": t.tried,
                            "seconds": round(t.seconds, 2),
                            "counts": t.counts,
                            "findings": [vars(f) for f in t.findings],
                        }
                        for t in tallies
                    ],
                    "ok": not any(t.failed for t in tallies),
                }
            )
        )
    return 1 if any(t.failed for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
