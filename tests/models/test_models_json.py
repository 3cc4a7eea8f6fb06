"""`--format json` of `models verify` and `models plant-defect`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiptwo.cli import main
from shiptwo.models.registry import DEFAULT_QWEN2


def test_verify_json_lists_the_problems_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["models", "verify", "--cache-dir", str(tmp_path / "empty"), "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["model"] == DEFAULT_QWEN2 and doc["ok"] is False
    (problem,) = doc["problems"]
    assert problem.endswith(f"missing; run `shiptwo models fetch {DEFAULT_QWEN2}`")


def test_plant_defect_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    from shiptwo.apr.testing import make_qwen2_dir

    src = make_qwen2_dir(tmp_path / "hf", dtype="bfloat16", tied=True, seed=1)
    out = tmp_path / "bad"
    argv = ["models", "plant-defect", "bf16-as-f16", "--from", str(src), "-o", str(out), "--format", "json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["defect"] == "bf16-as-f16" and doc["output"] == str(out) and doc["source"] == str(src)
    assert doc["seed"] and doc["description"]
    assert (out / "model.safetensors").is_file()
