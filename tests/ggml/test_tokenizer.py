"""tokenizer.json from a GGUF: the same ids as transformers' GGUF conversion and as the project's
independently built Qwen2 tokenizer (from the dashscope ranks), on real Python source."""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
import tokenize
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shiptwo.errors import FormatError
from shiptwo.ggml import GgufFile
from shiptwo.ggml.tokenizer import tokenizer_files_from_gguf
from shiptwo.tokenize._common import bytes_to_unicode

tokenizers = pytest.importorskip("tokenizers")

SOURCES = [inspect.getsourcefile(m) for m in (json, inspect, textwrap, tokenize, ast)]
MIXED = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "def f(x):\n\treturn x ** 2  # 平方 😀 naïve café\r\n<|im_end|>\n"
    "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|><tool_call>{}</tool_call><|file_sep|>[PAD151665]   \n\n"
)


def _texts() -> list[str]:
    texts = [Path(p).read_text(encoding="utf-8") for p in SOURCES if p]
    return [*texts, MIXED]


@pytest.fixture(scope="module")
def ours(qwen_gguf: GgufFile, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("gguf-tokenizer")
    for name, text in tokenizer_files_from_gguf(qwen_gguf.metadata, source=str(qwen_gguf.path)).items():
        (out / name).write_text(text, encoding="utf-8")
    yield out


@pytest.fixture(scope="module")
def ours_tok(ours: Path) -> Any:
    return tokenizers.Tokenizer.from_file(str(ours / "tokenizer.json"))


@pytest.fixture(scope="module")
def transformers_tok(qwen_gguf_path: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(
        str(qwen_gguf_path.parent), gguf_file=qwen_gguf_path.name
    )


@pytest.fixture(scope="module")
def reference_tok() -> Any:
    from shiptwo.tokenize.qwen2 import find_qwen2_tokenizer_dir

    found = find_qwen2_tokenizer_dir()
    if found is None:
        pytest.skip("no built Qwen2 tokenizer (run `shiptwo tokenize fetch-qwen2`)")
    return tokenizers.Tokenizer.from_file(str(found / "tokenizer.json"))


@pytest.mark.slow
def test_ids_equal_transformers_gguf_conversion(ours_tok: Any, transformers_tok: Any) -> None:
    for text in _texts():
        assert ours_tok.encode(text, add_special_tokens=False).ids == transformers_tok.encode(
            text, add_special_tokens=False
        )
    assert ours_tok.get_vocab() == transformers_tok.get_vocab()


def test_ids_equal_the_projects_qwen2_tokenizer(ours_tok: Any, reference_tok: Any) -> None:
    nfd = unicodedata.normalize("NFD", "café naïve Ångström ﬁ")  # NFC first, as upstream Qwen2
    for text in [*_texts(), nfd]:
        ids = ours_tok.encode(text, add_special_tokens=False).ids
        assert ids == reference_tok.encode(text, add_special_tokens=False).ids
        assert ours_tok.decode(ids, skip_special_tokens=False) == unicodedata.normalize("NFC", text)


def test_added_tokens_are_single_ids(qwen_gguf: GgufFile, ours_tok: Any) -> None:
    tokens = qwen_gguf.metadata["tokenizer.ggml.tokens"]
    kinds = qwen_gguf.metadata["tokenizer.ggml.token_type"]
    added = {i: t for i, (t, k) in enumerate(zip(tokens, kinds, strict=True)) if k in (3, 4)}
    assert len(added) == 22 and min(added) == 151_643
    for token_id, content in added.items():
        assert ours_tok.encode(content, add_special_tokens=False).ids == [token_id]
        assert ours_tok.encode(f"x{content}y", add_special_tokens=False).ids[1] == token_id
    assert ours_tok.token_to_id("<|im_start|>") == 151_644
    assert ours_tok.encode("[PAD151665]").ids != [151_665]  # unused rows are not matched in text
    assert ours_tok.get_vocab_size() == 151_936


def test_tokenizer_config(qwen_gguf: GgufFile, ours: Path) -> None:
    config = json.loads((ours / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == qwen_gguf.metadata["tokenizer.chat_template"]
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == (
        "<|endoftext|>",
        "<|im_end|>",
        "<|endoftext|>",
    )
    assert config["add_bos_token"] is False and config["model_max_length"] == 32_768
    decoder = config["added_tokens_decoder"]
    assert decoder["151644"]["content"] == "<|im_start|>" and decoder["151644"]["special"] is True
    assert decoder["151657"]["content"] == "<tool_call>" and decoder["151657"]["special"] is False


@pytest.mark.slow
def test_transformers_reads_our_files(ours: Path, transformers_tok: Any) -> None:
    """AutoTokenizer on our two files: same ids and the same chat prompt as from the GGUF itself."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(ours))
    messages = [{"role": "user", "content": "Write hello world in Python."}]
    ours_prompt = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    theirs_prompt = transformers_tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    assert list(ours_prompt["input_ids"] if isinstance(ours_prompt, dict) else ours_prompt) == list(
        theirs_prompt["input_ids"] if isinstance(theirs_prompt, dict) else theirs_prompt
    )
    assert tok.encode(MIXED, add_special_tokens=False) == transformers_tok.encode(
        MIXED, add_special_tokens=False
    )


def test_project_loader_reads_our_tokenizer_json(ours: Path, ours_tok: Any) -> None:
    from shiptwo.tokenize import load_tokenizer

    tok = load_tokenizer(ours / "tokenizer.json")
    assert tok.encode(MIXED) == ours_tok.encode(MIXED, add_special_tokens=False).ids
    assert tok.eos_id == 151_643


# --- a tiny byte-level vocab built from nothing, and what is refused --------------------------


def _tiny_metadata() -> dict[str, Any]:
    alphabet = list(bytes_to_unicode().values())
    return {
        "general.architecture": "qwen2",
        "general.name": "tiny",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.tokens": [*alphabet, "hi", "Ġhi", "<|end|>"],
        "tokenizer.ggml.token_type": [1] * 258 + [3],
        "tokenizer.ggml.merges": ["h i", "Ġ hi"],
        "tokenizer.ggml.eos_token_id": 258,
    }


def test_tiny_vocab() -> None:
    files = tokenizer_files_from_gguf(_tiny_metadata())
    tok = tokenizers.Tokenizer.from_str(files["tokenizer.json"])
    assert tok.encode("hi hi<|end|>").ids == [256, 257, 258]
    config = json.loads(files["tokenizer_config.json"])
    assert config["eos_token"] == "<|end|>" and "chat_template" not in config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"tokenizer.ggml.model": "llama"},
            "tiny: tokenizer.ggml.model 'llama' / pre 'qwen2': "
            "shiptwo builds only byte-level BPE ('gpt2') with the qwen2",
        ),
        (
            {"tokenizer.ggml.pre": "llama-bpe"},
            "tiny: tokenizer.ggml.model 'gpt2' / pre 'llama-bpe': shiptwo builds",
        ),
        (
            {"tokenizer.ggml.token_type": [1]},
            "tiny: tokenizer.ggml.token_type does not give one type per token (259)",
        ),
        (
            {"tokenizer.ggml.merges": ["h i", "hi x"]},
            "tiny: tokenizer.ggml.merges[1] 'hi x' is not 'left right' of two tokens whose join is a token",
        ),
        (
            {"tokenizer.ggml.eos_token_id": 259},
            "tiny: tokenizer.ggml.eos_token_id 259 is not an id of the 259 tokens",
        ),
        (
            {"tokenizer.ggml.tokens": None},
            "tiny: metadata 'tokenizer.ggml.tokens' is missing or not a list of strings",
        ),
    ],
)
def test_refusals(change: dict[str, Any], message: str) -> None:
    metadata = {k: v for k, v in {**_tiny_metadata(), **change}.items() if v is not None}
    with pytest.raises(FormatError) as exc:
        tokenizer_files_from_gguf(metadata)
    assert str(exc.value).startswith(message), str(exc.value)


def test_vocab_must_be_byte_level() -> None:
    metadata = _tiny_metadata()
    metadata["tokenizer.ggml.tokens"] = ["a" + t for t in metadata["tokenizer.ggml.tokens"][:256]] + [
        "hi",
        "h i",
        "xy",
    ]
    with pytest.raises(FormatError, match=r"^tiny: the vocab lacks 256 of the 256 byte tokens"):
        tokenizer_files_from_gguf(metadata)
    metadata = _tiny_metadata()
    metadata["tokenizer.ggml.tokens"][256] = "h i"  # a space is not in the byte alphabet
    with pytest.raises(
        FormatError, match=r"^tiny: normal tokens use 1 characters outside the byte-level alphabet"
    ):
        tokenizer_files_from_gguf(metadata)
    metadata = _tiny_metadata()
    metadata["tokenizer.ggml.tokens"][257] = "hi"
    with pytest.raises(FormatError, match=r"^tiny: tokenizer.ggml.tokens lists 'hi' twice \(ids 256, 257\)"):
        tokenizer_files_from_gguf(metadata)
