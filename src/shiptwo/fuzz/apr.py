"""APR v2 under fuzz: a tiny file of every dtype family, damaged with and without fixed CRCs.

Half of the inputs get both CRCs recomputed after the damage, so they reach the structural
checks behind the checksums (offsets, counts, shapes, sizes, layout); the other half must be
stopped by the checksums themselves. `check` runs every public way in: `parse_bytes`,
`load_file`, `load_arrays`, `safe_open`, `apr export` (up to the write), `apr diff` against the
seed, and `shiptwo apr inspect` (text, and JSON that must parse back), `--stats` included, with
stdout encoded strictly as UTF-8 like a real terminal's.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import random
import struct
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

from shiptwo.apr import load_arrays, load_file, parse_bytes, read_header, safe_open, write_raw
from shiptwo.apr.constants import EMBED, FOOTER_SIZE, HEADER_SIZE, LM_HEAD, DType, align64
from shiptwo.apr.convert import export_model, export_tensors
from shiptwo.apr.diff import diff
from shiptwo.apr.testing import index_entry_offsets, rehash
from shiptwo.apr.writer import RawTensor
from shiptwo.fuzz.binary import Field, Target

# (name, dtype code, shape): one tensor per decoder path, a 0-element one, the tied pair.
_TENSORS: tuple[tuple[str, DType, tuple[int, ...]], ...] = (
    (EMBED, DType.F32, (2, 3)),
    (LM_HEAD, DType.F32, (2, 3)),
    ("bf16", DType.BF16, (4,)),
    ("empty", DType.F16, (0, 4)),
    ("i8", DType.I8, (3,)),
    ("q4", DType.APR_Q4, (40,)),
    ("q4k", DType.Q4_K, (256,)),
    ("q8", DType.APR_Q8, (5,)),
)
_HEADER_FIELDS = (
    ("version", 4, "<B"),
    ("flags", 6, "<H"),
    ("tensor_count", 8, "<I"),
    ("metadata_offset", 12, "<Q"),
    ("metadata_size", 20, "<I"),
    ("tensor_index_offset", 24, "<Q"),
    ("data_offset", 32, "<Q"),
)


def seed_image(workdir: Path) -> bytes:
    """The seed: written by shiptwo's own writer, so every field is where the format puts it."""
    from shiptwo.apr.constants import expected_nbytes

    rng = np.random.default_rng(0)
    raws = []
    for name, dtype, shape in _TENSORS:
        numel = int(np.prod(shape))
        data = rng.integers(0, 256, expected_nbytes(dtype, numel), dtype=np.uint8)
        if dtype is DType.F32:
            data = rng.standard_normal(numel).astype("<f4").view(np.uint8)
        raws.append(RawTensor(name, dtype, shape, data.tobytes()))
    path = workdir / "seed.apr"
    write_raw(
        path, raws, {"architecture": "qwen2", "vocab_size": 2, "name": "tiny \u00e9", "nested": [1, {}]}
    )
    return path.read_bytes()


def _layout(
    path: Path,
) -> tuple[tuple[Field, ...], tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    info = read_header(path)
    fields = [Field(name, at, fmt) for name, at, fmt in _HEADER_FIELDS]
    for name, at in index_entry_offsets(path).items():
        t = info.tensor(name)
        dims = at + 2 + len(name.encode("utf-8")) + 2
        fields += [
            Field(f"{name}.name_len", at, "<H"),
            Field(f"{name}.dtype", dims - 2, "<B"),
            Field(f"{name}.ndim", dims - 1, "<B"),
            *(Field(f"{name}.dims[{i}]", dims + 8 * i, "<Q") for i in range(len(t.shape))),
            Field(f"{name}.offset", dims + 8 * len(t.shape), "<Q"),
            Field(f"{name}.size", dims + 8 * len(t.shape) + 8, "<Q"),
        ]
    h = info.header
    data = tuple((t.start, t.start + t.size) for t in info.tensors if t.size)
    sections = (
        (0, HEADER_SIZE),
        (h.metadata_offset, h.tensor_index_offset),
        (h.tensor_index_offset, h.data_offset),
        *((start, align64(end)) for start, end in data),
        (info.file_size - FOOTER_SIZE, info.file_size),
    )
    return tuple(fields), sections, data


def _special(
    rng: random.Random, image: bytes, data_ranges: tuple[tuple[int, int], ...]
) -> tuple[bytes, str] | None:
    """Recompute both CRCs of half the inputs; put a hostile metadata JSON into some."""
    roll = rng.random()
    if len(image) < HEADER_SIZE + FOOTER_SIZE or roll >= 0.55:
        return None
    label = "+ CRCs fixed"
    if roll < 0.05:
        # All-ones bytes: NaN in every float dtype, the largest scale in every quantized one.
        start, end = rng.choice(data_ranges)
        image = image[:start] + b"\xff" * (end - start) + image[end:]
        label = f"+ data [{start}, {end}) set to 0xff, CRCs fixed"
    elif roll < 0.15:
        meta = rng.choice(HOSTILE_METADATA)
        image, label = _with_metadata(image, meta), f"+ metadata {meta[:32]!r}, CRCs fixed"
    return bytes(rehash(bytearray(image))), label


# Metadata that is valid JSON but hostile to whoever prints or re-encodes it.
HOSTILE_METADATA: tuple[bytes, ...] = (
    b'{"k":"\\ud800"}',
    b'{"\\udfff":1}',
    b'{"k":"\\u0000\\n\\u001b[31m"}',
    b'{"k":NaN,"j":-Infinity}',
    b'{"k":1e999}',
    b'{"k":' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"k":' + b"1" * 5000 + b"}",
    b'{"a":1,"a":2}',
    b"[]",
    b"",
)


def _with_metadata(image: bytes, meta: bytes) -> bytes:
    """The image with its metadata section replaced and every later offset moved to match."""
    buf = bytearray(image)
    if len(buf) < HEADER_SIZE + FOOTER_SIZE:
        return image
    (old_size,) = struct.unpack_from("<I", buf, 20)
    (index_at, data_at) = struct.unpack_from("<QQ", buf, 24)
    if index_at != HEADER_SIZE + align64(old_size) or not index_at <= data_at <= len(buf):
        return image
    section = meta + bytes(align64(len(meta)) - len(meta))
    shift = len(section) - (index_at - HEADER_SIZE)
    struct.pack_into("<I", buf, 20, len(meta))
    struct.pack_into("<QQ", buf, 24, index_at + shift, data_at + shift)
    buf[HEADER_SIZE:index_at] = section
    return bytes(buf)


def check(path: Path, source: Path) -> None:
    """Every public reader over one file; returns when all of them load it.

    `source` is the seed exported to safetensors: `apr diff` compares each input with it.
    """
    parse_bytes(path.read_bytes(), str(path))
    load_file(path)
    load_arrays(path)
    with safe_open(path, framework="np") as f:
        names = f.keys()
        for name in names:
            if not f.info.tensor(name).is_placeholder:
                f.get_tensor(name)
    with safe_open(path) as f:
        dict(export_tensors(f))  # `apr export` up to its write
    diff(path, source)
    for fmt in ("text", "json"):
        out = _inspect(path, fmt)
        if fmt == "json":
            # Strict JSON: a bare NaN or Infinity token is refused by jq and JSON.parse.
            json.loads(out, parse_constant=_no_constant)


def _no_constant(token: str) -> None:
    raise ValueError(f"`apr inspect --format json` printed {token}, which is not JSON")


@functools.cache
def _cli() -> argparse.ArgumentParser:
    from shiptwo.cli import build_parser

    return build_parser()  # once: building every command's parser costs more than a check


def _inspect(path: Path, fmt: str) -> str:
    """`shiptwo apr inspect --stats` as the command line runs it, minus `main`'s error printing:
    a ShiptwoError comes back as itself (one line on stderr under `main`), anything else is the
    traceback a user would see."""
    args = _cli().parse_args(["apr", "inspect", str(path), "--stats", "--format", fmt])
    raw = io.BytesIO()
    # Strict UTF-8 like a terminal's stdout: text that cannot be encoded must fail here too.
    out = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    with redirect_stdout(out):
        args.func(args)
    out.flush()
    return raw.getvalue().decode("utf-8")


def target(workdir: Path) -> Target:
    """The APR fuzz target over a seed written into `workdir`."""
    image = seed_image(workdir)
    fields, sections, data = _layout(workdir / "seed.apr")
    source = workdir / "seed.safetensors"
    export_model(workdir / "seed.apr", source, keep_tied_copy=True)
    return Target(
        "apr",
        ".apr",
        image,
        fields,
        sections,
        functools.partial(check, source=source),
        functools.partial(_special, data_ranges=data),
    )
