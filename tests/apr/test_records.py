"""TensorInfo's hand-written __init__ (a fast one for the index parse) keeps the frozen dataclass."""

from __future__ import annotations

import dataclasses

import pytest

from shiptwo.apr.constants import DType
from shiptwo.apr.records import TensorInfo


def test_tensor_info_is_a_frozen_dataclass_with_every_field_set() -> None:
    info = TensorInfo("w", DType.BF16, (2, 3), 64, 12, 256)
    assert dataclasses.astuple(info) == ("w", DType.BF16, (2, 3), 64, 12, 256)
    assert (info.numel, info.is_placeholder) == (6, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.dtype = DType.F16  # type: ignore[misc]
    assert dataclasses.replace(info, dtype=DType.F16) == TensorInfo("w", DType.F16, (2, 3), 64, 12, 256)
    assert hash(info) == hash(TensorInfo("w", DType.BF16, (2, 3), 64, 12, 256))
    assert TensorInfo(name="w", dtype=DType.BF16, shape=(2, 3), offset=64, size=12, start=256) == info
