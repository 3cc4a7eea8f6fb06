"""The GGUF reader: agreement with gguf-py's GGUFReader, and one clear line for every bad file."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiptwo.errors import FormatError
from shiptwo.ggml import GgmlType, GgufFile, GgufValueType, is_gguf, open_gguf

FIX = "the file is truncated or corrupt; download or convert it again"


def _expect(tmp_path: Path, image: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(image)
    with pytest.raises(FormatError) as exc:
        open_gguf(path)
    assert str(exc.value) == f"{path}: {message}"
    assert "\n" not in str(exc.value)


# --- a small file, well-formed --------------------------------------------------------------


def test_small_file_reads(tmp_path: Path, small: Any) -> None:
    path = small.write(tmp_path / "small.gguf")
    assert is_gguf(path)
    with open_gguf(path) as g:
        assert g.version == 3
        assert g.metadata == {"general.architecture": "test", "test.count": 7}
        assert g.metadata_types["test.count"] == (GgufValueType.UINT32,)
        assert list(g.tensors) == ["a", "b"]
        a, b = g.tensors["a"], g.tensors["b"]
        assert (a.shape, a.ggml_type, a.numel, a.nbytes) == ((2, 4), GgmlType.F32, 8, 32)
        assert (b.shape, b.ggml_type, b.offset) == ((8,), GgmlType.F16, g.data_offset + 32)
        assert g.data_offset == 192
        assert g.dequantize("a").tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
        assert (
            g.dequantize("b").numpy().tolist() == np.linspace(-1, 1, 8).astype("<f2").astype("<f4").tolist()
        )
        view = g.raw("a")
        assert not view.flags.writeable and view.nbytes == 32
        with pytest.raises(KeyError, match="no tensor named 'c'"):
            g.raw("c")
    assert view.view("<f4")[3] == 3.0  # a live view keeps the map open after close()
    with pytest.raises(ValueError, match="closed"):
        g.raw("a")


def test_is_gguf_reads_the_magic_not_the_suffix(tmp_path: Path, small: Any) -> None:
    assert is_gguf(small.write(tmp_path / "model.bin"))
    (tmp_path / "fake.gguf").write_bytes(b"GGUX" + b"\0" * 40)
    assert not is_gguf(tmp_path / "fake.gguf")
    assert not is_gguf(tmp_path / "missing.gguf")
    assert not is_gguf(tmp_path)


def test_all_value_types_and_nested_arrays_match_gguf_py(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "types.gguf"
    w = gguf.GGUFWriter(str(path), arch="test")
    t = gguf.GGUFValueType
    w.add_key_value("u8", 255, t.UINT8)
    w.add_key_value("i8", -128, t.INT8)
    w.add_key_value("u16", 65535, t.UINT16)
    w.add_key_value("i16", -32768, t.INT16)
    w.add_key_value("u32", 2**32 - 1, t.UINT32)
    w.add_key_value("i32", -(2**31), t.INT32)
    w.add_key_value("f32", 0.1, t.FLOAT32)
    w.add_key_value("bool", True, t.BOOL)
    w.add_key_value("str", "héllo\n", t.STRING)
    w.add_key_value("u64", 2**64 - 1, t.UINT64)
    w.add_key_value("i64", -(2**63), t.INT64)
    w.add_key_value("f64", 1e300, t.FLOAT64)
    w.add_key_value("strs", ["a", "", "ß"], t.ARRAY, sub_type=t.STRING)
    w.add_key_value("ints", [1, -2, 3], t.ARRAY, sub_type=t.INT32)
    w.add_key_value("bools", [True, False], t.ARRAY, sub_type=t.BOOL)
    w.add_key_value("nested", [[1, 2], [3]], t.ARRAY)
    w.add_tensor("x", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.add_tensor("y", np.zeros((3, 34), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    _assert_matches_gguf_py(path)
    with open_gguf(path) as g:
        assert g.metadata["f32"] == float(np.float32(0.1))
        assert g.metadata["nested"] == [[1, 2], [3]]
        assert g.metadata_types["nested"][:2] == (GgufValueType.ARRAY, GgufValueType.ARRAY)
        assert g.tensors["y"].shape == (3, 32) and g.tensors["y"].nbytes == 102


_VALUE_KINDS = {
    "UINT8": st.integers(0, 255),
    "INT32": st.integers(-(2**31), 2**31 - 1),
    "UINT64": st.integers(0, 2**64 - 1),
    "FLOAT64": st.floats(allow_nan=False),
    "BOOL": st.booleans(),
    "STRING": st.text(max_size=20),
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.text(alphabet="abcdefghij._", min_size=1, max_size=12),
        st.sampled_from(sorted(_VALUE_KINDS)).flatmap(
            lambda k: st.tuples(
                st.just(k), st.one_of(_VALUE_KINDS[k], st.lists(_VALUE_KINDS[k], min_size=1, max_size=5))
            )
        ),
        max_size=8,
    )
)
def test_round_trip_through_gguf_writer(tmp_path: Path, kvs: dict[str, tuple[str, Any]]) -> None:
    """Whatever gguf-py writes, we read back as written (property test over value types; gguf-py
    writes no empty arrays, test_nesting_bomb reads one)."""
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "rt.gguf"
    w = gguf.GGUFWriter(str(path), arch="rt")
    kvs = {k: v for k, v in kvs.items() if k != "general.architecture"}
    for key, (kind, value) in kvs.items():
        vtype = gguf.GGUFValueType[kind]
        if isinstance(value, list):
            w.add_key_value(key, value, gguf.GGUFValueType.ARRAY, sub_type=vtype)
        else:
            w.add_key_value(key, value, vtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open_gguf(path) as g:
        assert {k: g.metadata[k] for k in kvs} == {k: v for k, (_, v) in kvs.items()}


def _assert_matches_gguf_py(path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(str(path))
    with open_gguf(path) as g:
        keys = [k for k in r.fields if not k.startswith("GGUF.")]
        assert list(g.metadata) == keys
        for key in keys:
            f = r.fields[key]
            mine = g.metadata[key]
            if len(f.types) > 2:  # gguf-py's contents() flattens nested arrays; we keep them nested
                mine = _flatten(mine)
            assert mine == f.contents(), key
            assert [int(t) for t in g.metadata_types[key]] == [int(t) for t in f.types], key
        assert g.version == r.fields["GGUF.version"].contents()
        assert g.data_offset == r.data_offset and g.alignment == r.alignment
        assert list(g.tensors) == [t.name for t in r.tensors]
        for t in r.tensors:
            mine = g.tensors[t.name]
            assert int(mine.ggml_type) == int(t.tensor_type), t.name
            assert mine.shape == tuple(int(d) for d in reversed(t.shape)), t.name
            assert (mine.offset, mine.nbytes, mine.numel) == (t.data_offset, t.n_bytes, t.n_elements), t.name
            assert np.shares_memory(g.raw(t.name), g.raw(t.name))
            assert np.array_equal(g.raw(t.name), t.data.reshape(-1).view(np.uint8)), t.name


def _flatten(value: Any) -> list[Any]:
    return [x for v in value for x in _flatten(v)] if isinstance(value, list) else [value]


@pytest.mark.slow
def test_real_file_matches_gguf_py(qwen_gguf_path: Path) -> None:
    _assert_matches_gguf_py(qwen_gguf_path)


def test_real_file_facts(qwen_gguf: GgufFile) -> None:
    assert qwen_gguf.version == 3 and len(qwen_gguf.tensors) == 291
    assert qwen_gguf.metadata["general.architecture"] == "qwen2"
    assert len(qwen_gguf.metadata["tokenizer.ggml.tokens"]) == 151_936
    assert len(qwen_gguf.metadata["tokenizer.ggml.merges"]) == 151_387
    assert qwen_gguf.tensors["token_embd.weight"].shape == (151_936, 896)
    counts: dict[str, int] = {}
    for t in qwen_gguf.tensors.values():
        counts[t.ggml_type.name] = counts.get(t.ggml_type.name, 0) + 1
    assert counts == {"Q5_0": 133, "F32": 121, "Q8_0": 13, "Q6_K": 12, "Q4_K": 12}


def test_the_room_does_not_import_gguf_py() -> None:
    code = (
        "import sys, shiptwo.ggml, shiptwo.ggml.qwen2, shiptwo.ggml.tokenizer, shiptwo.ggml.quants\n"
        "print('gguf' in sys.modules, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


# --- malformed files: each one line naming the file, the field and the value ----------------


def test_empty_and_short_files(tmp_path: Path) -> None:
    _expect(tmp_path, b"", f"header: the file has 0 bytes, a GGUF header needs 24; {FIX}")
    _expect(tmp_path, b"GGUF\x03\0\0\0", f"header: the file has 8 bytes, a GGUF header needs 24; {FIX}")
    _expect(
        tmp_path,
        b"APR\0",
        "magic: found b'APR\\x00', expected b'GGUF': an APR v2 model file (open it with shiptwo.apr)",
    )


def test_bad_magic_says_what_the_file_is(tmp_path: Path) -> None:
    header = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    safetensors = struct.pack("<Q", len(header)) + header + b"\0" * 4
    _expect(
        tmp_path,
        safetensors,
        f"magic: found {safetensors[:4]!r}, expected b'GGUF': a safetensors file "
        "(open it with safetensors, or `shiptwo apr import` it)",
    )
    apr = b"APR\0" + b"\2\0" * 40
    _expect(
        tmp_path,
        apr,
        "magic: found b'APR\\x00', expected b'GGUF': an APR v2 model file (open it with shiptwo.apr)",
    )
    _expect(tmp_path, b"\x7fELF" + b"\0" * 40, "magic: found b'\\x7fELF', expected b'GGUF': not a GGUF file")


def test_unsupported_and_big_endian_versions(tmp_path: Path, small: Any) -> None:
    small.version = 1
    _expect(
        tmp_path,
        small.build(),
        "version: 1 is not supported (shiptwo reads GGUF v2 and v3); re-convert with a current llama.cpp",
    )
    small.version = 3 << 24
    _expect(
        tmp_path,
        small.build(),
        "version: 50331648 is the byte-swapped 3: a big-endian GGUF; shiptwo reads little-endian GGUF only, "
        "convert it with llama.cpp's gguf-py (gguf_convert_endian)",
    )
    small.version = 2
    assert open_gguf(small.write(tmp_path / "v2.gguf")).version == 2


def test_huge_counts(tmp_path: Path, small: Any) -> None:
    size = len(small.build())
    small.n_kv = 2**64 - 1
    _expect(
        tmp_path,
        small.build(),
        f"kv_count: {2**64 - 1} entries cannot fit in the {size - 24} bytes left "
        f"(each takes at least 13); {FIX}",
    )
    small.n_kv = None
    small.n_tensors = 10**12
    _expect(
        tmp_path,
        small.build(),
        f"tensor_count: {10**12} entries cannot fit in the {size - 94} bytes left "
        f"(each takes at least 24); {FIX}",
    )


def test_huge_string_lengths(tmp_path: Path, gguf_kit: Any) -> None:
    image = gguf_kit().head()[:-8] + struct.pack("<Q", 1) + struct.pack("<Q", 2**63) + b"x" * 64
    _expect(
        tmp_path,
        image,
        f"metadata key #0: string length {2**63} runs past the end of the file (64 bytes left); {FIX}",
    )
    image = gguf_kit().kv("k", 8, struct.pack("<Q", 10**9) + b"abc").build()
    left = len(image) - (24 + 9 + 4 + 8)  # after header, key "k", value type, string length
    _expect(
        tmp_path,
        image,
        f"metadata 'k': string length {10**9} runs past the end of the file ({left} bytes left); {FIX}",
    )


def test_array_length_bomb(tmp_path: Path, gguf_kit: Any) -> None:
    start = 24 + 12 + 4 + 12  # header, key "bomb", value type, element type and length
    image = gguf_kit().kv("bomb", 9, struct.pack("<IQ", 8, 2**62)).build()  # 2**62 strings
    _expect(
        tmp_path,
        image,
        f"metadata 'bomb': array of {2**62} STRING cannot fit in the "
        f"{len(image) - start} bytes left (each takes at least 8); {FIX}",
    )
    image = gguf_kit().kv("bomb", 9, struct.pack("<IQ", 10, 10**15) + b"\0" * 16).build()  # 10**15 u64
    _expect(
        tmp_path,
        image,
        f"metadata 'bomb': array of {10**15} UINT64 cannot fit in the "
        f"{len(image) - start} bytes left (each takes at least 8); {FIX}",
    )


def test_nesting_bomb(tmp_path: Path, gguf_kit: Any) -> None:
    nested = struct.pack("<IQ", 9, 1) * 9 + struct.pack("<IQ", 0, 0)  # arrays 10 deep
    g = gguf_kit().kv("deep", 9, nested)
    _expect(tmp_path, g.build(), f"metadata 'deep'{'[0]' * 8}: arrays nested more than 8 deep; {FIX}")
    ok = struct.pack("<IQ", 9, 1) * 7 + struct.pack("<IQ", 0, 1) + b"\x05"  # 8 deep is allowed
    path = gguf_kit().kv("deep", 9, ok).write(tmp_path / "ok.gguf")
    assert open_gguf(path).metadata["deep"] == [[[[[[[[5]]]]]]]]


def test_unknown_type_codes(tmp_path: Path, gguf_kit: Any, small: Any) -> None:
    _expect(
        tmp_path,
        gguf_kit().kv("k", 13, b"\0" * 8).build(),
        "metadata 'k': unknown value type 13 (GGUF defines 0..12); a newer GGUF or a corrupt file",
    )
    _expect(
        tmp_path,
        gguf_kit().kv("k", 9, struct.pack("<IQ", 99, 1)).build(),
        "metadata 'k' element: unknown value type 99 (GGUF defines 0..12); a newer GGUF or a corrupt file",
    )
    small.infos[0] = small.infos[0][:-12] + struct.pack("<IQ", 4, 0)  # GGML type 4 was retired
    _expect(tmp_path, small.build(), "tensor 'a': unknown GGML type 4; a newer GGML type or a corrupt file")


def test_bad_values(tmp_path: Path, gguf_kit: Any) -> None:
    _expect(
        tmp_path,
        gguf_kit().kv("flag", 7, b"\x02").build(),
        f"metadata 'flag': bool byte 2 is neither 0 nor 1; {FIX}",
    )
    _expect(
        tmp_path,
        gguf_kit().kv("name", 8, gguf_kit.pack_str(b"caf\xe9!")).build(),
        f"metadata 'name': b'caf\\xe9!' is not UTF-8 (invalid continuation byte at byte 3); {FIX}",
    )
    _expect(
        tmp_path,
        gguf_kit().kv(b"k\xff", 4, b"\0" * 4).build(),
        f"metadata key #0: b'k\\xff' is not UTF-8 (invalid start byte at byte 1); {FIX}",
    )
    for bad in (0, 3, 48):
        image = gguf_kit().kv("general.alignment", 4, struct.pack("<I", bad)).build()
        _expect(
            tmp_path,
            image,
            f"metadata 'general.alignment': {bad} (UINT32) is not a power-of-two UINT32; {FIX}",
        )
    image = gguf_kit().kv("general.alignment", 10, struct.pack("<Q", 64)).build()
    _expect(tmp_path, image, f"metadata 'general.alignment': 64 (UINT64) is not a power-of-two UINT32; {FIX}")


def test_duplicate_names(tmp_path: Path, small: Any) -> None:
    small.kvs.append(small.kvs[1])
    _expect(tmp_path, small.build(), f"metadata key #2: 'test.count' appears twice; {FIX}")
    small.kvs.pop()
    small.tensor("a", [4], 0, 64)
    small.data += b"\0" * 64
    _expect(tmp_path, small.build(), f"tensor 'a': the name appears twice; {FIX}")


def test_bad_tensor_infos(tmp_path: Path, small: Any, gguf_kit: Any) -> None:
    small.infos[1] = gguf_kit.pack_str("b") + struct.pack("<I", 5) + struct.pack("<5Q", 1, 1, 1, 1, 8)
    _expect(tmp_path, small.build(), f"tensor 'b': n_dims 5, GGML tensors have at most 4; {FIX}")
    g = gguf_kit().tensor("q", [16, 2], int(GgmlType.Q8_0), 0)
    g.data = b"\0" * 68
    _expect(
        tmp_path,
        g.build(),
        f"tensor 'q': row length 16 is not a multiple of the Q8_0 block of 32 values; {FIX}",
    )


@pytest.mark.parametrize("ne", [[1 << 63, 0], [0, (1 << 64) - 1], [4, 1 << 62, 0]])
def test_a_shape_no_array_can_have_is_refused_even_with_no_elements(
    tmp_path: Path, gguf_kit: Any, ne: list[int]
) -> None:
    # 0 elements take 0 bytes and pass every data check; dequantize then fails on the dims.
    shape = list(reversed(ne))
    extent = 1
    for d in ne:
        extent *= max(d, 1)
    _expect(
        tmp_path,
        gguf_kit().tensor("e", ne, int(GgmlType.F32), 0).build(),
        f"tensor 'e': shape {shape}: its non-zero dims multiply to {extent}, past the "
        f"1152921504606846975 values numpy and torch can index; {FIX}",
    )
    path = tmp_path / "ok.gguf"
    path.write_bytes(gguf_kit().tensor("e", [(2**63 - 1) // 8, 0], int(GgmlType.F32), 0).build())
    with open_gguf(path) as g:
        assert g.dequantize("e").shape == (0, (2**63 - 1) // 8)


def test_misaligned_overlapping_and_outside_data(tmp_path: Path, small: Any) -> None:
    small.infos[1] = small.infos[1][:-8] + struct.pack("<Q", 40)
    _expect(tmp_path, small.build(), f"tensor 'b': offset 40 is not a multiple of the alignment 32; {FIX}")
    small.infos[1] = small.infos[1][:-8] + struct.pack("<Q", 0)
    _expect(tmp_path, small.build(), f"tensor 'b': data [192, 208) overlaps tensor 'a' [192, 224); {FIX}")
    small.infos[1] = small.infos[1][:-8] + struct.pack("<Q", 2**40)
    _expect(
        tmp_path,
        small.build(),
        f"tensor 'b': data [{192 + 2**40}, {192 + 2**40 + 16}) runs past the end of the file "
        f"(240 bytes); {FIX}",
    )
    small.infos[1] = small.infos[1][:-8] + struct.pack("<Q", 32)
    _expect(
        tmp_path,
        small.build()[:-1],
        f"tensor 'b': data [224, 240) runs past the end of the file (239 bytes); {FIX}",
    )


def test_truncated_at_every_byte(tmp_path: Path, small: Any) -> None:
    """Every prefix of a valid file is refused with one line naming the file, never a traceback."""
    image = small.build()
    path = tmp_path / "cut.gguf"
    fields = set()
    for cut in range(len(image)):
        path.write_bytes(image[:cut])
        with pytest.raises(FormatError) as exc:
            open_gguf(path)
        message = str(exc.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, (cut, message)
        fields.add(message.split(": ")[1])
    # The cut lands in every section: header, keys, values, tensor infos and data.
    # (Early cuts trip the count checks first: two keys cannot fit in what is left.)
    assert {
        "header",
        "kv_count",
        "metadata key #1 length",
        "metadata 'general.architecture'",
        "metadata 'test.count'",
        "tensor_count",
        "tensor info #1 name length",
        "tensor 'b' dims",
        "tensor 'b' offset",
        "tensor 'a'",
        "tensor 'b'",
    } <= fields


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 239), st.integers(0, 255)), min_size=1, max_size=6))
def test_corrupt_bytes_never_escape_as_other_errors(
    tmp_path_factory: pytest.TempPathFactory, small_image: bytes, flips: list[tuple[int, int]]
) -> None:
    """Random byte changes anywhere in the header, metadata or infos: parsed, or one FormatError line."""
    image = bytearray(small_image)
    for at, value in flips:
        image[at] = value
    path = tmp_path_factory.mktemp("fuzz") / "f.gguf"
    path.write_bytes(bytes(image))
    try:
        with open_gguf(path) as g:
            for name in g.tensors:
                g.raw(name)
    except FormatError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"{path}: ")
