"""fetch-qwen2 and the cache lookup the `qwen-tokenizer` gate uses."""

from __future__ import annotations

import re
import unicodedata
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiptwo.cli import main as shiptwo_main
from shiptwo.errors import FormatError, ShiptwoError
from shiptwo.fileio import CACHE_ENV
from shiptwo.tokenize import qwen2
from shiptwo.tokenize.qwen2 import fetch_qwen2, find_qwen2_tokenizer_dir

REAL = find_qwen2_tokenizer_dir()
needs_qwen = pytest.mark.skipif(
    REAL is None, reason="no Qwen2 vocab built: run `shiptwo tokenize fetch-qwen2`"
)


def test_find_looks_at_env_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(qwen2.TOKENIZER_ENV, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert find_qwen2_tokenizer_dir() is None
    built = tmp_path / "cache" / "qwen2-tokenizer"
    built.mkdir(parents=True)
    for name in ("tokenizer.json", "vocab.json"):
        (built / name).write_text("{}")
    assert find_qwen2_tokenizer_dir() is None  # merges.txt missing: not a built tokenizer
    (built / "merges.txt").write_text("")
    assert find_qwen2_tokenizer_dir() == built
    other = tmp_path / "other"
    other.mkdir()
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (other / name).write_text("")
    monkeypatch.setenv(qwen2.TOKENIZER_ENV, str(other / "tokenizer.json"))
    assert find_qwen2_tokenizer_dir() == other


def test_fetch_refuses_a_wheel_with_another_sha256(tmp_path: Path) -> None:
    wheel = tmp_path / qwen2.DASHSCOPE_WHEEL
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(qwen2.TIKTOKEN_MEMBER, b"IQ== 0\n")
    with pytest.raises(FormatError, match=f"is not the pinned {qwen2.DASHSCOPE_WHEEL_SHA256}"):
        fetch_qwen2(cache_dir=tmp_path / "cache", wheel=wheel)
    assert not (tmp_path / "cache" / "qwen2-tokenizer").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # the temp build dir is gone too


@needs_qwen
def test_fetch_is_a_fast_no_op_when_built(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert REAL is not None
    if REAL.name != qwen2.DIR_NAME:
        pytest.skip(f"{REAL} is not a fetch-qwen2 cache dir")

    # A no-op downloads nothing and builds nothing (asserted, not timed: timing fails under load).
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("fetch-qwen2 did work on a built cache")

    monkeypatch.setattr(qwen2, "_download_wheel", never)
    monkeypatch.setattr(qwen2, "build_qwen2_files", never)
    code = shiptwo_main(["tokenize", "fetch-qwen2", "--cache-dir", str(REAL.parent)])
    assert code == 0
    assert "already built" in capsys.readouterr().out


@needs_qwen
def test_built_files_carry_provenance() -> None:
    import json

    assert REAL is not None
    doc = json.loads((REAL / qwen2.PROVENANCE).read_text())
    assert (
        doc["wheel_sha256"] == qwen2.DASHSCOPE_WHEEL_SHA256
        and doc["ranks_sha256"] == qwen2.QWEN_TIKTOKEN_SHA256
    )
    config = json.loads((REAL / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "Qwen2Tokenizer" and len(config["added_tokens_decoder"]) == 22


def _no_download(into: Path) -> Path:
    raise ShiptwoError("pip download dashscope==2.0.2 failed (offline in this test); pass --wheel")


@needs_qwen
def test_fetch_rebuilds_a_cache_of_another_builder_from_its_own_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import shutil

    assert REAL is not None
    if not (REAL / qwen2.RANKS_FILE).is_file():
        pytest.skip(f"{REAL} has no {qwen2.RANKS_FILE}")
    cache = tmp_path / "cache" / qwen2.DIR_NAME
    shutil.copytree(REAL, cache)
    doc = json.loads((cache / qwen2.PROVENANCE).read_text())
    doc["builder"] = "shiptwo 0.0.1; sources sha256:0000000000000000; tokenizers 0.0"
    (cache / qwen2.PROVENANCE).write_text(json.dumps(doc))
    (cache / "merges.txt").write_text("#version: 0.2\n")  # what a broken old builder might have left
    monkeypatch.setattr(qwen2, "_download_wheel", _no_download)  # the pinned ranks are already there
    assert fetch_qwen2(cache_dir=tmp_path / "cache") == (cache, True)
    assert json.loads((cache / qwen2.PROVENANCE).read_text())["builder"] == qwen2.builder_version()
    assert (cache / "merges.txt").read_bytes() == (REAL / "merges.txt").read_bytes()
    assert fetch_qwen2(cache_dir=tmp_path / "cache") == (cache, False)  # now current: a no-op


def test_fetch_downloads_when_the_cached_ranks_are_not_the_pinned_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache" / qwen2.DIR_NAME
    cache.mkdir(parents=True)
    (cache / qwen2.RANKS_FILE).write_bytes(b"IQ== 0\n")
    monkeypatch.setattr(qwen2, "_download_wheel", _no_download)
    with pytest.raises(
        ShiptwoError, match=r"pip download dashscope==2\.0\.2 failed \(offline in this test\)"
    ):
        fetch_qwen2(cache_dir=tmp_path / "cache")
    assert (cache / qwen2.RANKS_FILE).read_bytes() == b"IQ== 0\n"  # left as it was


def test_builder_version_names_shiptwo_the_sources_and_tokenizers() -> None:
    from importlib.metadata import version

    v = qwen2.builder_version()
    assert v.startswith("shiptwo ") and f"tokenizers {version('tokenizers')}" in v
    assert re.search(r"sources sha256:[0-9a-f]{16}", v)
    assert qwen2.builder_version() == v  # deterministic


@pytest.fixture(scope="module")
def qwen() -> Any:
    from shiptwo.tokenize import load_tokenizer

    assert REAL is not None
    return load_tokenizer(REAL)


@needs_qwen
@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=120))
def test_qwen2_roundtrip_gives_nfc_text(qwen: Any, text: str) -> None:
    assert qwen.decode(qwen.encode(text)) == unicodedata.normalize("NFC", text)


@needs_qwen
def test_eos_is_the_added_endoftext_not_the_regular_piece_spelled_eos(qwen: Any) -> None:
    import json

    from shiptwo.tokenize import load_tokenizer

    assert REAL is not None
    vocab = json.loads((REAL / "vocab.json").read_text(encoding="utf-8"))
    # Qwen2's regular vocab has a piece spelled "</s>" (text, not a marker): aprender's "first of
    # </s>, <|endoftext|>, ..." read against vocab.json would pick it. The EOS is the added token.
    assert vocab["</s>"] == 128_247
    assert qwen.eos_id == load_tokenizer(REAL / "vocab.json").eos_id == 151_643
