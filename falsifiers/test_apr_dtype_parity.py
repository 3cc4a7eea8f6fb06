"""Falsifiers of apr-dtype-parity-v1: bytes and dtypes survive import/export; a mislabel is named;
the decoded weights carry the statistics of a trained model (the H4 init-stats bounds).

Controls replay the seeds' H4 root cause 1 in the real code: `apr import` writing BF16 bytes under
F16's code, and the reader decoding BF16-tagged bytes as F16 (`plant`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open as st_safe_open

from shiptwo import apr
from shiptwo.apr.constants import DType
from shiptwo.apr.testing import make_qwen2_dir, retag, safetensors_raw, spec_problems, spec_tensors
from shiptwo.cli import main

# The codes as literals from docs/apr-v2.md, not shiptwo's DType: a writer and reader
# that agree on a swapped code would pass a check written against their own constants.
SPEC_CODES = {"bfloat16": 30, "float16": 1, "float32": 0}
SAFETENSORS_NAMES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


# The controls: the seeds' H4 root cause 1, planted in the one function each half of it lived in.
IMPORT_TAGS_BF16_AS_F16 = "bf16-tagged-f16-on-import"
READ_DECODES_BF16_AS_F16 = "bf16-decoded-as-f16-on-read"


def plant(control: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant the control's defect into shiptwo.apr for the rest of the test (nothing on the real run)."""
    if control is None:
        return
    if control == IMPORT_TAGS_BF16_AS_F16:
        # aprender's old import path never passed `is_bf16` to the writer: the BF16 bytes were
        # copied unchanged under F16's dtype code.
        from shiptwo.apr import convert

        real_raw_tensor = convert.RawTensor

        def raw_tensor(name: str, dtype: DType, shape: tuple[int, ...], data: Any) -> Any:
            return real_raw_tensor(name, DType.F16 if dtype is DType.BF16 else dtype, shape, data)

        monkeypatch.setattr(convert, "RawTensor", raw_tensor)
    elif control == READ_DECODES_BF16_AS_F16:
        # The loader that dequantized a BF16-tagged tensor through f16_to_f32.
        from shiptwo.apr import reader

        monkeypatch.setitem(reader._TORCH_DTYPES, DType.BF16, "float16")
        real_decode_array = reader.decode_array

        def decode_array(info: Any, buf: Any, *, raw_bf16: bool = False) -> Any:
            if info.dtype is DType.BF16 and not raw_bf16:
                info = dataclasses.replace(info, dtype=DType.F16)
            return real_decode_array(info, buf, raw_bf16=raw_bf16)

        monkeypatch.setattr(reader, "decode_array", decode_array)
    else:
        raise AssertionError(f"no plant for control {control.id!r}")  # pragma: no cover


def _source_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    with st_safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(
            a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
        )
    )


@pytest.mark.falsifier("FALSIFY-APR-DTYPE-PARITY-001")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_import_and_export_are_bit_exact(
    tmp_path: Path, dtype: str, record_measurement, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if falsifier_control is not None and dtype != "bfloat16":
        pytest.skip(f"{falsifier_control.id} acts on BF16 tensors only; this source holds {dtype}")
    src = make_qwen2_dir(tmp_path / "hf", dtype=dtype, tied=dtype == "bfloat16", seed=1)
    plant(falsifier_control, monkeypatch)
    out = tmp_path / "m.apr"
    assert main(["apr", "import", str(src), "-o", str(out)]) == 0
    assert spec_problems(out) == []

    # Both sides parsed by hand from their specs, so neither shiptwo's codec nor the
    # safetensors package is the judge of its own output.
    raw = safetensors_raw(src / "model.safetensors")
    written = spec_tensors(out)
    assert {st_dtype for st_dtype, _, _ in raw.values()} == {SAFETENSORS_NAMES[dtype]}
    mismatched = sorted(
        name
        for name, (_, shape, data) in raw.items()
        if written.get(name) != (SPEC_CODES[dtype], shape, data)
    )
    # A tied source has no lm_head.weight; the import writes it as a copy of the embedding.
    extra = sorted(set(written) - set(raw))
    mismatched += [
        name
        for name in extra
        if name != "lm_head.weight" or written[name] != written["model.embed_tokens.weight"]
    ]
    record_measurement("mismatched_tensors", len(mismatched))
    assert mismatched == []
    assert extra == (["lm_head.weight"] if dtype == "bfloat16" else [])

    # The library's view must agree with the bytes on disk.
    source = _source_tensors(src)
    loaded = apr.load_file(out)
    assert [k for k in source if not _bits_equal(loaded[k], source[k])] == []

    back = tmp_path / "back.safetensors"
    assert main(["apr", "export", str(out), "-o", str(back)]) == 0
    with st_safe_open(str(back), framework="pt") as f:
        exported = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert exported.keys() == source.keys()
    assert [k for k in source if not _bits_equal(exported[k], source[k])] == []
    assert back.read_bytes() == (src / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def trained_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    return make_qwen2_dir(root / "hf", dtype="bfloat16", tied=True, seed=2, trained_like=True, vocab_size=512)


@pytest.fixture
def trained_bf16(
    trained_source: Path, tmp_path: Path, falsifier_control: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    """The trained-like BF16 source and its import, made and read with the control's defect planted."""
    plant(falsifier_control, monkeypatch)
    out = tmp_path / "m.apr"
    assert main(["apr", "import", str(trained_source), "-o", str(out)]) == 0
    return trained_source, out


@pytest.mark.falsifier("FALSIFY-APR-MISLABEL-001")
def test_diff_names_a_bf16_as_f16_mislabel(
    trained_bf16: tuple[Path, Path], falsifier_control: Any, tmp_path: Path, capsys
) -> None:
    if falsifier_control == READ_DECODES_BF16_AS_F16:
        # `apr diff` decodes both sides itself (shiptwo.apr.diff), never through the reader's decoder.
        pytest.skip("apr diff does not decode through the reader; the stats test below reads through it")
    src, good = trained_bf16
    assert main(["apr", "diff", str(good), str(src)]) == 0, (
        f"apr diff: the fresh import differs from its source: {capsys.readouterr().out.strip()}"
    )
    bad = retag(good, tmp_path / "mislabeled.apr", src=DType.BF16, dst=DType.F16)
    assert apr.read_header(bad).tensor("model.norm.weight").dtype is DType.F16
    capsys.readouterr()
    assert main(["apr", "diff", str(bad), str(src)]) == 1
    out = capsys.readouterr().out
    assert "first 'lm_head.weight': mislabel" in out
    assert "bytes decode to the source exactly as BF16 but are tagged F16" in out
    assert "model.norm.weight: mislabel" in out


@pytest.mark.falsifier("FALSIFY-APR-MISLABEL-001")
def test_mislabel_moves_the_init_stats_out_of_bounds(
    trained_bf16: tuple[Path, Path], tmp_path: Path, falsifier_control: Any
) -> None:
    _, good = trained_bf16
    bad = retag(good, tmp_path / "mislabeled.apr", src=DType.BF16, dst=DType.F16)
    embed = apr.load_file(bad)["model.embed_tokens.weight"].double()
    norm = apr.load_file(bad)["model.norm.weight"].double()
    # The mislabel passes a NaN/Inf check, which is why the seeds' defect went unseen.
    assert torch.isfinite(embed).all() and torch.isfinite(norm).all()
    assert not 0.005 <= embed.std().item() <= 0.5
    good_norm = apr.load_file(good)["model.norm.weight"].double()
    assert abs(norm.mean().item() - good_norm.mean().item()) > 1.0


@pytest.mark.falsifier("FALSIFY-APR-INIT-STATS-001")
def test_init_stats_of_a_trained_like_checkpoint(
    trained_bf16: tuple[Path, Path], record_measurement, falsifier_control: Any
) -> None:
    _, out = trained_bf16
    with apr.safe_open(out, framework="np") as f:
        embed = f.get_tensor("model.embed_tokens.weight").astype("float64")
        norm = f.get_tensor("model.norm.weight").astype("float64")
    record_measurement("embed_std", float(embed.std()))
    record_measurement("embed_abs_mean", float(abs(embed.mean())))
    record_measurement("final_norm_mean", float(norm.mean()))
    assert 0.005 <= embed.std() <= 0.5 and abs(embed.mean()) < 0.05 and 0.01 < norm.mean() < 100
