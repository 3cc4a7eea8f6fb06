"""Test helpers: small random Qwen2 checkpoints (via transformers) and deliberately broken APR files.

Used by tests/apr and the falsifiers; needs the `test` extra (transformers). Nothing here
downloads anything: models are built from a config with random weights.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path
from typing import Any

# Only retag and index_entry_offsets use the codec; the spec_* and safetensors_raw parsers
# share no code with it, which is what makes them oracles.
from shiptwo.apr.constants import DType
from shiptwo.apr.reader import read_header

# The final norm value the seeds quote (a trained Qwen2.5's model.norm.weight reads 7.5625).
TRAINED_FINAL_NORM = 7.5625


def make_qwen2_dir(
    out: str | Path,
    *,
    dtype: str = "bfloat16",
    tied: bool = True,
    seed: int = 0,
    trained_like: bool = False,
    vocab_size: int = 128,
    hidden_size: int = 32,
    num_layers: int = 2,
    max_shard_size: str | None = None,
) -> Path:
    """Save a random small Qwen2ForCausalLM with `save_pretrained` (safetensors) and return the dir.

    `trained_like` gives the norms the scales of a trained model (final norm around 7.5625,
    layer norms between 0.5 and 3) instead of the init value 1.0.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    settings: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 3 // 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "rope_theta": 1_000_000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": tied,
    }
    config = Qwen2Config(**settings)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_proj.bias"):
                p.normal_(0.0, 0.02)  # init zeros would hide a bias that is not copied
            elif trained_like and name == "model.norm.weight":
                p.copy_(TRAINED_FINAL_NORM + 0.25 * torch.randn_like(p))
            elif trained_like and name.endswith("layernorm.weight"):
                p.uniform_(0.5, 3.0)
    model = model.to(getattr(torch, dtype))
    root = Path(out)
    kwargs: dict[str, Any] = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(root, **kwargs)
    return root


def _align64(n: int) -> int:
    return (n + 63) // 64 * 64


def spec_file(
    entries: list[tuple[str, int, list[int], bytes]],
    metadata: bytes,
    *,
    flags: int = 0x0400,
    data_order: list[int] | None = None,
) -> bytes:
    """An APR v2 image built straight from docs/apr-v2.md, sharing no code with the writer.

    Entries are indexed in the order given (sort them for a valid file); `data_order` lays the
    data out in another order.
    """
    order = data_order if data_order is not None else list(range(len(entries)))
    offsets: dict[int, int] = {}
    pos = 0
    for i in order:
        offsets[i] = pos
        pos += _align64(len(entries[i][3]))
    index = b""
    for i, (name, code, dims, data) in enumerate(entries):
        raw = name.encode()
        index += struct.pack("<H", len(raw)) + raw + bytes([code, len(dims)])
        index += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<QQ", offsets[i], len(data))
    index_off = 64 + _align64(len(metadata))
    data_off = index_off + _align64(len(index))
    head = (
        b"APR\x00"
        + bytes([2, 0])
        + struct.pack("<HIQIQQ", flags, len(entries), 64, len(metadata), index_off, data_off)
    )
    crc = zlib.crc32(head + bytes(20))
    body = head + struct.pack("<I", crc) + bytes(20)
    body += metadata.ljust(_align64(len(metadata)), b"\0") + index.ljust(_align64(len(index)), b"\0")
    for i in order:
        body += entries[i][3].ljust(_align64(len(entries[i][3])), b"\0")
    return body + struct.pack("<I", zlib.crc32(body))


def _spec_index(b: bytes) -> tuple[int, list[tuple[bytes, int, tuple[int, ...], int, int]]]:
    """The data section offset and each index entry (name, code, dims, offset, size), walked by hand."""
    (count,) = struct.unpack_from("<I", b, 8)
    (index_off,) = struct.unpack_from("<Q", b, 24)
    pos, entries = index_off, []
    for _ in range(count):
        (n,) = struct.unpack_from("<H", b, pos)
        name = b[pos + 2 : pos + 2 + n]
        code, ndim = b[pos + 2 + n], b[pos + 3 + n]
        dims = struct.unpack_from(f"<{ndim}Q", b, pos + 4 + n)
        off, size = struct.unpack_from("<QQ", b, pos + 4 + n + 8 * ndim)
        entries.append((name, code, dims, off, size))
        pos += 4 + n + 8 * ndim + 16
    return pos, entries


def spec_problems(path: str | Path) -> list[str]:
    """Every MUST of the spec checked by hand, sharing no code with the reader: the problems found.

    An empty list means the file conforms: magic and version, both CRCs, the layout flags,
    section offsets, writable dtype codes, sizes, 64-byte alignment, a sorted index.
    """
    b = Path(path).read_bytes()
    problems = []
    if b[:4] != b"APR\x00" or b[4] != 2:
        problems.append("magic/version")
    flags, _count, mo, ms, io, do = struct.unpack_from("<HIQIQQ", b, 6)
    if zlib.crc32(b[:40] + b[44:64]) != struct.unpack_from("<I", b, 40)[0]:
        problems.append("header crc")
    if zlib.crc32(b[:-4]) != struct.unpack_from("<I", b, len(b) - 4)[0]:
        problems.append("footer crc")
    if not flags & 0x0400 or flags & 0x0800:
        problems.append("layout flags")
    if mo != 64 or io != 64 + _align64(ms) or do % 64:
        problems.append("section offsets")
    json.loads(b[mo : mo + ms])
    index_end, entries = _spec_index(b)
    for name, code, dims, off, size in entries:
        if code not in (0, 1, 3, 4, 5, 6, 7, 30):
            problems.append(f"dtype code {code}")
        if (do + off) % 64:
            problems.append(f"{name!r} not aligned")
        width = {0: 4, 1: 2, 3: 8, 4: 4, 5: 8, 6: 1, 7: 1, 30: 2}.get(code, 0)
        if size != math.prod(dims) * width:
            problems.append(f"{name!r} size")
    if _align64(index_end) != do:
        problems.append("index length")
    names = [e[0] for e in entries]
    if names != sorted(names) or len(set(names)) != len(names):
        problems.append("index order")
    return problems


def spec_tensors(path: str | Path) -> dict[str, tuple[int, tuple[int, ...], bytes]]:
    """Each tensor's on-disk dtype code, dims and raw data bytes, parsed by hand from the spec.

    Shares no code with shiptwo.apr's reader, writer or constants, so a falsifier can compare a
    written file with its source without trusting the codec that wrote it (a reader and writer
    that agree on a wrong code or a byte transform would otherwise pass). Check the file with
    `spec_problems` first: this parses, it does not validate.
    """
    b = Path(path).read_bytes()
    (data_off,) = struct.unpack_from("<Q", b, 32)
    _, entries = _spec_index(b)
    return {
        name.decode("utf-8"): (code, tuple(dims), b[data_off + off : data_off + off + size])
        for name, code, dims, off, size in entries
    }


def safetensors_raw(path: str | Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """Each tensor of a safetensors file as (dtype string, shape, raw data bytes), parsed by hand.

    The format: an 8-byte little-endian header length, a JSON header mapping names to
    {dtype, shape, data_offsets: [begin, end]} relative to the end of the header. Shares no code
    with shiptwo or the safetensors package, so it is an oracle for both.
    """
    b = Path(path).read_bytes()
    (n,) = struct.unpack_from("<Q", b, 0)
    header = json.loads(b[8 : 8 + n])
    start = 8 + n
    return {
        name: (h["dtype"], tuple(h["shape"]), b[start + h["data_offsets"][0] : start + h["data_offsets"][1]])
        for name, h in header.items()
        if name != "__metadata__"
    }


def rehash(buf: bytearray) -> bytearray:
    """Recompute both CRCs of an APR image in place, so a deliberate edit reaches the later checks."""
    struct.pack_into("<I", buf, 40, zlib.crc32(bytes(buf[44:64]), zlib.crc32(bytes(buf[:40]))))
    struct.pack_into("<I", buf, len(buf) - 4, zlib.crc32(bytes(buf[:-4])))
    return buf


def index_entry_offsets(path: str | Path) -> dict[str, int]:
    """File offset of each tensor's index entry (its name_len field)."""
    info = read_header(path)
    pos = info.header.tensor_index_offset
    out = {}
    for t in info.tensors:
        out[t.name] = pos
        pos += 2 + len(t.name.encode("utf-8")) + 2 + 8 * len(t.shape) + 16
    return out


def retag(
    path: str | Path,
    out: str | Path,
    *,
    names: list[str] | None = None,
    src: DType = DType.BF16,
    dst: DType = DType.F16,
) -> Path:
    """Copy an APR file with the dtype code of `names` (default: every `src` tensor) changed to
    `dst`, bytes untouched, CRCs recomputed: the seeds' H4 mislabel, made on purpose."""
    info = read_header(path)
    offsets = index_entry_offsets(path)
    buf = bytearray(Path(path).read_bytes())
    for t in info.tensors:
        if (names is None and t.dtype is src) or (names is not None and t.name in names):
            buf[offsets[t.name] + 2 + len(t.name.encode("utf-8"))] = int(dst)
    Path(out).write_bytes(rehash(buf))
    return Path(out)
