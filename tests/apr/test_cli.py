"""`shiptwo apr import|export|inspect|diff`, checked against safetensors and transformers."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file as st_save_file

from shiptwo import apr
from shiptwo.apr.constants import DType
from shiptwo.apr.metadata import metadata_from_config
from shiptwo.apr.testing import make_qwen2_dir, retag, spec_problems
from shiptwo.cli import main


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_qwen2_dir(tmp_path_factory.mktemp("cli") / "hf", dtype="bfloat16", tied=False, seed=7)


@pytest.fixture(scope="module")
def imported(hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-apr") / "m.apr"
    assert main(["apr", "import", str(hf_dir), "-o", str(out)]) == 0
    return out


def test_import_maps_config_json_to_apr_metadata(imported: Path, hf_dir: Path) -> None:
    meta = apr.read_header(imported).metadata
    config = json.loads((hf_dir / "config.json").read_text())
    assert meta["architecture"] == "qwen2" and meta["model_type"] == "qwen2"
    assert meta["hidden_size"] == config["hidden_size"] == 32
    assert meta["num_layers"] == 2 and meta["num_heads"] == 4 and meta["num_kv_heads"] == 2
    assert meta["vocab_size"] == 128 and meta["intermediate_size"] == 48 and meta["head_dim"] == 8
    assert meta["max_position_embeddings"] == 256 and meta["rms_norm_eps"] == 1e-6
    assert meta["rope_theta"] == 1_000_000.0 and meta["rope_type"] == 2
    assert meta["hf_architecture"] == "Qwen2ForCausalLM" and meta["hf_model_type"] == "qwen2"
    assert "tied_embeddings" not in meta and meta["original_format"] == "safetensors"
    assert meta["param_count"] == sum(
        t.numel() for t in st_load_file(str(hf_dir / "model.safetensors")).values()
    )


def test_metadata_from_older_config_keys() -> None:
    meta = metadata_from_config(
        {
            "model_type": "llama",
            "hidden_size": 64,
            "num_attention_heads": 8,
            "rope_theta": 10000,
            "architectures": ["LlamaForCausalLM"],
        }
    )
    assert meta["rope_theta"] == 10000.0 and meta["num_kv_heads"] == 8 and meta["head_dim"] == 8
    assert "rope_type" not in meta  # only families known to use NEOX halves get rope_type 2


def test_sharded_dir_and_single_file_import(hf_dir: Path, tmp_path: Path) -> None:
    sharded = make_qwen2_dir(tmp_path / "sharded", dtype="float16", tied=True, seed=8, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    out = tmp_path / "s.apr"
    assert main(["apr", "import", str(sharded), "-o", str(out)]) == 0
    assert main(["apr", "diff", str(out), str(sharded)]) == 0
    assert apr.read_header(out).metadata["tied_embeddings"] is True

    single = tmp_path / "one.apr"
    assert (
        main(["apr", "import", str(hf_dir / "model.safetensors"), "-o", str(single), "--format", "json"]) == 0
    )
    assert spec_problems(single) == []
    assert apr.read_header(single).metadata["name"] == "model"


def test_inspect_text_json_and_stats(
    imported: Path, hf_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["apr", "inspect", str(imported)]) == 0
    text = capsys.readouterr().out
    assert "flags           0x0400 (LAYOUT_ROW_MAJOR)" in text and "footer crc" in text
    assert "model.norm.weight" in text and "BF16" in text

    assert main(["apr", "inspect", str(imported), "--format", "json", "--stats"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["checksums"]["header"]["ok"] and data["checksums"]["footer"]["ok"]
    assert data["header"]["flag_names"] == ["LAYOUT_ROW_MAJOR"]
    rows = {r["name"]: r for r in data["tensors"]}
    embed = st_load_file(str(hf_dir / "model.safetensors"))["model.embed_tokens.weight"].double()
    row = rows["model.embed_tokens.weight"]
    assert row["dtype"] == "BF16" and row["code"] == 30 and row["shape"] == [128, 32]
    assert row["mean"] == pytest.approx(embed.mean().item(), rel=1e-9)
    assert row["std"] == pytest.approx(embed.std(unbiased=False).item(), rel=1e-9)
    assert (row["min"], row["max"]) == (embed.min().item(), embed.max().item())


def test_diff_names_the_first_bad_tensor_and_its_errors(
    imported: Path, hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tensors = apr.load_file(imported)
    name = "model.layers.0.mlp.up_proj.weight"
    tensors[name] = tensors[name].clone()
    original = tensors[name][0, 0].double().item()
    tensors[name][0, 0] = 2.0
    changed = tmp_path / "changed.apr"
    apr.save_file(tensors, changed, apr.read_header(imported).metadata)
    capsys.readouterr()
    assert main(["apr", "diff", str(changed), str(hf_dir)]) == 1
    out = capsys.readouterr().out
    want_abs, want_rel = abs(2.0 - original), abs(2.0 - original) / abs(original)
    assert (
        f"1 of {len(tensors)} tensors differ from {hf_dir}; first '{name}': mismatch, "
        f"max abs err {want_abs:.6g}, "
        f"max rel err {want_rel:.6g}" in out
    )

    del tensors["model.norm.weight"]
    apr.save_file(tensors, changed)
    assert main(["apr", "diff", str(changed), str(hf_dir), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    statuses = {t["name"]: t["status"] for t in report["tensors"] if t["status"] != "equal"}
    assert statuses == {name: "mismatch", "model.norm.weight": "missing-in-apr"}


def test_diff_diagnoses_f16_bytes_tagged_bf16(
    hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_qwen2_dir(tmp_path / "f16", dtype="float16", tied=False, seed=9)
    out = tmp_path / "m.apr"
    assert main(["apr", "import", str(src), "-o", str(out)]) == 0
    bad = retag(out, tmp_path / "bad.apr", names=["model.norm.weight"], src=DType.F16, dst=DType.BF16)
    capsys.readouterr()
    assert main(["apr", "diff", str(bad), str(src)]) == 1
    assert "bytes decode to the source exactly as F16 but are tagged BF16" in capsys.readouterr().out


def test_diff_within_rounding_of_an_f32_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = {"w": torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) * 0.05}
    st_save_file(source, str(tmp_path / "w.safetensors"))
    bits = source["w"].bfloat16().view(torch.int16).numpy().tobytes()
    from shiptwo.apr.writer import RawTensor, write_raw

    write_raw(tmp_path / "w.apr", [RawTensor("w", DType.F16, (64, 8), bits)])
    assert main(["apr", "diff", str(tmp_path / "w.apr"), str(tmp_path / "w.safetensors")]) == 1
    assert "bytes decode to the source as BF16 within BF16 rounding" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "v1.apr"
    path.write_bytes(b"APRN" + bytes(60))
    assert main(["apr", "inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: magic: found b'APRN'") and err.count("\n") == 1 and "APR v1" in err

    st_save_file({"m": torch.zeros(2, dtype=torch.bool)}, str(tmp_path / "b.safetensors"))
    assert main(["apr", "import", str(tmp_path / "b.safetensors"), "-o", str(tmp_path / "b.apr")]) == 1
    assert "tensor 'm': dtype BOOL has no APR code" in capsys.readouterr().err

    untied = tmp_path / "untied"
    untied.mkdir()
    (untied / "config.json").write_text(json.dumps({"model_type": "qwen2", "tie_word_embeddings": False}))
    st_save_file({"model.embed_tokens.weight": torch.zeros(2, 2)}, str(untied / "model.safetensors"))
    assert main(["apr", "import", str(untied), "-o", str(tmp_path / "u.apr")]) == 1
    assert (
        "lm_head.weight is missing but config.json says tie_word_embeddings: false" in capsys.readouterr().err
    )

    assert main(["apr", "import", str(tmp_path / "nowhere"), "-o", str(tmp_path / "n.apr")]) == 2


def test_export_dequantizes_and_keeps_tied_copy_on_request(tmp_path: Path) -> None:
    from shiptwo.apr.testing import spec_file

    q8 = struct.pack("<f", 0.5) + bytes([2, 0xFE])
    embed = struct.pack("<2e", 1.0, 2.0)
    image = spec_file(
        [
            ("lm_head.weight", 1, [1, 2], embed),
            ("model.embed_tokens.weight", 1, [1, 2], embed),
            ("q", 129, [2], q8),
        ],
        b'{"tied_embeddings":true}',
    )
    (tmp_path / "q.apr").write_bytes(image)
    assert main(["apr", "export", str(tmp_path / "q.apr"), "-o", str(tmp_path / "q.safetensors")]) == 0
    out = st_load_file(str(tmp_path / "q.safetensors"))
    assert sorted(out) == ["model.embed_tokens.weight", "q"] and out["q"].tolist() == [1.0, -1.0]
    assert (
        main(
            [
                "apr",
                "export",
                str(tmp_path / "q.apr"),
                "-o",
                str(tmp_path / "k.safetensors"),
                "--keep-tied-copy",
            ]
        )
        == 0
    )
    assert "lm_head.weight" in st_load_file(str(tmp_path / "k.safetensors"))


def test_cli_registration_imports_neither_numpy_nor_torch() -> None:
    code = (
        "import sys, argparse; import shiptwo.apr.cli as c; p = argparse.ArgumentParser(); "
        "c.register(p.add_subparsers()); print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_numpy_array_round_trip_without_torch(tmp_path: Path) -> None:
    arrays: dict[str, np.ndarray] = {
        "a": np.arange(6, dtype=np.int16).astype(np.float32).reshape(2, 3),
        "b": np.array([1, -1], np.int8),
    }
    apr.save_file(arrays, tmp_path / "n.apr")
    back = apr.load_arrays(tmp_path / "n.apr")
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in arrays.items())


def test_output_that_is_a_directory_or_under_a_file_is_one_line_exit_2(
    imported: Path, hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["apr", "import", str(hf_dir), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {tmp_path}: is a directory; give the output file's path, e.g. {tmp_path / 'model.apr'}\n"
    )
    assert main(["apr", "export", str(imported), "-o", str(tmp_path)]) == 2
    assert f"error: {tmp_path}: is a directory" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["apr", "import", str(hf_dir), "-o", str(blocker / "m.apr")]) == 2
    err = capsys.readouterr().err
    assert (
        f"{blocker / 'm.apr'}: its parent {blocker} is a file, not a directory" in err
        and err.count("\n") == 1
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no temp file left behind


def test_export_uses_a_unique_temp_file_and_removes_it_on_failure(
    imported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shiptwo.apr import stwriter

    stale = tmp_path / ".out.safetensors.tmp"  # the old fixed temp name: must be neither used nor removed
    stale.write_text("someone else's")

    def disk_full(_fd: int) -> None:  # the bytes are written; making them durable fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stwriter.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        apr_convert_export(imported, tmp_path / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.safetensors.tmp"]
    assert stale.read_text() == "someone else's"
    monkeypatch.undo()
    assert apr_convert_export(imported, tmp_path / "out.safetensors") > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.safetensors.tmp", "out.safetensors"]
    assert (tmp_path / "out.safetensors").stat().st_mode & 0o777 == 0o644


def apr_convert_export(src: Path, out: Path) -> int:
    from shiptwo.apr.convert import export_model

    return export_model(src, out)


def test_inspect_notes_the_aprender_lz4_quirk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shiptwo.apr.testing import spec_file

    path = tmp_path / "quirk.apr"
    path.write_bytes(spec_file([("w", 0, [2], struct.pack("<2f", 1.0, 2.0))], b"{}", flags=0x0401))
    assert main(["apr", "inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "flags           0x0401 (LZ4" in text
    assert "note            LZ4 flag set but payload uncompressed (aprender writer quirk)" in text
    assert main(["apr", "inspect", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == [
        "LZ4 flag set but payload uncompressed (aprender writer quirk)"
    ]


def test_qwen2_config_without_rope_theta_imports_transformers_default() -> None:
    """An HF dir follows transformers (Qwen2Config default 10000.0); the APR file then states it."""
    meta = metadata_from_config({"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 8})
    assert meta["rope_theta"] == 10_000.0
    assert "rope_theta" not in metadata_from_config({"model_type": "llama", "hidden_size": 64})
