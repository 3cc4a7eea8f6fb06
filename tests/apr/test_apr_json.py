"""`--format json` of the apr commands: strict JSON a script can parse, on every command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file as st_save_file

from shiptwo import apr
from shiptwo.apr.constants import DType
from shiptwo.apr.testing import make_qwen2_dir
from shiptwo.apr.writer import RawTensor, write_raw
from shiptwo.cli import main


def strict(text: str) -> Any:
    """`text` parsed as JSON, failing on the NaN/Infinity tokens that are not JSON."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in {text}"))


def test_diff_json_holds_an_infinite_relative_error_as_a_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The source holds 0.0 where the APR file holds 1.0: the relative error is infinite.
    st_save_file({"w": torch.tensor([0.0, 2.0])}, str(tmp_path / "w.safetensors"))
    data = torch.tensor([1.0, 2.0]).numpy().tobytes()
    write_raw(tmp_path / "w.apr", [RawTensor("w", DType.F32, (2,), data)])
    assert (
        main(["apr", "diff", str(tmp_path / "w.apr"), str(tmp_path / "w.safetensors"), "--format", "json"])
        == 1
    )
    doc = strict(capsys.readouterr().out)
    (row,) = doc["tensors"]
    assert doc["ok"] is False and row["status"] == "mismatch"
    assert row["max_rel"] == "inf" and row["max_abs"] == 1.0 and row["mismatched"] == 1


def test_export_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_qwen2_dir(tmp_path / "hf", dtype="bfloat16", tied=True, seed=3)
    assert main(["apr", "import", str(src), "-o", str(tmp_path / "m.apr")]) == 0
    capsys.readouterr()
    out = tmp_path / "back.safetensors"
    assert main(["apr", "export", str(tmp_path / "m.apr"), "-o", str(out), "--format", "json"]) == 0
    doc = strict(capsys.readouterr().out)
    assert doc["out"] == str(out) and doc["bytes"] == out.stat().st_size
    assert doc["tensors"] == len(apr.load_file(tmp_path / "m.apr")) - 1  # the tied copy is left out
    assert isinstance(doc["seconds"], float)
