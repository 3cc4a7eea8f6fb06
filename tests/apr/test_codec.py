"""APR v2 codec: golden bytes, hypothesis round trip, an independent reading of the spec, quirks."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiptwo import apr
from shiptwo.apr.constants import DType
from shiptwo.apr.testing import safetensors_raw, spec_file, spec_problems, spec_tensors
from shiptwo.apr.writer import RawTensor, write_raw
from shiptwo.errors import FormatError, UsageError


def test_golden_bytes(tmp_path: Path) -> None:
    path = tmp_path / "g.apr"
    apr.save_file(
        {"b": torch.tensor([1.0, -2.0]), "a": torch.tensor([1, 2, 3], dtype=torch.uint8)}, path, {"k": 1}
    )
    expected = spec_file(
        [("a", 7, [3], bytes([1, 2, 3])), ("b", 0, [2], struct.pack("<2f", 1.0, -2.0))], b'{"k":1}'
    )
    assert path.read_bytes() == expected
    assert spec_problems(path) == []


def test_spec_tensors_reads_codes_dims_and_bytes_of_a_spec_image(tmp_path: Path) -> None:
    path = tmp_path / "s.apr"
    b16 = struct.pack("<3H", 0x3F80, 0x40E2, 0xBF80)  # BF16 1.0, 7.0625, -1.0
    path.write_bytes(
        spec_file(
            [("a", 30, [3], b16), ("b", 1, [1, 2], b"\0\x3c\0\xbc"), ("c", 0, [0], b"")],
            b"{}",
            data_order=[2, 1, 0],
        )
    )
    assert spec_tensors(path) == {
        "a": (30, (3,), b16),
        "b": (1, (1, 2), b"\0\x3c\0\xbc"),
        "c": (0, (0,), b""),
    }


def test_safetensors_raw_reads_what_the_safetensors_package_wrote(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "h": torch.tensor([1.5, -2.0]).bfloat16(),
    }
    save_file(tensors, str(tmp_path / "m.safetensors"), metadata={"format": "pt"})
    raw = safetensors_raw(tmp_path / "m.safetensors")
    assert raw == {
        "w": ("F32", (2, 3), struct.pack("<6f", *range(6))),
        "h": ("BF16", (2,), struct.pack("<2H", 0x3FC0, 0xC000)),
    }


_DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int32,
    torch.int64,
    torch.int8,
    torch.uint8,
]


@st.composite
def tensor_dicts(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    names = draw(
        st.lists(
            st.text(min_size=1, max_size=12).filter(lambda s: len(s.encode()) <= 256),
            min_size=0,
            max_size=5,
            unique=True,
        )
    )
    out = {}
    for name in names:
        dtype = draw(st.sampled_from(_DTYPES))
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        raw = draw(
            st.binary(
                min_size=int(np.prod(shape)) * dtype.itemsize, max_size=int(np.prod(shape)) * dtype.itemsize
            )
        )
        out[name] = (
            torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)
            if raw
            else torch.empty(shape, dtype=dtype)
        )
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tensors=tensor_dicts(),
    meta=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)
def test_round_trip_is_bit_exact(tmp_path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    path = tmp_path / "r.apr"
    apr.save_file(tensors, path, meta)
    back = apr.load_file(path)
    assert list(back) == sorted(tensors, key=lambda s: s.encode())
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape
        assert torch.equal(back[name].reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))
    assert apr.read_header(path).metadata == meta
    assert spec_problems(path) == []


def test_reader_follows_offsets_not_index_order(tmp_path: Path) -> None:
    entries = [
        ("a", 0, [2], struct.pack("<2f", 1, 2)),
        ("b", 4, [1], struct.pack("<i", -7)),
        ("c", 30, [1], struct.pack("<H", 0x40F2)),
    ]
    path = tmp_path / "o.apr"
    path.write_bytes(spec_file(entries, b"{}", data_order=[2, 0, 1]))
    got = apr.load_file(path)
    assert got["a"].tolist() == [1.0, 2.0] and got["b"].tolist() == [-7]
    assert got["c"].dtype == torch.bfloat16 and got["c"].item() == 7.5625


def test_file_without_layout_flag_reads_as_row_major(tmp_path: Path) -> None:
    path = tmp_path / "old.apr"
    path.write_bytes(spec_file([("w", 0, [2, 3], struct.pack("<6f", *range(6)))], b"{}", flags=0))
    assert apr.load_file(path)["w"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_zero_byte_lm_head_is_left_out_and_reported_tied(tmp_path: Path) -> None:
    embed = struct.pack("<4e", 1, 2, 3, 4)
    path = tmp_path / "t.apr"
    path.write_bytes(
        spec_file(
            [("lm_head.weight", 0, [2, 2], b""), ("model.embed_tokens.weight", 1, [2, 2], embed)],
            b'{"tied_embeddings":true}',
        )
    )
    info = apr.read_header(path)
    assert info.placeholders == ["lm_head.weight"] and info.lm_head_tied
    assert list(apr.load_file(path)) == ["model.embed_tokens.weight"]
    with (
        apr.safe_open(path) as f,
        pytest.raises(FormatError, match=r"t.apr: tensor 'lm_head.weight': a 0-byte"),
    ):
        f.get_tensor("lm_head.weight")
    missing = tmp_path / "m.apr"
    missing.write_bytes(spec_file([("model.embed_tokens.weight", 1, [2, 2], embed)], b"{}"))
    assert apr.read_header(missing).lm_head_tied
    assert apr.read_header(missing).placeholders == []


def test_safe_open_reads_one_tensor_without_touching_the_others(tmp_path: Path) -> None:
    path = tmp_path / "s.apr"
    apr.save_file({"a": torch.arange(4.0), "b": torch.ones(1000)}, path, {"m": "x"})
    buf = bytearray(path.read_bytes())
    start = apr.read_header(path).tensor("b").start
    buf[start : start + 4000] = b"\xff" * 4000  # b is now NaN garbage; a and the header are intact
    path.write_bytes(buf)
    with apr.safe_open(path, framework="pt") as f:
        assert f.keys() == ["a", "b"] and f.metadata() == {"m": "x"}
        assert f.get_tensor("a").tolist() == [0, 1, 2, 3]
    with apr.safe_open(path, framework="np") as f:
        assert f.get_tensor("a").dtype == np.float32


def test_numpy_path_decodes_bf16_to_float32(tmp_path: Path) -> None:
    path = tmp_path / "n.apr"
    t = torch.tensor([7.5625, -0.02], dtype=torch.bfloat16)
    apr.save_file({"x": t}, path)
    arrays = apr.load_arrays(path)
    assert arrays["x"].dtype == np.float32
    assert arrays["x"].tolist() == t.float().tolist()


def test_quantized_apr_q8_and_q4_including_legacy_codes(tmp_path: Path) -> None:
    q8 = struct.pack("<f", 0.5) + bytes([2, 0xFE, 127, 0x81])  # int8 2, -2, 127, -127
    nibbles = bytes([(i % 16) | ((15 - i % 16) << 4) for i in range(16)])
    q4 = struct.pack("<e", 0.25) + nibbles + struct.pack("<e", 2.0) + nibbles
    entries = [("q4", 128, [40], q4), ("q4old", 8, [40], q4), ("q8", 129, [4], q8), ("q8old", 9, [4], q8)]
    path = tmp_path / "q.apr"
    path.write_bytes(spec_file(entries, b"{}"))
    got = apr.load_file(path)
    assert got["q8"].tolist() == [1.0, -1.0, 63.5, -63.5] == got["q8old"].tolist()
    block = []
    for byte in nibbles:
        block += [(byte & 15) - 8, (byte >> 4) - 8]
    want = [v * 0.25 for v in block] + [v * 2.0 for v in block[:8]]
    assert got["q4"].dtype == torch.float32 and got["q4"].tolist() == want == got["q4old"].tolist()


@pytest.mark.parametrize("code,qtype", [(12, "Q4_K"), (14, "Q6_K")])
def test_k_quants_match_gguf(tmp_path: Path, code: int, qtype: str) -> None:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    qt = GGMLQuantizationType[qtype]
    block_bytes = GGML_QUANT_SIZES[qt][1]
    rng = np.random.default_rng(0)
    raw = bytearray(rng.integers(0, 256, size=2 * block_bytes, dtype=np.uint8).tobytes())
    # Keep the f16 super-block scales finite and small.
    for b in range(2):
        scale_at = [0, 2] if qtype == "Q4_K" else [block_bytes - 2]
        for at in scale_at:
            raw[b * block_bytes + at : b * block_bytes + at + 2] = struct.pack("<e", 0.01 * (b + 1))
    path = tmp_path / "k.apr"
    path.write_bytes(spec_file([("w", code, [2, 256], bytes(raw))], b"{}"))
    got = apr.load_file(path)["w"]
    want = dequantize(np.frombuffer(bytes(raw), dtype=np.uint8), qt).reshape(2, 256)
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), want)


def test_save_file_refuses_what_apr_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"tensor 'b': dtype torch.bool cannot be stored in APR"):
        apr.save_file({"b": torch.zeros(2, dtype=torch.bool)}, tmp_path / "x.apr")
    with pytest.raises(UsageError, match=r"name is 257 bytes, APR allows 1..256"):
        apr.save_file({"n" * 257: torch.zeros(1)}, tmp_path / "x.apr")
    with pytest.raises(UsageError, match=r"9 dimensions, APR allows at most 8"):
        apr.save_file({"d": torch.zeros([1] * 9)}, tmp_path / "x.apr")
    with pytest.raises(UsageError, match=r"metadata: not JSON-serialisable"):
        apr.save_file({"a": torch.zeros(1)}, tmp_path / "x.apr", {"nan": float("nan")})
    with pytest.raises(UsageError, match=r"tensor 'w': 3 bytes, but shape \[2\] x F32 needs 8"):
        write_raw(tmp_path / "x.apr", [RawTensor("w", DType.F32, (2,), b"abc")])
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_save_file_is_atomic_and_non_contiguous_tensors_are_written_row_major(tmp_path: Path) -> None:
    path = tmp_path / "c.apr"
    w = torch.arange(6.0).reshape(2, 3).t()  # a transposed view: shape [3, 2]
    apr.save_file({"w": w}, path)
    assert apr.load_file(path)["w"].tolist() == w.tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["c.apr"]


def test_write_is_fsynced_before_the_rename_and_gets_mode_0644(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "d.apr"
    apr.save_file({"w": torch.zeros(3)}, path)
    assert events == ["fsync", "replace"]
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o600)
    apr.save_file({"w": torch.ones(3)}, path)
    assert path.stat().st_mode & 0o777 == 0o600  # an existing file keeps its mode


def test_write_into_a_directory_path_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=rf"^{tmp_path}: is a directory; give the output file's path"):
        apr.save_file({"w": torch.zeros(1)}, tmp_path)
