"""Our dequantizers against gguf-py's (the oracle), bit for bit, on synthetic and real blocks."""

from __future__ import annotations

import numpy as np
import pytest

from shiptwo.errors import FormatError
from shiptwo.ggml import GgmlType, GgufFile
from shiptwo.ggml.quants import BLOCK, SUPPORTED, dequantize

gguf = pytest.importorskip("gguf")

# Byte offsets of the f16 scales inside each block type (ggml-common.h), so synthetic blocks
# carry sane finite scales; every other byte is random.
F16_FIELDS: dict[GgmlType, tuple[int, ...]] = {
    GgmlType.Q4_0: (0,),
    GgmlType.Q4_1: (0, 2),
    GgmlType.Q5_0: (0,),
    GgmlType.Q5_1: (0, 2),
    GgmlType.Q8_0: (0,),
    GgmlType.Q2_K: (80, 82),
    GgmlType.Q3_K: (108,),
    GgmlType.Q4_K: (0, 2),
    GgmlType.Q5_K: (0, 2),
    GgmlType.Q6_K: (208,),
}
PLAIN = {GgmlType.F32: "<f4", GgmlType.F16: "<f2", GgmlType.BF16: "<u2"}  # numpy has no bfloat16
N_BLOCKS = 700


def synthetic_blocks(ggml_type: GgmlType, n: int, seed: int) -> np.ndarray:
    """n random blocks (n * 64 values for the float types) with finite f16 scales, as uint8."""
    rng = np.random.default_rng(seed)
    nbytes = BLOCK[ggml_type][1]
    if ggml_type in PLAIN:
        x = rng.standard_normal(n * 64).astype(np.float32)
        if ggml_type == GgmlType.BF16:
            return (x.view("<u4") >> 16).astype("<u2").view(np.uint8)
        return x.astype(PLAIN[ggml_type]).view(np.uint8)
    blocks = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    for at in F16_FIELDS[ggml_type]:
        blocks[:, at : at + 2] = (rng.standard_normal((n, 1)) * 0.02).astype("<f2").view(np.uint8)
    return blocks.reshape(-1)


def assert_bit_equal(mine: np.ndarray, oracle: np.ndarray) -> None:
    oracle = np.ascontiguousarray(oracle, dtype=np.float32).reshape(-1)
    assert mine.dtype == np.float32 and mine.shape == oracle.shape
    mismatch = np.flatnonzero(mine.view(np.uint32) != oracle.view(np.uint32))
    assert mismatch.size == 0, (
        f"{mismatch.size} values differ, first at {mismatch[0]}: {mine[mismatch[0]]} vs {oracle[mismatch[0]]}"
    )


@pytest.mark.parametrize("ggml_type", sorted(t for t in SUPPORTED if t != GgmlType.F64), ids=lambda t: t.name)
@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_blocks_match_gguf_py(ggml_type: GgmlType, seed: int) -> None:
    raw = synthetic_blocks(ggml_type, N_BLOCKS, seed)
    values, nbytes = BLOCK[ggml_type]
    numel = raw.size // nbytes * values
    oracle = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(ggml_type)))
    assert_bit_equal(dequantize(raw, ggml_type, numel), oracle)


@pytest.mark.parametrize("ggml_type", sorted(t for t in SUPPORTED if BLOCK[t][0] > 1), ids=lambda t: t.name)
def test_any_bytes_match_gguf_py_even_nan_and_inf_scales(ggml_type: GgmlType) -> None:
    """Fully random blocks (NaN, inf, subnormal scales): still the same bits, and no warning."""
    raw = np.random.default_rng(7).integers(0, 256, size=300 * BLOCK[ggml_type][1], dtype=np.uint8)
    with np.errstate(all="ignore"):
        oracle = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(ggml_type)))
    assert_bit_equal(dequantize(raw, ggml_type, 300 * BLOCK[ggml_type][0]), oracle)


def test_chunked_path_matches_one_piece() -> None:
    """A tensor larger than one chunk runs on the thread pool; its result is the same."""
    raw = synthetic_blocks(GgmlType.Q6_K, 5000, 3)  # 1.28 M values: five chunks
    oracle = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q6_K)
    assert_bit_equal(dequantize(raw, GgmlType.Q6_K, 5000 * 256), oracle)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python 3.12+
def test_a_forked_child_gets_its_own_pool() -> None:
    """The pool's threads do not survive fork; a child that dequantizes must not wait on them."""
    import multiprocessing

    raw = synthetic_blocks(GgmlType.Q8_0, 40_000, 4)  # several chunks: the pool is used
    parent = dequantize(raw, GgmlType.Q8_0, 40_000 * 32)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child = pool.apply_async(dequantize, (raw, GgmlType.Q8_0, 40_000 * 32)).get(timeout=60)
    assert_bit_equal(child, parent)


def test_f64_widens_exactly() -> None:
    x = np.array([1.5, -2.25, 1e-3], dtype="<f8")
    assert dequantize(x.view(np.uint8), GgmlType.F64, 3).tolist() == x.astype(np.float32).tolist()


def test_block_table_agrees_with_gguf_py() -> None:
    for t, (values, nbytes) in BLOCK.items():
        if t == GgmlType.Q8_1:  # ggml-common.h: 2 x f16 + 32 x int8 = 36; gguf-py says 40 (unused in files)
            assert (values, nbytes) == (32, 36)
            continue
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(int(t))] == (values, nbytes), t.name
        assert gguf.GGMLQuantizationType(int(t)).name == t.name


def test_unsupported_type_and_bad_size_name_the_tensor() -> None:
    raw = np.zeros(66, dtype=np.uint8)
    with pytest.raises(
        FormatError,
        match=r"^m.gguf: tensor 'x': GGML type IQ2_XXS \(16\) has no dequantizer in "
        r"shiptwo \(supported: F32, F16, Q4_0, .*\); requantize the model",
    ):
        dequantize(raw, GgmlType.IQ2_XXS, 256, what="m.gguf: tensor 'x'")
    with pytest.raises(
        FormatError, match=r"^t: 66 bytes do not hold 64 Q8_0 values \(32 values per 34-byte block\)$"
    ):
        dequantize(raw, GgmlType.Q8_0, 64, what="t")


def test_real_tensors_of_every_type_match_gguf_py(qwen_gguf: GgufFile) -> None:
    """The three smallest tensors of each type in the real file, and their shapes as torch tensors."""
    by_type: dict[GgmlType, list[str]] = {}
    for name, t in sorted(qwen_gguf.tensors.items(), key=lambda kv: kv[1].numel):
        by_type.setdefault(t.ggml_type, []).append(name)
    assert set(by_type) == {GgmlType.F32, GgmlType.Q5_0, GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.Q6_K}
    for ggml_type, names in by_type.items():
        for name in names[:3]:
            t = qwen_gguf.tensors[name]
            raw = qwen_gguf.raw(name)
            oracle = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(ggml_type)))
            assert_bit_equal(dequantize(raw, ggml_type, t.numel), oracle)
            tensor = qwen_gguf.dequantize(name)
            assert tuple(tensor.shape) == t.shape and str(tensor.dtype) == "torch.float32"
