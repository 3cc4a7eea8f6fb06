"""Compare an APR v2 file with its safetensors source, element by element, and diagnose mislabels.

The seeds' H4 defect was BF16 bytes tagged F16: every value decoded wrong while NaN/Inf checks
passed. A value comparison against the source catches it, and decoding the stored bytes under
the other same-width dtypes names it: "bytes decode to the source exactly as BF16 but are
tagged F16".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shiptwo.apr.constants import EMBED, LM_HEAD, NUMPY_TYPESTR, PLAIN_ITEMSIZE, DType
from shiptwo.apr.convert import SourceTensor, open_source
from shiptwo.apr.decode import decode_array
from shiptwo.apr.reader import AprFile
from shiptwo.apr.records import TensorInfo

if TYPE_CHECKING:
    import numpy as np

# Elements compared per step, so a 150k x 896 embedding never needs a float64 copy at once.
_CHUNK = 1 << 22
# Float dtypes of each width: the candidates a mislabeled tensor may really be.
_SAME_WIDTH = {2: (DType.BF16, DType.F16), 4: (DType.F32,), 8: (DType.F64,)}
# Relative rounding of each float dtype (half an ulp at 1.0).
_ROUNDING = {DType.BF16: 2.0**-8, DType.F16: 2.0**-11, DType.F32: 2.0**-24, DType.F64: 2.0**-53}


@dataclass(frozen=True)
class TensorDiff:
    """The comparison of one tensor; `ok` is False for any value, shape or presence mismatch."""

    name: str
    status: str  # equal | tied-copy | mismatch | mislabel | shape | missing-in-apr | missing-in-source
    apr_dtype: str | None
    source_dtype: str | None
    shape: tuple[int, ...] | None
    max_abs: float = 0.0
    max_rel: float = 0.0
    mismatched: int = 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("equal", "tied-copy")


@dataclass(frozen=True)
class DiffReport:
    """Every tensor's comparison; `ok` only when all are equal."""

    apr_path: str
    source_path: str
    tensors: tuple[TensorDiff, ...]

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tensors)

    @property
    def first_bad(self) -> TensorDiff | None:
        return next((t for t in self.tensors if not t.ok), None)

    def summary(self) -> str:
        """One line: the verdict and, on failure, the first bad tensor with its errors and diagnosis."""
        bad = [t for t in self.tensors if not t.ok]
        if not bad:
            return f"{self.apr_path}: all {len(self.tensors)} tensors equal {self.source_path}"
        t = bad[0]
        line = (
            f"{self.apr_path}: {len(bad)} of {len(self.tensors)} tensors differ from {self.source_path}; "
            f"first {t.name!r}: {t.status}"
        )
        if t.status in ("mismatch", "mislabel"):
            line += f", max abs err {t.max_abs:.6g}, max rel err {t.max_rel:.6g}"
        if t.note:
            line += f"; {t.note}"
        return line


def _values(raw: Any, dtype: DType, lo: int, hi: int) -> np.ndarray:
    """Elements [lo, hi) of a plain-dtype byte view, as float64."""
    import numpy as np

    arr = np.frombuffer(raw, dtype=NUMPY_TYPESTR[dtype], count=hi - lo, offset=lo * PLAIN_ITEMSIZE[dtype])
    if dtype is DType.BF16:
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float64)


def _errors(a: np.ndarray, s: np.ndarray) -> tuple[float, float, int]:
    """(max abs error, max rel error, count of unequal elements); NaN equals NaN."""
    import numpy as np

    both_nan = np.isnan(a) & np.isnan(s)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(a - s)
        diff[both_nan] = 0.0
        diff[np.isnan(diff)] = np.inf  # one side NaN, or inf - inf of opposite signs
        same_inf = (a == s) & np.isinf(s)
        diff[same_inf] = 0.0
        unequal = int(np.count_nonzero(diff))
        if not unequal:
            return 0.0, 0.0, 0
        rel = np.where(s != 0, diff / np.abs(s), np.where(diff > 0, np.inf, 0.0))
    return float(diff.max()), float(rel.max()), unequal


def _compare(decode_a: Any, decode_s: Any, numel: int) -> tuple[float, float, int]:
    max_abs = max_rel = 0.0
    unequal = 0
    for lo in range(0, numel, _CHUNK):
        hi = min(numel, lo + _CHUNK)
        a, r, n = _errors(decode_a(lo, hi), decode_s(lo, hi))
        max_abs, max_rel, unequal = max(max_abs, a), max(max_rel, r), unequal + n
    return max_abs, max_rel, unequal


def compare_tensor(
    apr: AprFile, info: TensorInfo, src: SourceTensor, *, name: str | None = None, note: str = ""
) -> TensorDiff:
    """Compare one APR tensor with one source tensor; diagnose a same-width dtype mislabel."""
    import numpy as np

    label = name or info.name
    if info.shape != src.shape:
        return TensorDiff(
            label,
            "shape",
            info.dtype.name,
            src.dtype.name,
            info.shape,
            note=f"APR shape {list(info.shape)}, source shape {list(src.shape)}",
        )
    numel = info.numel
    raw = memoryview(apr._mmap)[info.start : info.start + info.size]
    equal_ok = "tied-copy" if note else "equal"
    if info.dtype is src.dtype and np.array_equal(
        np.frombuffer(raw, np.uint8), np.frombuffer(src.data, np.uint8)
    ):
        return TensorDiff(label, equal_ok, info.dtype.name, src.dtype.name, info.shape, note=note)

    def source_values(lo: int, hi: int) -> np.ndarray:
        return _values(src.data, src.dtype, lo, hi)

    if info.dtype in PLAIN_ITEMSIZE:

        def apr_values(lo: int, hi: int) -> np.ndarray:
            return _values(raw, info.dtype, lo, hi)
    else:
        dequantized = decode_array(info, apr._mmap).reshape(-1)

        def apr_values(lo: int, hi: int) -> np.ndarray:
            return dequantized[lo:hi].astype(np.float64)

    max_abs, max_rel, unequal = _compare(apr_values, source_values, numel)
    if not unequal:
        widened = f"values equal; stored as {info.dtype.name}, source is {src.dtype.name}"
        return TensorDiff(
            label,
            equal_ok,
            info.dtype.name,
            src.dtype.name,
            info.shape,
            note="; ".join(x for x in (note, widened) if x),
        )

    diagnosis = _diagnose_mislabel(raw, info, src, source_values)
    status = "mislabel" if diagnosis else "mismatch"
    return TensorDiff(
        label,
        status,
        info.dtype.name,
        src.dtype.name,
        info.shape,
        max_abs,
        max_rel,
        unequal,
        "; ".join(x for x in (note, diagnosis) if x),
    )


def _diagnose_mislabel(raw: memoryview, info: TensorInfo, src: SourceTensor, source_values: Any) -> str:
    if info.dtype not in PLAIN_ITEMSIZE:
        return ""
    width = PLAIN_ITEMSIZE[info.dtype]
    for alt in _SAME_WIDTH.get(width, ()):
        if alt is info.dtype:
            continue

        def alt_values(lo: int, hi: int, alt: DType = alt) -> Any:
            return _values(raw, alt, lo, hi)

        _, rel, unequal = _compare(alt_values, source_values, info.numel)
        if not unequal:
            return f"bytes decode to the source exactly as {alt.name} but are tagged {info.dtype.name}"
        if rel <= _ROUNDING[alt]:
            return (
                f"bytes decode to the source as {alt.name} within {alt.name} rounding "
                f"(max rel err {rel:.3g}) "
                f"but are tagged {info.dtype.name}"
            )
    return ""


def diff(apr_path: str | os.PathLike[str], source_path: str | os.PathLike[str]) -> DiffReport:
    """Compare every tensor of an APR file with a .safetensors file or an HF model dir.

    A tied `lm_head.weight` (copy or 0-byte placeholder) in the APR file is compared with the
    source's embedding when the source has no `lm_head.weight` of its own.
    """
    results: list[TensorDiff] = []
    with AprFile(apr_path, framework="np", verify_footer=True) as apr, open_source(source_path) as source:
        for info in apr.info.tensors:
            src = source.tensors.get(info.name)
            if src is None and info.name == LM_HEAD and EMBED in source.tensors:
                if info.is_placeholder:
                    results.append(
                        TensorDiff(
                            info.name,
                            "tied-copy",
                            info.dtype.name,
                            None,
                            info.shape,
                            note=f"0-byte placeholder, tied to {EMBED}",
                        )
                    )
                    continue
                results.append(
                    compare_tensor(
                        apr, info, source.tensors[EMBED], note=f"tied copy of the source's {EMBED}"
                    )
                )
                continue
            if src is None:
                results.append(TensorDiff(info.name, "missing-in-source", info.dtype.name, None, info.shape))
                continue
            if info.is_placeholder:
                results.append(
                    TensorDiff(
                        info.name,
                        "mismatch",
                        info.dtype.name,
                        src.dtype.name,
                        info.shape,
                        note="0-byte placeholder in the APR file, real data in the source",
                    )
                )
                continue
            results.append(compare_tensor(apr, info, src))
        present = set(apr.info.names)
        for name in sorted(set(source.tensors) - present):
            results.append(
                TensorDiff(
                    name, "missing-in-apr", None, source.tensors[name].dtype.name, source.tensors[name].shape
                )
            )
    return DiffReport(str(apr_path), str(source_path), tuple(results))
