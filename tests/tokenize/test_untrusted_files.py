"""Damaged tokenizer files and configs: one line naming the file, the line or field, the value and
the fix; nothing sized by a hostile id before it is checked (issue 14)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from shiptwo.cli import main as shiptwo_main
from shiptwo.errors import FormatError, ModelError
from shiptwo.qwen2.config import read_hf_config
from shiptwo.tokenize import detect_format, load_tokenizer
from shiptwo.tokenize._testing import train_byte_level
from shiptwo.tokenize.bytelevel import load_vocab_merges
from shiptwo.tokenize.hexbpe import HexByteTokenizer, train_hex_bpe
from shiptwo.tokenize.vocabfiles import read_merges, read_tiktoken_ranks


@pytest.fixture(scope="module")
def hex_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hex")
    train_hex_bpe(["def f(x):\n    return x\n"] * 3, vocab_size=280).save(d)
    return d


@pytest.fixture(scope="module")
def bl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_byte_level(["hello world, hello there"] * 20, tmp_path_factory.mktemp("bl"), vocab_size=300)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_a_vocab_id_of_ten_to_the_twelve_is_refused_before_any_allocation(
    tmp_path: Path, hex_dir: Path, bl_dir: Path
) -> None:
    # vocab_size is the largest id + 1: 10**12 would size the encoder's histogram at 7.28 TiB.
    hexd = _copy(hex_dir, tmp_path / "hex")
    vocab = json.loads((hexd / "vocab.json").read_text())
    vocab["ff"] = 10**12
    (hexd / "vocab.json").write_text(json.dumps(vocab))
    message = r"vocab\.json: vocab token 'ff' has id 1000000000000, outside 0\.\.[\d,]+ .*; fix the id"
    for load in (detect_format, load_tokenizer, HexByteTokenizer.load):
        with pytest.raises(FormatError, match=message):
            load(hexd)
    bld = _copy(bl_dir, tmp_path / "bl")
    (bld / "tokenizer.json").unlink()
    vocab = json.loads((bld / "vocab.json").read_text())
    vocab["Ġ"] = 2**31
    (bld / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(FormatError, match=r"vocab token 'Ġ' has id 2147483648, outside 0\.\."):
        load_vocab_merges(bld / "vocab.json", pretokenizer="gpt2")
    doc = json.loads((bl_dir / "tokenizer.json").read_text())
    doc["model"]["vocab"]["Ġ"] = -1
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    with pytest.raises(
        FormatError, match=r"tokenizer\.json: model\.vocab token 'Ġ' has id -1, outside 0\.\."
    ):
        load_tokenizer(tmp_path / "tokenizer.json")


def test_an_id_that_is_not_an_integer_names_the_token(tmp_path: Path, hex_dir: Path) -> None:
    hexd = _copy(hex_dir, tmp_path / "hex")
    vocab = json.loads((hexd / "vocab.json").read_text())
    vocab["00"] = "5"
    (hexd / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(FormatError, match=r"vocab token '00' has id '5', not an integer; fix the id"):
        HexByteTokenizer.load(hexd)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda t: "[" * 50_000 + "]" * 50_000, r"nest more than 100 deep at line 1 column 101"),
        (lambda t: t.replace(": 0,", ": " + "9" * 5000 + ",", 1), r"an integer of 5,000 digits"),
        (lambda t: t[:-3] + ', "00": 7}', r"key '00' appears twice in one object"),
    ],
    ids=["deep", "huge-int", "duplicate-key"],
)
def test_hostile_vocab_json_is_one_line(
    tmp_path: Path, hex_dir: Path, capsys: pytest.CaptureFixture[str], damage: object, message: str
) -> None:
    hexd = _copy(hex_dir, tmp_path / "hex")
    text = (hexd / "vocab.json").read_text()
    (hexd / "vocab.json").write_text(damage(text))  # type: ignore[operator]
    with pytest.raises(FormatError, match=r"vocab\.json: not valid JSON \(vocab file\): .*" + message):
        detect_format(hexd)
    assert shiptwo_main(["tokenize", "detect", str(hexd)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_merges_txt_that_is_not_utf8_names_the_byte_offset(tmp_path: Path, hex_dir: Path) -> None:
    hexd = _copy(hex_dir, tmp_path / "hex")
    merges = (hexd / "merges.txt").read_bytes()
    (hexd / "merges.txt").write_bytes(merges[:20] + b"\xfe" + merges[20:])
    with pytest.raises(
        FormatError, match=r"merges\.txt: merges\.txt is not UTF-8: byte 0xfe at byte offset 20 \(line 3\)"
    ):
        load_tokenizer(hexd)
    vocab = {"a": 0, "b": 1}
    (tmp_path / "merges.txt").write_text("a b \x1b[2J\n")
    with pytest.raises(
        FormatError, match=r"merges\.txt:1: expected 'left right', got 'a b \\x1b\[2J'; fix or"
    ):
        read_merges(tmp_path / "merges.txt", vocab, comment="#")


def test_tiktoken_ranks_with_a_huge_or_signed_rank(tmp_path: Path) -> None:
    path = tmp_path / "x.tiktoken"
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    for rank in ("9" * 5000, "-1", "+1", "1_0"):
        path.write_text("\n".join([*lines, f"YWI= {rank}"]) + "\n")
        with pytest.raises(
            FormatError, match=r"x\.tiktoken:257: not a tiktoken ranks line 'base64\(token\) rank'"
        ):
            read_tiktoken_ranks(path)
    path.write_text("\n".join([*lines, "YWI= 300"]) + "\n")
    with pytest.raises(FormatError, match=r"ranks are not exactly 0\.\.256 \(each once\); renumber them"):
        read_tiktoken_ranks(path)


def test_tokenizer_json_and_its_config_with_wrong_types(tmp_path: Path, bl_dir: Path) -> None:
    doc = json.loads((bl_dir / "tokenizer.json").read_text())
    doc["added_tokens"] = 7
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"tokenizer\.json: added_tokens is 7, not a list of token objects"):
        detect_format(tmp_path / "tokenizer.json")
    doc = json.loads((bl_dir / "tokenizer.json").read_text())
    doc["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": 5}
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="the pre_tokenizer has no ByteLevel step"):
        detect_format(tmp_path / "tokenizer.json")
    bld = _copy(bl_dir, tmp_path / "bl")
    (bld / "tokenizer.json").unlink()
    (bld / "tokenizer_config.json").write_text("[" * 1000)
    with pytest.raises(
        FormatError, match=r"tokenizer_config\.json: not valid JSON \(tokenizer_config\.json\)"
    ):
        load_tokenizer(bld)
    (bld / "tokenizer_config.json").write_text("[1]")
    with pytest.raises(FormatError, match=r"tokenizer_config\.json: not a JSON object"):
        load_tokenizer(bld)


def test_config_json_deep_huge_and_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    good = {
        "vocab_size": 64,
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    }
    path.write_text(json.dumps(good))
    assert read_hf_config(path).vocab_size == 64
    path.write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    with pytest.raises(
        FormatError, match=r"config\.json: not valid JSON \(config\.json\): .* nest more than 100"
    ):
        read_hf_config(path)
    path.write_text(json.dumps(good).replace("64", "9" * 5000))
    with pytest.raises(FormatError, match="an integer of 5,000 digits"):
        read_hf_config(path)
    for value in (10**12, 1e300):
        path.write_text(json.dumps({**good, "vocab_size": value}))
        with pytest.raises(
            ModelError, match=r"config\.json: field vocab_size=.*: expected an integer of at most"
        ):
            read_hf_config(path)


def test_non_utf8_tokenizer_json_never_reaches_the_rust_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tokenizers' loader can abort the process on such a file (a pyo3 panic the fuzz run hit)."""
    import tokenizers

    from shiptwo.errors import FormatError
    from shiptwo.tokenize.bytelevel import load_tokenizer_json

    path = tmp_path / "tokenizer.json"
    path.write_bytes(b'{"version": "1.0", "model": {"type": "BPE", "vocab": {"\xa0": 1}}}')

    def never(*args: object) -> None:
        raise AssertionError("tokenizers was handed a file shiptwo's reader should have refused")

    monkeypatch.setattr(tokenizers.Tokenizer, "from_str", never)
    monkeypatch.setattr(tokenizers.Tokenizer, "from_file", never)
    with pytest.raises(FormatError, match=r"tokenizer.json.*not UTF-8: byte 0xa0"):
        load_tokenizer_json(path)


@pytest.mark.parametrize("key", ["continuing_subword_prefix", "end_of_word_suffix"])
def test_a_subword_prefix_is_refused_before_the_rust_loader(tmp_path: Path, key: str) -> None:
    """Text fuzz, seed 0, input 4667: `continuing_subword_prefix: "x"` on a byte-level vocab made
    tokenizers abort the process while it built an error message."""
    from shiptwo.fuzz.text import build_targets

    seed = build_targets(tmp_path / "seeds")["tokenizer.json"]
    doc = json.loads(seed.seed.decode())
    doc["model"][key] = "x"
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=rf"tokenizer\.json: model\.{key} is 'x'; a byte-level BPE"):
        load_tokenizer(path)
