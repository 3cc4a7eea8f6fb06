"""safetensors headers under fuzz, as `shiptwo apr import` reads them, with the library as oracle.

The seed is written by shiptwo's own safetensors writer (`shiptwo.apr.stwriter`). Most inputs
rebuild its JSON header with one hostile edit (huge, negative or fractional dims and offsets,
overlapping or gapped tensors, unknown dtypes, non-string metadata, lone surrogates, deep
nesting, duplicate keys) and a correct or wrong length prefix; the rest are damaged as bytes.

The subject is `shiptwo.apr.convert`: `open_source` and `plan_import` (the import up to the
write). The `safetensors` library reads every input too: a file it refuses that the import
accepts is a finding (`Disagreement`). The reverse is allowed: APR cannot hold every safetensors
dtype, and the import refuses what it cannot convert.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np

from shiptwo.apr.convert import open_source, plan_import
from shiptwo.apr.stwriter import save_safetensors
from shiptwo.fuzz.binary import INTERESTING, Disagreement, Field, Target


def seed_image(workdir: Path) -> bytes:
    rng = np.random.default_rng(0)
    tensors = {
        "model.embed_tokens.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "model.norm.weight": rng.standard_normal(3).astype(np.float16),
        "ids": np.arange(5, dtype=np.int64),
        "mask": np.array([1, 0, 1], dtype=np.uint8),
        "empty": np.zeros((0, 2), dtype=np.float32),
    }
    path = workdir / "seed.safetensors"
    save_safetensors(tensors, path, metadata={"format": "pt", "note": "tiny \u00e9"})
    return path.read_bytes()


def _layout(image: bytes) -> tuple[tuple[Field, ...], tuple[tuple[int, int], ...]]:
    (n,) = struct.unpack_from("<Q", image, 0)
    header = json.loads(image[8 : 8 + n])
    ends = sorted({8 + n + e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"})
    edges = [0, 8, 8 + n, *ends]
    return (Field("header length", 0, "<Q"),), tuple(zip(edges, edges[1:], strict=False))


# Values a header field is set to: the integer edges, and JSON of the wrong kind.
_ODD_VALUES: tuple[Any, ...] = (
    -1,
    -(2**63),
    2**64,
    2**64 + 1,
    10**30,
    1.5,
    1e300,
    True,
    None,
    "4",
    [],
    {},
    [1, [2]],
    "\ud800",
)


def _odd(rng: random.Random) -> Any:
    return rng.choice(INTERESTING) if rng.random() < 0.5 else rng.choice(_ODD_VALUES)


def _edit(header: dict[str, Any], rng: random.Random) -> str:
    """One hostile edit of a parsed header, in place; returns its label."""
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    entry = header[name]
    kind = rng.randrange(16)
    if kind == 0:
        entry["dtype"] = rng.choice(("F8_E4M3", "BOOL", "Q4", "f32", "", 32, None, ["F32"], "F32 "))
        return f"{name}.dtype={entry['dtype']!r}"
    if kind in (1, 2):
        shape = list(entry["shape"]) or [1]
        shape[rng.randrange(len(shape))] = _odd(rng)
        if rng.random() < 0.3:
            shape = [0, *shape]  # no elements: only the dims themselves can be wrong
        entry["shape"] = shape
        return f"{name}.shape={shape!r}"[:120]
    if kind in (3, 4, 5):
        offsets = list(entry["data_offsets"])
        offsets[rng.randrange(2)] = (
            _odd(rng) if rng.random() < 0.5 else offsets[0] + rng.choice((-8, -1, 1, 8))
        )
        entry["data_offsets"] = offsets
        return f"{name}.data_offsets={offsets!r}"
    if kind == 6:
        other = header[rng.choice(names)]
        entry["data_offsets"] = list(other["data_offsets"])  # two tensors over the same bytes
        return f"{name}.data_offsets copied"
    if kind == 7:
        del entry[rng.choice(("dtype", "shape", "data_offsets"))]
        return f"{name}: a key removed"
    if kind == 8:
        entry["data_offsets"] = (
            [*entry["data_offsets"], 0] if rng.random() < 0.5 else entry["data_offsets"][:1]
        )
        return f"{name}.data_offsets={entry['data_offsets']!r}"
    if kind == 9:
        header[name] = _odd(rng)
        return f"{name}={header[name]!r}"
    if kind == 10:
        meta = header.setdefault("__metadata__", {})
        meta[rng.choice(("format", "x", "\udc80"))] = _odd(rng)
        return "__metadata__ value"
    if kind == 11:
        header["__metadata__"] = _odd(rng)
        return f"__metadata__={header['__metadata__']!r}"
    if kind == 12:
        header[rng.choice(("\ud800", "x\u0000", "a" * 300))] = dict(entry)
        return "another tensor over the same bytes"
    if kind == 13:
        depth = rng.choice((124, 125, 126, 127, 5000))  # 125 arrays + 2 objects: the library's limit
        entry["x"] = f"{_DEEP}{depth}"  # nested in the text, after encoding (see _deepen)
        return f"{name}: an extra key nested {depth} deep"
    if kind == 14:
        entry["shape"] = [rng.randrange(3) for _ in range(rng.randrange(6))]
        return f"{name}.shape={entry['shape']!r}"
    names.reverse()  # the same tensors, listed in another order
    for k in names:
        header[k] = header.pop(k)
    return "tensors reordered"


_DEEP = "<deep>"


def _deepen(raw: bytes) -> bytes:
    """Replace a `"<deep>N"` marker with N nested empty arrays (no Python object is that deep)."""
    marker = f'"{_DEEP}'.encode()
    at = raw.find(marker)
    if at < 0:
        return raw
    end = raw.index(b'"', at + 1)
    depth = int(raw[at + len(marker) : end])
    return raw[:at] + b"[" * depth + b"]" * depth + raw[end + 1 :]


def _special(rng: random.Random, image: bytes, seed: bytes) -> tuple[bytes, str] | None:
    """Most inputs: the seed's header rebuilt with one hostile edit (generic damage discarded)."""
    if rng.random() < 0.3:
        return None
    (n,) = struct.unpack_from("<Q", seed, 0)
    header = json.loads(seed[8 : 8 + n])
    data = seed[8 + n :]
    label = _edit(header, rng)
    roll = rng.random()
    if roll < 0.1:  # duplicate keys cannot be made through a dict: edit the text
        text = json.dumps(header)
        first = text[1 : text.index("}") + 1]
        raw = ("{" + first + "," + text[1:]).encode()
        label += "; a key repeated"
    elif roll < 0.15:
        raw = json.dumps(header, allow_nan=True).replace("1.5", "NaN", 1).encode()
        label += "; NaN"
    elif roll < 0.2:
        raw = json.dumps(header).encode()
        at = rng.randrange(len(raw))
        raw = raw[:at] + rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00")) + raw[at:]
        label += "; a bad byte in the JSON"
    else:
        raw = json.dumps(header, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    raw = _deepen(raw)
    raw += b" " * rng.choice((0, 0, 0, 3, 7))
    length = len(raw)
    if rng.random() < 0.1:
        length = rng.choice((length - 1, length + 1, 2**63, 2**64 - 1, 100_000_001, 0))
        label += f"; length field {length}"
    if rng.random() < 0.1:
        data = (
            data[: rng.randrange(len(data) + 1)] if rng.random() < 0.5 else data + bytes(rng.choice((1, 8)))
        )
        label += f"; data section {len(data)} bytes"
    return struct.pack("<Q", length) + raw + data, label


def check(path: Path) -> None:
    """`apr import`'s reading of the file, then the safetensors library's verdict on it."""
    with open_source(path) as source:
        plan_import(source, path)
        for t in source.tensors.values():
            bytes(t.data)
    try:
        read_with_library(path)
    except Exception as exc:  # the library's errors are of several types, none of them ours
        raise Disagreement(f"apr import read a file that safetensors refuses: {exc}") from None


def read_with_library(path: Path) -> None:
    """Open the file with the safetensors library and read every header entry (its errors raised)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        names = f.keys()
        for name in names:
            f.get_slice(name).get_shape()


def target(workdir: Path) -> Target:
    """The safetensors-header fuzz target over a seed written into `workdir`."""
    image = seed_image(workdir)
    fields, sections = _layout(image)

    def special(rng: random.Random, damaged: bytes) -> tuple[bytes, str] | None:
        return _special(rng, damaged, image)

    return Target("safetensors", ".safetensors", image, fields, sections, check, special)
