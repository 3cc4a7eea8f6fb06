"""The seeds' defects, planted on purpose into real weights: the controls of the model falsifiers.

Each defect is written the way the real bug looked in the project that shipped it, and applies
either to tensors in memory (a falsifier's control plants it into the model it just loaded) or to
a copy of a Hugging Face snapshot on disk (`shiptwo models plant-defect`), so a user can point
`$SHIPTWO_QWEN_DIR` at the copy and watch the suite go red.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiptwo.apr.constants import EMBED, LM_HEAD
from shiptwo.errors import FormatError, UsageError

Tensors = MutableMapping[str, Any]  # name -> torch.Tensor, Hugging Face names
SEED = 1234  # the re-drawn tensors are the same on every run, so a measured number repeats


@dataclass(frozen=True)
class Defect:
    """One planted defect: what it does, and the seed finding it replays."""

    name: str
    description: str
    seed: str
    plant: Callable[[Tensors, dict[str, Any]], None]  # edits tensors and config in place


def _bf16_as_f16(tensors: Tensors, config: dict[str, Any]) -> None:
    import torch

    for name, t in tensors.items():
        if t.dtype == torch.bfloat16:
            tensors[name] = t.view(torch.float16)  # the same bytes, read with the wrong exponent width


def _layers(config: dict[str, Any]) -> range:
    return range(int(config["num_hidden_layers"]))


def _qkv_bias_random(tensors: Tensors, config: dict[str, Any]) -> None:
    import torch

    gen = torch.Generator().manual_seed(SEED)
    for n in _layers(config):
        for proj in ("q_proj", "k_proj", "v_proj"):
            name = f"model.layers.{n}.self_attn.{proj}.bias"
            t = tensors[name]
            # A fresh init's N(0, 0.02), as if the loader never reached these tensors.
            tensors[name] = (torch.randn(t.shape, generator=gen) * 0.02).to(t.dtype)


def _transpose_square(tensors: Tensors, config: dict[str, Any]) -> None:
    for n in _layers(config):
        for proj in ("q_proj", "o_proj"):  # square [hidden, hidden]: the shape check cannot see it
            name = f"model.layers.{n}.self_attn.{proj}.weight"
            tensors[name] = tensors[name].t().contiguous()


def _tied_head_random(tensors: Tensors, config: dict[str, Any]) -> None:
    import torch

    embed = tensors[EMBED]
    gen = torch.Generator().manual_seed(SEED)
    tensors[LM_HEAD] = (torch.randn(embed.shape, generator=gen) * 0.02).to(embed.dtype)
    config["tie_word_embeddings"] = False


def _rope_theta_default(tensors: Tensors, config: dict[str, Any]) -> None:
    config["rope_theta"] = 10_000.0  # the library default a loader falls back to when it drops the key


def _rms_eps_wrong(tensors: Tensors, config: dict[str, Any]) -> None:
    config["rms_norm_eps"] = 1e-2


DEFECTS: dict[str, Defect] = {
    d.name: d
    for d in (
        Defect(
            "bf16-as-f16",
            "BF16 weight bytes decoded as F16",
            "APR dtype mislabel (BF16 tagged F16)",
            _bf16_as_f16,
        ),
        Defect(
            "qkv-bias-random",
            "q/k/v biases left at a fresh N(0, 0.02) init",
            "H2: Q/K/V biases never loaded",
            _qkv_bias_random,
        ),
        Defect(
            "transpose-square",
            "q_proj and o_proj transposed in every layer",
            "H4: a square weight stored column-major",
            _transpose_square,
        ),
        Defect(
            "tied-head-random",
            "the head untied from the embedding and left at a random init",
            "tied lm_head left random",
            _tied_head_random,
        ),
        Defect(
            "rope-theta-default",
            "rope_theta 1e6 replaced by the 1e4 default",
            "wrong rope theta",
            _rope_theta_default,
        ),
        Defect(
            "rms-eps-wrong", "rms_norm_eps 1e-6 replaced by 1e-2", "wrong RMSNorm epsilon", _rms_eps_wrong
        ),
    )
}


def defect(name: str) -> Defect:
    """The defect of that name; a UsageError listing the names that exist otherwise."""
    try:
        return DEFECTS[name]
    except KeyError:
        raise UsageError(f"no defect named {name!r}; known: {', '.join(DEFECTS)}") from None


def plant(name: str, tensors: Tensors, config: dict[str, Any]) -> None:
    """Plant defect `name` into Hugging Face-named tensors and a config.json dict, in place."""
    defect(name).plant(tensors, config)


def plant_into_model(name: str, model: Any) -> Any:
    """A copy of a loaded `shiptwo.qwen2.model.Qwen2` with defect `name` planted; the model is untouched.

    Goes through the checkpoint key table both ways, so the defect lands exactly where a loader
    bug would have put it. A BF16-as-F16 defect is applied to the weights rounded to BF16 (what
    the snapshot on disk holds) and decoded back to the model's dtype.
    """
    import torch

    from shiptwo.qwen2.checkpoint import from_state, state_for_checkpoint

    dtype = next(model.parameters()).dtype
    tensors: dict[str, Any] = dict(state_for_checkpoint(model))
    if name == "bf16-as-f16":
        tensors = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
    config = model.config.to_hf()
    plant(name, tensors, config)
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    return from_state(
        config, tensors, device=next(model.parameters()).device, dtype=dtype, source=f"defect {name}"
    )


def write_defective_snapshot(src: Path, out: Path, name: str) -> None:
    """Copy the snapshot `src` to `out` with defect `name` planted, as a loader bug would have left it.

    BF16-as-F16 rewrites only the safetensors header's dtype tags (the bytes stay BF16), which is
    exactly the seeds' mislabel; the other defects rewrite the weights or config.json.
    """
    import torch
    from safetensors.torch import load_file

    from shiptwo.apr.stwriter import save_safetensors

    defect(name)
    if out.exists():
        raise UsageError(f"{out}: already exists; choose a new directory for the defective copy")
    weights = src / "model.safetensors"
    if not weights.is_file() or not (src / "config.json").is_file():
        raise FormatError(f"{src}: not a snapshot with config.json and model.safetensors")
    out.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy2(f, out / f.name)
    if name == "bf16-as-f16":
        _retag_safetensors(weights, out / "model.safetensors", {"BF16": "F16"})
        return
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    tensors: dict[str, torch.Tensor] = load_file(str(weights))
    plant(name, tensors, config)
    save_safetensors(tensors, out / "model.safetensors", metadata={"format": "pt", "defect": name})
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _retag_safetensors(src: Path, out: Path, retag: dict[str, str]) -> None:
    """Copy a safetensors file with dtype tags replaced and every data byte unchanged."""
    with open(src, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        for key, entry in header.items():
            if key != "__metadata__" and entry.get("dtype") in retag:
                entry["dtype"] = retag[entry["dtype"]]
        encoded = json.dumps(header, separators=(",", ":")).encode()
        # The data offsets are relative to the header's end, so any header length works; pad to 8.
        encoded += b" " * (-len(encoded) % 8)
        with open(out, "wb") as o:
            o.write(struct.pack("<Q", len(encoded)))
            o.write(encoded)
            shutil.copyfileobj(f, o, 8 << 20)
