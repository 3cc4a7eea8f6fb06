"""`shiptwo apr import` and `from_pretrained` take a GGUF, recognised by its bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shiptwo import apr
from shiptwo.cli import main
from shiptwo.qwen2.checkpoint import from_pretrained

gguf = pytest.importorskip("gguf")
from shiptwo.ggml.testing import tiny_qwen2_gguf  # noqa: E402 - after the importorskip


def test_a_gguf_with_any_name_imports_keeping_what_apr_can_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "weights.bin"  # no .gguf suffix: the bytes decide
    tiny_qwen2_gguf(src)

    assert main(["apr", "import", str(src), "-o", str(tmp_path / "m.apr")]) == 0

    assert "wrote" in capsys.readouterr().out
    with apr.safe_open(tmp_path / "m.apr") as f:
        meta = f.metadata()
        codes = {name: f.info.tensor(name).dtype.name for name in f}
    assert (meta["original_format"], meta["tied_embeddings"]) == ("gguf", True)
    # F32 and F16 kept; the Q8_0 tensor (no APR code of its own) dequantized to F32.
    assert codes["model.layers.0.self_attn.o_proj.weight"] == "F16"
    assert codes["model.layers.0.mlp.up_proj.weight"] == "F32"
    reader = gguf.GGUFReader(str(src))
    up = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")
    expected = torch.from_numpy(gguf.quants.dequantize(up.data, up.tensor_type).reshape(64, 32).copy())
    assert torch.equal(apr.load_file(tmp_path / "m.apr")["model.layers.0.mlp.up_proj.weight"], expected)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(from_pretrained(src)(ids), from_pretrained(tmp_path / "m.apr")(ids))


def test_a_gguf_of_another_architecture_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "llama.gguf"
    tiny_qwen2_gguf(src, architecture="llama")

    assert main(["apr", "import", str(src), "-o", str(tmp_path / "m.apr")]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {src}")
    assert "llama" in err and "qwen2" in err
    assert not (tmp_path / "m.apr").exists()
