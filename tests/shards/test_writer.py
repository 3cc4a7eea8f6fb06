"""The shard writer: golden bytes, reader and writer agreeing, progress round trips, output-dir states."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiptwo.errors import FormatError, UsageError
from shiptwo.shards import ShardReader, load_manifest
from shiptwo.shards.format import MANIFEST, PROGRESS, BadLine, shard_name
from shiptwo.shards.writer import (
    Progress,
    prepare_output,
    read_record,
    run_settings,
    save_progress,
    verified_shards,
    write_manifest,
    write_shard,
)

INPUTS = [{"path": "a.jsonl", "bytes": 10, "sha256": "aa"}, {"path": "b.jsonl", "bytes": 20, "sha256": "bb"}]


def _settings(
    *,
    content_field: str = "content",
    eos_policy: str = "between",
    shard_tokens: int = 4,
    on_bad_line: str = "skip",
) -> dict[str, Any]:
    return run_settings(
        tokenizer_sha256="t" * 64,
        inputs=INPUTS,
        content_field=content_field,
        eos_policy=eos_policy,
        shard_tokens=shard_tokens,
        on_bad_line=on_bad_line,
    )


def _write_set(out: Path, shards: list[np.ndarray], *, eos_policy: str = "between") -> dict[str, Any]:
    settings_ = _settings(eos_policy=eos_policy)
    progress = prepare_output(out, settings_, resume=False, force=False)
    for i, ids in enumerate(shards):
        sha = write_shard(out / shard_name(i), ids)
        progress.add_shard(shard_name(i), tokens=len(ids), documents=1, sha256=sha)
        progress.commit({i % 2: 1}, [], 0, (i % 2, 5, 1))
        save_progress(out, settings_, progress)
    return write_manifest(
        out,
        settings_,
        progress,
        tokenizer="vocab",
        tokenizer_format="hex-byte",
        tokenizer_layout="vocab.json+merges.txt",
        tokenizer_files=[],
        vocab_size=1 << 32,
        eos_token_id=2,
        inputs=INPUTS,
        corpus_sha256="c" * 64,
        audit={},
        elapsed_seconds=1.23456,
    )


def test_a_shard_is_little_endian_u32_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000.bin"
    sha = write_shard(path, np.array([1, 2, 0x01020304], dtype=np.int64))
    golden = b"\x01\x00\x00\x00\x02\x00\x00\x00\x04\x03\x02\x01"
    assert path.read_bytes() == golden and sha == hashlib.sha256(golden).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000.bin"]  # no temp file left


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=4),
    seq_len=st.integers(1, 7),
)
def test_the_reader_reads_what_the_writer_wrote(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], seq_len: int
) -> None:
    rng = np.random.default_rng(sum(sizes) * 10 + seq_len)
    shards = [rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32) for n in sizes]
    out = tmp_path_factory.mktemp("set")
    written = _write_set(out, shards)
    assert load_manifest(out) == written == json.loads((out / MANIFEST).read_text())
    n = seq_len + 1
    expected = [s[j * n : (j + 1) * n] for s in shards for j in range(len(s) // n)]
    assert all(np.array_equal(w, e) for w, e in zip(ShardReader(out, seq_len=seq_len), expected, strict=True))


def test_the_manifest_lists_fields_in_the_documented_order(tmp_path: Path) -> None:
    manifest = _write_set(tmp_path, [np.arange(3)], eos_policy="none")
    assert list(manifest) == [
        "schema",
        "producer",
        "tokenizer",
        "tokenizer_format",
        "tokenizer_layout",
        "tokenizer_sha256",
        "tokenizer_files",
        "vocab_size",
        "eos_policy",
        "eos_token_id",
        "content_field",
        "shard_tokens",
        "shard_count",
        "total_tokens",
        "total_documents",
        "input_files",
        "corpus_sha256",
        "bad_lines",
        "shards",
        "audit",
        "elapsed_seconds",
    ]
    assert manifest["eos_token_id"] is None and manifest["elapsed_seconds"] == 1.235  # null under none
    assert manifest["input_files"] == [dict(INPUTS[0], documents=1), dict(INPUTS[1], documents=0)]
    assert not (tmp_path / PROGRESS).exists()
    assert (tmp_path / MANIFEST).read_text().endswith("}\n")


def test_progress_round_trips_through_a_resume(tmp_path: Path) -> None:
    settings_ = _settings()
    progress = prepare_output(tmp_path, settings_, resume=False, force=False)
    sha = write_shard(tmp_path / shard_name(0), np.arange(5))
    progress.add_shard(shard_name(0), tokens=5, documents=2, sha256=sha)
    bad = [BadLine("a.jsonl", i, "invalid JSON") for i in range(150)]
    progress.commit({0: 2, 1: 1}, bad, 150, (1, 40, 3))
    save_progress(tmp_path, settings_, progress)
    assert len(progress.bad_lines) == 100 and progress.bad_line_count == 150  # the first 100 listed
    write_shard(tmp_path / shard_name(1), np.arange(4))  # after the last record: written again
    with pytest.raises(UsageError, match=r"holds an interrupted run \(progress.json\); pass --resume"):
        prepare_output(tmp_path, settings_, resume=False, force=False)
    with pytest.raises(UsageError, match=r"other settings \(shard_tokens\)"):
        prepare_output(tmp_path, _settings(shard_tokens=5), resume=True, force=False)
    resumed = prepare_output(tmp_path, settings_, resume=True, force=False)
    assert resumed == progress and not (tmp_path / shard_name(1)).exists()
    assert [ids.tolist() for ids in verified_shards(tmp_path, resumed)] == [[0, 1, 2, 3, 4]]
    (tmp_path / shard_name(0)).write_bytes(b"\x00" * 20)
    with pytest.raises(
        FormatError, match="shard-00000.bin: missing or not the shard recorded in progress.json"
    ):
        list(verified_shards(tmp_path, resumed))


def test_only_the_writers_own_temp_files_are_deleted(tmp_path: Path) -> None:
    own = [
        ".shard-00003.bin.tmp",
        ".shard-00003.bin.ab_9x.tmp",
        ".manifest.json.x1.tmp",
        ".progress.json.q.tmp",
    ]
    theirs = [".shard-3.bin.tmp", ".notes.tmp", "manifest.json.tmp", ".shard-00003.bin.a.b.tmp"]
    for name in own + theirs:
        (tmp_path / name).write_text("half")
    with pytest.raises(UsageError, match="not empty"):
        prepare_output(tmp_path, _settings(), resume=False, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)
    assert prepare_output(tmp_path, _settings(), resume=False, force=True) == Progress(file_documents=[0, 0])


def test_a_finished_set_is_kept_and_returned_only_on_resume(tmp_path: Path) -> None:
    manifest = _write_set(tmp_path, [np.arange(6)])
    with pytest.raises(UsageError, match=r"holds a finished shard set \(manifest.json\)"):
        prepare_output(tmp_path, _settings(), resume=False, force=False)
    with pytest.raises(UsageError, match=r"finished run used other settings \(content_field, on_bad_line\)"):
        prepare_output(
            tmp_path, _settings(content_field="text", on_bad_line="error"), resume=True, force=False
        )
    prepare_output(tmp_path, _settings(), resume=True, force=False)
    assert read_record(tmp_path / MANIFEST) == manifest
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(
        FormatError, match="manifest.json: unreadable: .*; remove the output dir and start again"
    ):
        prepare_output(tmp_path, _settings(), resume=True, force=False)


def test_an_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="exists and is not a directory"):
        prepare_output(tmp_path / "f", _settings(), resume=False, force=False)


def test_a_planted_symlink_at_a_temp_name_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 14: shards were once written under a fixed temp name (`.shard-00000.bin.tmp`), so a
    # symlink planted there led the write out of --output. Temp names are now random (mkstemp,
    # O_EXCL, in the output dir); a link at any old name is removed as a leftover, never opened.
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    planted = [".shard-00000.bin.tmp", ".shard-00000.bin.abc123.tmp", ".progress.json.x.tmp"]
    for name in planted:
        (out / name).symlink_to(outside)
    created: list[str] = []
    real_mkstemp = tempfile.mkstemp

    def spy(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, name = real_mkstemp(*args, **kwargs)
        created.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    _write_set(out, [np.arange(6), np.arange(3)])
    assert outside.read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.bin", "shard-00001.bin"]
    # Every temp file was made by mkstemp inside the output dir, under a name no one could plant.
    assert created and all(Path(name).parent == out for name in created)
    assert not {Path(name).name for name in created} & set(planted)


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_shard(tmp_path / "shard-00000.bin", np.arange(4))
    assert list(tmp_path.iterdir()) == []


def test_a_stale_temp_file_of_a_killed_run_is_removed_on_resume(tmp_path: Path) -> None:
    settings_ = _settings()
    progress = prepare_output(tmp_path, settings_, resume=False, force=False)
    save_progress(tmp_path, settings_, progress)
    (tmp_path / ".shard-00000.bin.k3x_9q.tmp").write_bytes(b"\x00" * 4)  # killed mid-write
    prepare_output(tmp_path, settings_, resume=True, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [PROGRESS]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda doc: "[" * 10_000, r"unreadable: arrays/objects nest more than 100 deep"),
        (lambda doc: '{"tokens": ' + "1" * 5000 + "}", r"unreadable: an integer of 5,000 digits"),
        (lambda doc: "[]", r"progress\.json: not a JSON object"),
        (lambda doc: json.dumps({**doc, "position": [0, "x", 1]}), r"damaged \(a field of the wrong type\)"),
        (lambda doc: json.dumps({**doc, "position": 5}), r"damaged \(TypeError: "),
        (lambda doc: json.dumps({**doc, "bad_lines": [["f"]]}), r"damaged \(IndexError: "),
        (lambda doc: json.dumps({**doc, "shards": [{"file": 1}]}), r"damaged \(a field of the wrong type\)"),
        (lambda doc: json.dumps({**doc, "file_documents": [0]}), r"damaged \(a field of the wrong type\)"),
        (lambda doc: json.dumps({k: v for k, v in doc.items() if k != "tokens"}), r"damaged \(KeyError: "),
    ],
)
def test_a_damaged_progress_record_is_one_line(tmp_path: Path, damage: Any, message: str) -> None:
    settings_ = _settings()
    progress = prepare_output(tmp_path, settings_, resume=False, force=False)
    save_progress(tmp_path, settings_, progress)
    doc = json.loads((tmp_path / PROGRESS).read_text())
    (tmp_path / PROGRESS).write_text(damage(doc))
    with pytest.raises(FormatError, match=message + r".*; remove the output dir and start again"):
        prepare_output(tmp_path, settings_, resume=True, force=False)
