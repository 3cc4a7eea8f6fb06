"""The deterministic safetensors writer: the library's layout, metadata in the order given."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from shiptwo.apr.stwriter import save_safetensors
from shiptwo.cli import main

MIXED = {
    "a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
    "b": torch.ones(3, dtype=torch.float16),
    "c": torch.full((2, 2), 1.5, dtype=torch.bfloat16),
    "d": torch.zeros(1, dtype=torch.float64),
    "e": torch.arange(3, dtype=torch.int32),
    "f": torch.arange(2, dtype=torch.int64),
    "g": torch.arange(4, dtype=torch.int8),
    "h": torch.arange(5, dtype=torch.uint8),
    "a2": torch.ones(1),
}


def _header(path: Path) -> bytes:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return data[8 : 8 + n]


def test_same_bytes_as_the_library_with_one_metadata_key(tmp_path: Path) -> None:
    save_file(MIXED, str(tmp_path / "lib.safetensors"), metadata={"format": "pt"})
    save_safetensors(MIXED, tmp_path / "ours.safetensors", metadata={"format": "pt"})

    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "lib.safetensors").read_bytes()


def test_metadata_keeps_its_order_and_the_library_reads_the_file(tmp_path: Path) -> None:
    meta = {"z": "1", "format": "pt", "source": "x.gguf", "a": "2"}
    save_safetensors(MIXED, tmp_path / "m.safetensors", metadata=meta)

    assert list(json.loads(_header(tmp_path / "m.safetensors"))["__metadata__"]) == list(meta)
    back = load_file(str(tmp_path / "m.safetensors"))
    assert all(torch.equal(back[k], v) for k, v in MIXED.items())


def test_a_source_with_several_metadata_keys_exports_byte_for_byte(tmp_path: Path) -> None:
    # safetensors' own writer orders `__metadata__` by a per-process hash, so before the
    # deterministic writer an export of this file matched its source only by chance.
    src = tmp_path / "src.safetensors"
    save_safetensors(
        {"model.norm.weight": torch.ones(4, dtype=torch.bfloat16)},
        src,
        metadata={"format": "pt", "source": "a.gguf", "z": "last", "b": "2"},
    )
    assert main(["apr", "import", str(src), "-o", str(tmp_path / "m.apr")]) == 0
    assert main(["apr", "export", str(tmp_path / "m.apr"), "-o", str(tmp_path / "back.safetensors")]) == 0

    assert (tmp_path / "back.safetensors").read_bytes() == src.read_bytes()
