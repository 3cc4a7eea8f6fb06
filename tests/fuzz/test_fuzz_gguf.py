"""GGUF under 5,000 damaged inputs: our reader and `apr import` load or refuse each cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from shiptwo.errors import FormatError
from shiptwo.fuzz import gguf as gguf_fuzz
from shiptwo.fuzz.binary import Field, Target, classify, pack_field, run

# The bar: 5,000 inputs per format, with the whole fuzz suite under a minute on one core.
COUNT = 5000


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Target:
    pytest.importorskip("gguf", reason="the seed is written by the gguf package (the test extra)")
    return gguf_fuzz.target(tmp_path_factory.mktemp("gguf-seed"))


def test_the_mutator_knows_the_seeds_fields(target: Target) -> None:
    names = {f.name for f in target.fields}
    assert {"version", "tensor_count", "kv_count", "qwen2.block_count", "token_embd.weight ne[0]"} <= names
    assert "token_embd.weight offset" in names and "tokenizer.ggml.tokens array length" in names


def test_damaged_files_load_or_are_refused_cleanly(target: Target, tmp_path: Path) -> None:
    tally = run(target, tmp_path, count=COUNT, seed=0)
    assert tally.failed == 0, tally.report()
    assert tally.tried == COUNT
    assert tally.counts["loaded"] > 0 and tally.counts["refused"] > 0
    for field in ("magic", "version", "tensor_count", "kv_count"):
        assert field in tally.refused_by, f"no input was refused by {field!r}"


def test_a_huge_block_count_is_refused_not_looped_over(target: Target, tmp_path: Path) -> None:
    # Found by the fuzz suite: qwen2.block_count 2^63 - 1 built a shape table of that many layers.
    at = next(f for f in target.fields if f.name == "qwen2.block_count")
    image = bytearray(target.image)
    image[at.offset : at.offset + 4] = pack_field(Field("", 0, at.fmt), 2**32 - 1)
    path = tmp_path / "blocks.gguf"
    path.write_bytes(image)
    outcome, detail = classify(target, path, deadline_s=1.0)  # a loop is cut off, not waited for
    assert (outcome, detail.split(", but")[0]) == (
        "refused",
        f"{path}: metadata 'qwen2.block_count' is 4294967295",
    )


def test_an_unknown_tensor_name_names_the_file(target: Target, tmp_path: Path) -> None:
    path = tmp_path / "name.gguf"
    path.write_bytes(target.image.replace(b"blk.0.attn_q.bias", b"blk.0.attn_Q.bias"))
    with pytest.raises(FormatError, match=rf"^{path}: GGUF tensor 'blk.0.attn_Q.bias' is not part of"):
        target.check(path)


def test_every_truncation_at_a_field_or_section_edge_is_refused(target: Target, tmp_path: Path) -> None:
    edges = {f.offset for f in target.fields} | {e for s in target.sections for e in s}
    cuts = sorted({c for e in edges for c in (e - 1, e, e + 1) if 0 <= c < len(target.image)})
    assert len(cuts) > 200
    path = tmp_path / "cut.gguf"
    for cut in cuts:
        path.unlink(missing_ok=True)
        path.write_bytes(target.image[:cut])
        outcome, detail = classify(target, path, deadline_s=2.0)
        assert outcome == "refused", f"cut at {cut}: {outcome} {detail}"
