"""Damaged copies of the text formats shiptwo reads, each run through that format's readers.

Formats: vocab.json (hex-byte), merges.txt (byte-level pair), tokenizer.json, tiktoken ranks,
Hugging Face config.json and JSONL corpora. Each starts from a small valid seed (`build_targets`,
a tokenizer trained on the spot); every input is one seeded damage of it (`damage`): truncation,
byte flips, deep nesting, huge integers, wrong types, non-UTF-8 bytes, control characters,
duplicate keys, duplicated/dropped/garbled lines, empty files. An input must load, or be refused
with a ShiptwoError of one line that names a file; anything else is a finding: another exception
(a traceback a user would see), or a run past the per-input deadline (a hang).

Input `index` of format `name` is rebuilt exactly from `random.Random(f"{seed}:{name}:{index}")`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiptwo.errors import ShiptwoError

# One loop's vocabulary for every fuzzed format: the outcomes, a finding, the tally (text inputs
# never score `memory` or `disagreement`; those counts stay 0).
from shiptwo.fuzz.binary import DEFAULT_DEADLINE_S, Tally, indexes, judge

# Values a damaged JSON value may take: every type, ids past every limit, Python's own int limit.
ODD_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    -1,
    0,
    2**31,
    2**32,
    10**12,
    2**63,
    1.5,
    float("inf"),
    "",
    "x",
    "\x00\x1b[2J",
    "\ud800",
    [],
    [1, "a"],
    {},
    {"a": 1},
)
# Byte strings that are not UTF-8: a lone continuation, a cut sequence, an overlong, a surrogate.
NOT_UTF8: tuple[bytes, ...] = (b"\xff", b"\x80", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80")
CONTROL: tuple[bytes, ...] = (b"\x00", b"\x1b[31m", b"\r", b"\x7f", b"\x0b", b"\xe2\x80\xae")


@dataclass(frozen=True)
class TextTarget:
    """One text format under test: its seed directory, the file in it that is damaged, and the
    check that runs every reader of it (returns when the input loads)."""

    name: str
    seed_dir: Path
    file: str
    is_json: bool
    check: Callable[[Path], None]  # given the directory holding the damaged file

    @property
    def seed(self) -> bytes:
        return (self.seed_dir / self.file).read_bytes()


# -- damage -----------------------------------------------------------------------------------


def _json_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside `node` (a dict key or list index per step), the root first."""
    found = [path]
    if isinstance(node, dict):
        for k, v in list(node.items())[:50]:
            found += _json_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:50]):
            found += _json_paths(v, (*path, i))
    return found


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


def _damage_json(rng: random.Random, text: str) -> tuple[bytes, str] | None:
    """A structural change to a JSON document: a value of another type, a key gone, nesting, a
    huge integer, or a duplicate key. None when the seed is not JSON (then bytes are damaged)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    path = rng.choice(_json_paths(doc))
    kind = rng.choice(("type", "type", "drop", "deep", "huge", "duplicate"))
    if kind == "type":
        value = rng.choice(ODD_VALUES)
        return json.dumps(_set(doc, path, value)).encode(
            "utf-8", "surrogatepass"
        ), f"{list(path)} = {value!r}"
    if kind == "drop" and path:
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        del parent[path[-1]]
        return json.dumps(doc).encode(), f"drop {list(path)}"
    if kind == "deep":
        depth = rng.choice((99, 100, 101, 1000, 100_000))
        marker = "__deep__"
        out = json.dumps(_set(doc, path, marker)).replace(f'"{marker}"', "[" * depth + "1" + "]" * depth, 1)
        return out.encode(), f"{list(path)} nested {depth} deep"
    if kind == "huge":
        digits = rng.choice((31, 4301, 5000, 100_000))
        marker = "__huge__"
        out = json.dumps(_set(doc, path, marker)).replace(f'"{marker}"', "9" * digits, 1)
        return out.encode(), f"{list(path)} = an integer of {digits} digits"
    if kind == "duplicate":
        out = json.dumps(doc)
        at = out.find("{")
        if at < 0:
            return None
        key = next(iter(doc)) if isinstance(doc, dict) and doc else "k"
        return (out[: at + 1] + json.dumps(key) + ": 0, " + out[at + 1 :]).encode(), f"duplicate key {key!r}"
    return None


def _damage_lines(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    lines = data.split(b"\n")
    at = rng.randrange(len(lines))
    kind = rng.choice(("drop", "repeat", "swap", "garble", "split", "long", "blank"))
    if kind == "drop":
        del lines[at]
    elif kind == "repeat":
        lines.insert(at, lines[rng.randrange(len(lines))])
    elif kind == "swap":
        other = rng.randrange(len(lines))
        lines[at], lines[other] = lines[other], lines[at]
    elif kind == "garble":
        lines[at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    elif kind == "split":
        lines[at] = lines[at].replace(b" ", b"  ", 1) + rng.choice((b" x", b" ", b"\t1", b" 99999999999"))
    elif kind == "long":
        lines[at] = lines[at] + rng.choice((b"a", b"9", b"[")) * rng.choice((1000, 100_000))
    else:
        lines[at] = b" \t "
    return b"\n".join(lines), f"{kind} line {at + 1}"


def damage(target: TextTarget, rng: random.Random) -> tuple[bytes, str]:
    """One damaged copy of the target's seed file and a short label of what was done."""
    data = target.seed
    kind = rng.choice(("structure", "structure", "lines", "flip", "truncate", "bytes", "empty"))
    if kind == "structure" and target.is_json:
        done = _damage_json(rng, data.decode("utf-8"))
        if done is not None:
            return done
    if kind in ("structure", "lines"):
        if target.name == "jsonl" and rng.random() < 0.5:  # one line's JSON damaged
            lines = data.split(b"\n")
            at = rng.randrange(len(lines) - 1)
            done = _damage_json(rng, lines[at].decode("utf-8"))
            if done is not None:
                lines[at] = done[0].replace(b"\n", b" ")
                return b"\n".join(lines), f"line {at + 1}: {done[1]}"
        return _damage_lines(rng, data)
    buf = bytearray(data)
    if kind == "flip":
        n = rng.choice((1, 2, 8))
        for _ in range(n):
            i = rng.randrange(len(buf))
            buf[i] = rng.randrange(256)
        return bytes(buf), f"flip {n} byte(s)"
    if kind == "truncate":
        cut = rng.randrange(len(buf))
        return bytes(buf[:cut]), f"truncate at {cut}"
    if kind == "bytes":
        piece = rng.choice(NOT_UTF8 + CONTROL)
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = piece
        return bytes(buf), f"insert {piece!r} at {at}"
    return rng.choice((b"", b"\n", b"\xef\xbb\xbf", b"   ")), "empty"


# -- the loop ----------------------------------------------------------------------------------


def classify(target: TextTarget, directory: Path, deadline_s: float) -> tuple[str, str]:
    """Run the target's readers on `directory` (a seed copy with one damaged file): (outcome, detail)."""
    return judge(lambda: target.check(directory), str(directory), deadline_s, refusal=ShiptwoError)


def make_input(target: TextTarget, seed: int, index: int) -> tuple[bytes, str]:
    return damage(target, random.Random(f"{seed}:{target.name}:{index}"))


def run(
    target: TextTarget,
    workdir: Path,
    *,
    count: int,
    seed: int = 0,
    deadline_s: float = DEFAULT_DEADLINE_S,
    only: int | None = None,
) -> Tally:
    """Try `count` damaged inputs (or only input `only`) and tally what each did."""
    tally = Tally(target.name, seed)
    directory = workdir / f"{target.name}-input"
    directory.mkdir(parents=True, exist_ok=True)
    for f in target.seed_dir.iterdir():
        (directory / f.name).write_bytes(f.read_bytes())
    target.check(directory)  # the undamaged seed must load, or the run proves nothing
    start = time.perf_counter()
    for index in indexes(count, only):
        data, how = make_input(target, seed, index)
        (directory / target.file).write_bytes(data)
        outcome, detail = classify(target, directory, deadline_s)
        tally.add(index, outcome, how, detail)
    tally.seconds = time.perf_counter() - start
    return tally


# -- the formats -------------------------------------------------------------------------------

_CORPUS = [
    "def f(x):\n    return x + 1\n",
    "hello world, hello there",
    "naïve café 日本語",
    "for i in range(10):\n\tprint(i)",
] * 5


def build_targets(workdir: Path) -> dict[str, TextTarget]:
    """The six text formats' seeds, written under `workdir`, and their checks."""
    from shiptwo.qwen2.config import Qwen2Config, read_hf_config
    from shiptwo.tokenize import _common, detect_format, load_tokenizer
    from shiptwo.tokenize._testing import train_byte_level, write_jsonl
    from shiptwo.tokenize.bytelevel import load_tiktoken
    from shiptwo.tokenize.corpus import _encode_flat
    from shiptwo.tokenize.hexbpe import train_hex_bpe
    from shiptwo.tokenize.jsonl import bad_line_error, read_documents

    hex_dir = workdir / "seed-hex"
    hex_tok = train_hex_bpe(_CORPUS, vocab_size=300)
    hex_tok.save(hex_dir)
    bl_dir = train_byte_level(_CORPUS, workdir / "seed-bl", vocab_size=300)
    pair_dir = workdir / "seed-pair"
    pair_dir.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (pair_dir / name).write_bytes((bl_dir / name).read_bytes())
    tok_dir = workdir / "seed-tokenizer-json"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "tokenizer.json").write_bytes((bl_dir / "tokenizer.json").read_bytes())
    # tiktoken ranks: the byte-level vocab's tokens as bytes, ranked in id order (merge order).
    unicode_to_byte = {c: b for b, c in _common.bytes_to_unicode().items()}
    vocab = json.loads((bl_dir / "vocab.json").read_text(encoding="utf-8"))
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t != "<|endoftext|>"]
    import base64

    ranks = [base64.b64encode(bytes(unicode_to_byte[c] for c in t)).decode() for t in tokens]
    tik_dir = workdir / "seed-tiktoken"
    tik_dir.mkdir(parents=True, exist_ok=True)
    (tik_dir / "x.tiktoken").write_text("".join(f"{r} {i}\n" for i, r in enumerate(ranks)))
    cfg_dir = workdir / "seed-config"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    config = Qwen2Config(
        vocab_size=300, hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=8
    )
    (cfg_dir / "config.json").write_text(json.dumps({**config.to_hf(), "rope_scaling": None}, indent=2))
    jsonl_dir = workdir / "seed-jsonl"
    write_jsonl(jsonl_dir / "c.jsonl", _CORPUS[:8])

    def check_vocab(d: Path) -> None:
        detect_format(d)
        load_tokenizer(d).encode("def f(x): café")

    def check_pair(d: Path) -> None:
        detect_format(d / "vocab.json")
        load_tokenizer(d / "vocab.json").encode("hello café")

    def check_tokenizer_json(d: Path) -> None:
        detect_format(d / "tokenizer.json")
        load_tokenizer(d / "tokenizer.json").encode("hello café")

    def check_tiktoken(d: Path) -> None:
        detect_format(d / "x.tiktoken")
        load_tiktoken(d / "x.tiktoken", pretokenizer="gpt2").encode("hello café")

    def check_config(d: Path) -> None:
        read_hf_config(d / "config.json")

    def check_jsonl(d: Path) -> None:
        # What encode-corpus does: every line read, documents encoded, bad lines collected (skip);
        # then the first bad line is raised as `--on-bad-line error` raises it.
        texts, bad = [], []
        for item in read_documents([d / "c.jsonl"]):
            if isinstance(item, str):
                texts.append(item)
            elif "\n" in str(item) or not str(item).startswith(f"{d / 'c.jsonl'}:{item.line}: "):
                raise ValueError(f"a bad line's report is not one line naming file:line: {str(item)!r}")
            else:
                bad.append(item)
        _encode_flat(hex_tok, texts)
        if bad:
            raise bad_line_error(bad[0])

    return {
        t.name: t
        for t in (
            TextTarget("vocab.json", hex_dir, "vocab.json", True, check_vocab),
            TextTarget("merges.txt", pair_dir, "merges.txt", False, check_pair),
            TextTarget("tokenizer.json", tok_dir, "tokenizer.json", True, check_tokenizer_json),
            TextTarget("tiktoken", tik_dir, "x.tiktoken", False, check_tiktoken),
            TextTarget("config.json", cfg_dir, "config.json", True, check_config),
            TextTarget("jsonl", jsonl_dir, "c.jsonl", False, check_jsonl),
        )
    }
