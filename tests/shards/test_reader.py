"""The shard reader: windows of seq_len + 1, tails dropped, and every malformed set refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiptwo.errors import FormatError, UsageError
from shiptwo.shards import ShardReader, load_manifest


def make_set(d: Path, shards: list[np.ndarray], *, vocab_size: int = 1000, listed: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    records = []
    for i, ids in enumerate(shards):
        (d / f"shard-{i:05d}.bin").write_bytes(np.asarray(ids, dtype="<u4").tobytes())
        records.append({"file": f"shard-{i:05d}.bin", "tokens": len(ids)})
    manifest = {
        "schema": "pretokenize-bin-v1",
        "vocab_size": vocab_size,
        "eos_policy": "between",
        "shard_count": len(shards),
        "total_tokens": sum(map(len, shards)),
        "total_documents": 1,
        "content_field": "content",
    }
    if listed:
        manifest["shards"] = records
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def test_windows_per_shard_tails_dropped(tmp_path: Path) -> None:
    a, b = np.arange(0, 23), np.arange(100, 111)
    reader = ShardReader(make_set(tmp_path, [a, b, np.arange(0)]), seq_len=4)
    assert len(reader) == 4 + 2  # 23 // 5 and 11 // 5; the empty shard gives none
    windows = list(reader)
    assert all(w.dtype == np.uint32 and w.shape == (5,) for w in windows)
    assert [w.tolist() for w in windows] == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [10, 11, 12, 13, 14],
        [15, 16, 17, 18, 19],
        [100, 101, 102, 103, 104],
        [105, 106, 107, 108, 109],
    ]
    assert all(np.array_equal(reader.window(i), w) for i, w in enumerate(windows))
    with pytest.raises(IndexError):
        reader.window(6)
    with pytest.raises(UsageError, match="seq_len must be >= 1"):
        ShardReader(tmp_path, seq_len=0)


def test_aprender_manifest_without_shard_list(tmp_path: Path) -> None:
    reader = ShardReader(make_set(tmp_path, [np.arange(10)], listed=False), seq_len=1)
    assert len(reader) == 5


def test_manifest_refusals(tmp_path: Path) -> None:
    with pytest.raises(
        FormatError, match="manifest.json: not found; a shard dir without a manifest is unfinished"
    ):
        load_manifest(tmp_path)
    d = make_set(tmp_path / "s", [np.arange(8)])
    doc = json.loads((d / "manifest.json").read_text())
    changes: list[tuple[dict[str, object], str]] = [
        ({"schema": "other"}, "schema is 'other', expected 'pretokenize-bin-v1'"),
        ({"vocab_size": "big"}, "field 'vocab_size' is 'big', expected int"),
        ({"total_tokens": 9}, "total_tokens 9 but the shards hold 8"),
        ({"shard_count": 2}, "shard_count 2 but 1 shards listed"),
    ]
    for change, message in changes:
        (d / "manifest.json").write_text(json.dumps({**doc, **change}))
        with pytest.raises(FormatError, match=message):
            load_manifest(d)
    (d / "manifest.json").write_text(json.dumps({k: v for k, v in doc.items() if k != "eos_policy"}))
    with pytest.raises(FormatError, match="field 'eos_policy' is missing"):
        load_manifest(d)


def test_misaligned_and_missing_shards(tmp_path: Path) -> None:
    d = make_set(tmp_path, [np.arange(8)])
    with open(d / "shard-00000.bin", "ab") as f:
        f.write(b"\x01\x02")
    with pytest.raises(
        FormatError,
        match=r"manifest.json: shard-00000.bin: 34 bytes is not a multiple of 4; "
        r"not a u32 shard \(truncated\?\)$",
    ):
        ShardReader(d, seq_len=3)
    (d / "shard-00000.bin").write_bytes(np.arange(4, dtype="<u4").tobytes())
    with pytest.raises(
        FormatError, match="4 tokens on disk, manifest says 8; total_tokens 8 but the shards hold 4"
    ):
        ShardReader(d, seq_len=3)
    (d / "shard-00000.bin").unlink()
    with pytest.raises(FormatError, match=r"shards\[0\] shard-00000.bin does not exist"):
        ShardReader(d, seq_len=3)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    seq_len=st.integers(1, 9),
)
def test_windows_are_the_per_shard_slices(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], seq_len: int
) -> None:
    rng = np.random.default_rng(len(sizes) * 100 + seq_len)
    shards = [rng.integers(0, 1000, size=n) for n in sizes]
    reader = ShardReader(make_set(tmp_path_factory.mktemp("h"), shards), seq_len=seq_len)
    n = seq_len + 1
    expected = [s[j * n : (j + 1) * n] for s in shards for j in range(len(s) // n)]
    assert len(reader) == len(expected)
    assert all(np.array_equal(w, e) for w, e in zip(reader, expected, strict=True))
    assert all(np.array_equal(reader.window(i), e) for i, e in enumerate(expected))


def test_ids_beyond_vocab_are_refused(tmp_path: Path) -> None:
    reader = ShardReader(
        make_set(tmp_path, [np.array([1, 2, 3, 4, 5, 6, 7, 5000])], vocab_size=1000), seq_len=3
    )
    assert reader.window(0).tolist() == [1, 2, 3, 4]
    with pytest.raises(FormatError, match=r"shard-00000.bin: token 7 is id 5000 >= vocab_size 1000"):
        reader.window(1)
    with pytest.raises(FormatError, match="token 7 is id 5000 >= vocab_size 1000"):
        reader.check()


@settings(max_examples=25, deadline=None)
@given(size=st.integers(min_value=0, max_value=200), seq_len=st.integers(min_value=1, max_value=17))
def test_array_windows_read_like_a_one_shard_set(
    tmp_path_factory: pytest.TempPathFactory, size: int, seq_len: int
) -> None:
    from shiptwo.shards import ArrayWindows

    tokens = np.arange(size, dtype=np.uint32) % 997
    reader = ShardReader(make_set(tmp_path_factory.mktemp("one"), [tokens]), seq_len=seq_len)
    windows = ArrayWindows(tokens, seq_len=seq_len)
    assert len(windows) == len(reader)
    assert all(np.array_equal(windows.window(i), reader.window(i)) for i in range(len(reader)))


def test_array_windows_refuse_a_zero_seq_len() -> None:
    from shiptwo.shards import ArrayWindows

    with pytest.raises(UsageError, match="seq_len=0: must be at least 1"):
        ArrayWindows(np.zeros(8, dtype=np.uint32), seq_len=0)
