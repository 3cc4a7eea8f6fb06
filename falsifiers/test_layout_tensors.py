"""Falsifiers of tensor-layout-v1: linear weights stay [out, in] row-major; tied embeddings survive
import -> export and a missing or 0-byte lm_head reads as tied; column-major files are refused.

Controls replay the seeds' H4B suspects in the real code (`plant`): a square projection
transposed on import or on read, the tied head written or loaded as a fresh random init, and the
column-major flag ignored.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open as st_safe_open

from shiptwo import apr
from shiptwo.apr.constants import DType, Flag
from shiptwo.apr.testing import make_qwen2_dir, rehash, spec_file
from shiptwo.cli import main
from shiptwo.errors import FormatError
from shiptwo.qwen2.checkpoint import from_pretrained

SQUARE_PROJECTIONS = ("self_attn.q_proj.weight", "self_attn.o_proj.weight")  # [hidden, hidden] in Qwen2


def _square(name: str, shape: tuple[int, ...]) -> bool:
    return name.endswith(SQUARE_PROJECTIONS) and len(shape) == 2 and shape[0] == shape[1]


def _random_like_bytes(dtype: DType, shape: tuple[int, ...]) -> bytes:
    """The bytes of a fresh N(0, 0.02) init of that dtype and shape (the same on every run)."""
    torch_dtype = {DType.BF16: torch.bfloat16, DType.F16: torch.float16, DType.F32: torch.float32}[dtype]
    t = (torch.randn(shape, generator=torch.Generator().manual_seed(1234)) * 0.02).to(torch_dtype)
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def plant(control: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant the control's defect into the real import, reader or loader (nothing on the real run)."""
    from shiptwo.apr import convert, reader
    from shiptwo.apr.writer import FileRange, RawTensor
    from shiptwo.qwen2 import checkpoint

    if control is None:
        return

    def rewrite_import(edit: Any) -> None:
        real_write_raw = convert.write_raw

        def write_raw(path: Any, tensors: Any, metadata: Any = None, **kw: Any) -> None:
            real_write_raw(path, [edit(t, metadata or {}) for t in tensors], metadata, **kw)

        monkeypatch.setattr(convert, "write_raw", write_raw)

    def file_bytes(r: FileRange) -> bytes:
        with open(r.path, "rb") as f:
            f.seek(r.offset)
            return f.read(r.size)

    if control == "transpose-square-on-import":
        # H4B: an import that stores a square projection as [in, out] (column-major bytes under a
        # row-major flag); its shape check cannot see it.
        def transpose(t: RawTensor, _meta: Any) -> RawTensor:
            if not _square(t.name, t.shape):
                return t
            width = t.data.size // (t.shape[0] * t.shape[1])
            cells = np.frombuffer(file_bytes(t.data), dtype=f"V{width}").reshape(t.shape)
            return RawTensor(t.name, t.dtype, t.shape, cells.T.copy().tobytes())

        rewrite_import(transpose)
    elif control == "transpose-square-on-read":
        # H4B on the other side: the reader hands out a square projection as [in, out].
        real_decode_tensor = reader.decode_tensor

        def decode_tensor(info: Any, buf: Any, *, device: str = "cpu") -> Any:
            t = real_decode_tensor(info, buf, device=device)
            return t.t().contiguous() if _square(info.name, info.shape) else t

        monkeypatch.setattr(reader, "decode_tensor", decode_tensor)
    elif control == "tied-head-random-on-import":
        # H4A: the embedding is copied, but the tied head aprender writes beside it is a fresh init.
        def random_head(t: RawTensor, meta: Any) -> RawTensor:
            if t.name != "lm_head.weight" or not meta.get("tied_embeddings") or meta.get("hf_lm_head_stored"):
                return t
            return RawTensor(t.name, t.dtype, t.shape, _random_like_bytes(t.dtype, t.shape))

        rewrite_import(random_head)
    elif control == "tied-head-random-on-load":
        # H4A in the loader: populate fills the embedding; the tied head falls through to a random init.
        real_load_state = checkpoint.load_state

        def load_state(model: Any, tensors: Any, *, source: str) -> None:
            real_load_state(model, tensors, source=source)
            if model.config.tied_embeddings:
                emb = model.tok_embeddings.weight
                fresh = torch.randn(emb.shape, generator=torch.Generator().manual_seed(1234)) * 0.02
                model.lm_head.weight = torch.nn.Parameter(fresh.to(emb.dtype))

        monkeypatch.setattr(checkpoint, "load_state", load_state)
    elif control == "column-major-flag-ignored":
        # The reader that never looks at LAYOUT_COLUMN_MAJOR and reads the data as row-major.
        real_check_flags = reader._check_flags
        monkeypatch.setattr(
            reader,
            "_check_flags",
            lambda flags, path: real_check_flags(flags & ~Flag.LAYOUT_COLUMN_MAJOR, path),
        )
    else:
        raise AssertionError(f"no plant for control {control.id!r}")  # pragma: no cover


def _hf_model(model_dir: Path) -> torch.nn.Module:
    from transformers import Qwen2ForCausalLM

    return Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.arange(12).reshape(2, 6) % model.config.vocab_size
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.falsifier("FALSIFY-LAYOUT-LINEAR-001")
def test_linear_weights_stay_out_in_row_major(
    tmp_path: Path, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_qwen2_dir(tmp_path / "hf", dtype="float32", tied=False, seed=4)
    plant(falsifier_control, monkeypatch)
    out = tmp_path / "m.apr"
    assert main(["apr", "import", str(src), "-o", str(out)]) == 0
    info = apr.read_header(out)
    assert info.header.flags & Flag.LAYOUT_ROW_MAJOR and not info.header.flags & Flag.LAYOUT_COLUMN_MAJOR

    reference = _hf_model(src)
    linears = {f"{n}.weight": m for n, m in reference.named_modules() if isinstance(m, torch.nn.Linear)}
    assert len(linears) == 2 * 7 + 1
    loaded = apr.load_file(out)
    for name, module in linears.items():
        assert info.tensor(name).shape == (module.out_features, module.in_features), name
        assert torch.equal(loaded[name], module.weight), name  # same bytes, never transposed
    # Non-square projections (k/v: [kv_dim, hidden], down: [hidden, ffn]) would not even load transposed;
    # the square ones would, so the forward pass is the proof for them.
    fresh = type(reference)(reference.config).eval()
    fresh.load_state_dict(loaded, strict=True)
    assert torch.equal(_logits(fresh), _logits(reference))


def _state_image(
    tensors: dict[str, torch.Tensor], metadata: dict[str, Any], *, lm_head: bytes | None
) -> bytes:
    entries = [
        (
            n,
            {torch.bfloat16: 30, torch.float32: 0}[t.dtype],
            list(t.shape),
            t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(),
        )
        for n, t in tensors.items()
    ]
    if lm_head is not None:
        embed = tensors["model.embed_tokens.weight"]
        # aprender's defect: a 0-byte F32 placeholder of full shape beside BF16 embeddings.
        entries.append(("lm_head.weight", int(DType.F32), list(embed.shape), lm_head))
    entries.sort(key=lambda e: e[0].encode())
    return spec_file(entries, json.dumps(metadata).encode())


@pytest.mark.falsifier("FALSIFY-LAYOUT-TIED-001")
def test_tied_embeddings_survive_import_export_and_read_back_tied(
    tmp_path: Path, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_qwen2_dir(tmp_path / "hf", dtype="bfloat16", tied=True, seed=5)
    plant(falsifier_control, monkeypatch)
    with st_safe_open(str(src / "model.safetensors"), framework="pt") as f:
        assert "lm_head.weight" not in f.keys()  # noqa: SIM118 - safe_open has no __contains__
    out = tmp_path / "m.apr"
    assert main(["apr", "import", str(src), "-o", str(out)]) == 0
    info = apr.read_header(out)
    assert info.metadata["tied_embeddings"] is True
    loaded = apr.load_file(out)
    assert torch.equal(
        loaded["lm_head.weight"].view(torch.int16), loaded["model.embed_tokens.weight"].view(torch.int16)
    ), "the tied lm_head copy is not the embedding"

    back = tmp_path / "back.safetensors"
    assert main(["apr", "export", str(out), "-o", str(back)]) == 0
    assert back.read_bytes() == (src / "model.safetensors").read_bytes()

    reference = _hf_model(src)
    want = _logits(reference)
    source = {k: v for k, v in loaded.items() if k != "lm_head.weight"}
    # The architecture, but no tie flag: the missing or 0-byte head alone must read as tied.
    metadata = {k: v for k, v in info.metadata.items() if k not in ("tied_embeddings", "hf_lm_head_stored")}
    for label, image in (
        ("missing", _state_image(source, metadata, lm_head=None)),
        ("zero-byte", _state_image(source, metadata, lm_head=b"")),
    ):
        path = tmp_path / f"{label}.apr"
        path.write_bytes(image)
        assert apr.read_header(path).lm_head_tied, label
        tensors = apr.load_file(path)
        assert "lm_head.weight" not in tensors, label  # not invented: the model loader ties it
        model = type(reference)(reference.config).eval()
        result = model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
        assert set(result.missing_keys) <= {"lm_head.weight"} and not result.unexpected_keys, label
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), label
        assert torch.equal(_logits(model), want), label
        # shiptwo's own loader on the same file: one Parameter for both, and the reference's logits.
        ours = from_pretrained(path)
        assert ours.config.tied_embeddings, label
        assert ours.lm_head.weight is ours.tok_embeddings.weight, f"{label}: lm_head is not the embedding"
        ids = torch.arange(12).reshape(2, 6) % ours.config.vocab_size
        with torch.no_grad():
            torch.testing.assert_close(
                ours(ids), want, rtol=1e-4, atol=1e-5, msg=lambda m, lb=label: f"{lb}: {m}"
            )


@pytest.mark.falsifier("FALSIFY-LAYOUT-COLMAJOR-001")
def test_column_major_file_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    falsifier_control: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = tmp_path / "good.apr"
    apr.save_file({"w": torch.arange(6.0).reshape(2, 3)}, good)
    image = bytearray(good.read_bytes())
    flags = struct.unpack_from("<H", image, 6)[0]
    struct.pack_into("<H", image, 6, flags | Flag.LAYOUT_COLUMN_MAJOR)
    bad = tmp_path / "colmajor.apr"
    bad.write_bytes(rehash(image))
    plant(falsifier_control, monkeypatch)
    for reader in (apr.load_file, apr.read_header, lambda p: apr.safe_open(p).get_tensor("w")):
        with pytest.raises(
            FormatError, match=r"colmajor\.apr: flags: 0x0c00 has LAYOUT_COLUMN_MAJOR \(0x0800\)"
        ):
            reader(bad)
    assert main(["apr", "inspect", str(bad)]) == 1
    assert "LAYOUT_COLUMN_MAJOR" in capsys.readouterr().err
