"""Checkpoint <-> module translation through one declarative key table, and loading/saving.

The table below is the only place a checkpoint name (Hugging Face / APR, which share names) is
tied to a parameter of `shiptwo.qwen2.model.Qwen2`; the reverse direction is derived from it. Loading
demands that every parameter is filled exactly once: a missing, extra (renamed) or mis-shaped
tensor is a `ModelError` that names every offending tensor - the seeds' H2 (q/k/v biases left at
their random init) cannot pass silently. Tied embeddings are explicit: when the config ties them,
the checkpoint's `lm_head.weight` may be absent, 0-byte (aprender's placeholder), or an exact copy
of the embedding; anything else is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shiptwo.apr.constants import EMBED, LM_HEAD
from shiptwo.errors import ModelError
from shiptwo.qwen2.config import read_hf_config
from shiptwo.qwen2.model import Qwen2, Qwen2Config

LAYER = "{n}"  # stands for the layer index in the table


@dataclass(frozen=True)
class KeyRule:
    """One checkpoint tensor name and the module parameter it fills (`{n}` = layer index)."""

    checkpoint: str
    module: str


KEY_TABLE: tuple[KeyRule, ...] = (
    KeyRule(EMBED, "tok_embeddings.weight"),
    KeyRule("model.layers.{n}.input_layernorm.weight", "layers.{n}.attn_norm.weight"),
    KeyRule("model.layers.{n}.self_attn.q_proj.weight", "layers.{n}.attn.q_proj.weight"),
    KeyRule("model.layers.{n}.self_attn.q_proj.bias", "layers.{n}.attn.q_proj.bias"),
    KeyRule("model.layers.{n}.self_attn.k_proj.weight", "layers.{n}.attn.k_proj.weight"),
    KeyRule("model.layers.{n}.self_attn.k_proj.bias", "layers.{n}.attn.k_proj.bias"),
    KeyRule("model.layers.{n}.self_attn.v_proj.weight", "layers.{n}.attn.v_proj.weight"),
    KeyRule("model.layers.{n}.self_attn.v_proj.bias", "layers.{n}.attn.v_proj.bias"),
    KeyRule("model.layers.{n}.self_attn.o_proj.weight", "layers.{n}.attn.o_proj.weight"),
    KeyRule("model.layers.{n}.post_attention_layernorm.weight", "layers.{n}.mlp_norm.weight"),
    KeyRule("model.layers.{n}.mlp.gate_proj.weight", "layers.{n}.mlp.gate_proj.weight"),
    KeyRule("model.layers.{n}.mlp.up_proj.weight", "layers.{n}.mlp.up_proj.weight"),
    KeyRule("model.layers.{n}.mlp.down_proj.weight", "layers.{n}.mlp.down_proj.weight"),
    KeyRule("model.norm.weight", "norm.weight"),
    KeyRule(LM_HEAD, "lm_head.weight"),
)


def checkpoint_to_module(cfg: Qwen2Config) -> dict[str, str]:
    """Checkpoint name -> module parameter name for this config; a tied head is not in it."""
    names: dict[str, str] = {}
    for rule in KEY_TABLE:
        if rule.checkpoint == LM_HEAD and cfg.tied_embeddings:
            continue  # the head is the embedding Parameter; filling it twice is what we forbid
        layers = range(cfg.num_layers) if LAYER in rule.checkpoint else (None,)
        for n in layers:
            ck = rule.checkpoint if n is None else rule.checkpoint.replace(LAYER, str(n))
            names[ck] = rule.module if n is None else rule.module.replace(LAYER, str(n))
    return names


def module_to_checkpoint(cfg: Qwen2Config) -> dict[str, str]:
    """Module parameter name -> checkpoint name: the table read backwards."""
    return {m: c for c, m in checkpoint_to_module(cfg).items()}


def _check_table_covers(model: Qwen2, table: Mapping[str, str]) -> None:
    params = {name for name, _ in model.named_parameters()}
    targets = set(table.values())
    if params != targets:
        # A programming error in this file or the model, never the user's checkpoint.
        raise ModelError(
            f"key table out of step with the model: parameters without a rule "
            f"{sorted(params - targets)}, rules without a parameter {sorted(targets - params)}"
        )


def _is_placeholder(t: torch.Tensor | None) -> bool:
    return t is None or t.numel() == 0


def load_state(model: Qwen2, tensors: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Fill every parameter of `model` from checkpoint-named `tensors`, exactly once.

    Raises ModelError listing every missing, extra and mis-shaped tensor at once. Values are cast
    to each parameter's dtype and device; the model may live on the meta device.
    """
    cfg = model.config
    table = checkpoint_to_module(cfg)
    _check_table_covers(model, table)
    params = dict(model.named_parameters())
    tensors = dict(tensors)
    problems: list[str] = []
    if cfg.tied_embeddings and LM_HEAD in tensors:
        head, emb = tensors.pop(LM_HEAD), tensors.get(EMBED)
        if (
            not _is_placeholder(head)
            and emb is not None
            and (head.shape != emb.shape or not torch.equal(head.to(emb.dtype), emb))
        ):
            problems.append(
                f"'{LM_HEAD}' differs from '{EMBED}' although the config ties them "
                "(set tied_embeddings/tie_word_embeddings to false to load it as its own head)"
            )
    missing = [k for k in table if k not in tensors or _is_placeholder(tensors[k])]
    extra = sorted(k for k in tensors if k not in table)
    problems += [f"missing tensor '{k}' (for parameter '{table[k]}')" for k in missing]
    problems += [
        f"unexpected tensor '{k}' (no parameter takes it; renamed or from another architecture?)"
        for k in extra
    ]
    for ck, mod in table.items():
        t = tensors.get(ck)
        if t is not None and not _is_placeholder(t) and tuple(t.shape) != tuple(params[mod].shape):
            problems.append(
                f"tensor '{ck}' has shape {list(t.shape)}, parameter '{mod}' needs {list(params[mod].shape)}"
            )
    if problems:
        raise ModelError(f"{source}: checkpoint does not fit Qwen2 {_describe(cfg)}: " + "; ".join(problems))
    for ck, mod in table.items():
        owner_name, _, leaf = mod.rpartition(".")
        owner = model.get_submodule(owner_name)
        old = params[mod]
        value = tensors[ck].to(device=old.device if old.device.type != "meta" else "cpu", dtype=old.dtype)
        setattr(owner, leaf, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))
    if cfg.tied_embeddings:
        model.tie_weights()


def _describe(cfg: Qwen2Config) -> str:
    return (
        f"(vocab {cfg.vocab_size}, hidden {cfg.hidden_size}, {cfg.num_layers} layers, "
        f"tied={cfg.tied_embeddings})"
    )


def state_for_checkpoint(model: Qwen2) -> dict[str, torch.Tensor]:
    """Checkpoint-named tensors of `model` (detached, contiguous, on CPU); a tied head is left out."""
    params = dict(model.named_parameters())
    return {
        ck: params[mod].detach().to("cpu").contiguous()
        for mod, ck in module_to_checkpoint(model.config).items()
    }


def read_config(path: str | Path) -> Qwen2Config:
    """The architecture of an `.apr` file or a Hugging Face directory, without loading weights."""
    return _open(Path(path))[0]


def _open(path: Path) -> tuple[Qwen2Config, dict[str, torch.Tensor] | None]:
    if path.is_dir():
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise ModelError(f"{path}: no config.json; a Hugging Face model directory needs one")
        return read_hf_config(cfg_path), None
    from shiptwo.ggml import is_gguf

    if path.is_file() and is_gguf(path):
        return _open_gguf(path)
    if path.suffix == ".apr":
        from shiptwo import apr

        if not path.is_file():
            raise ModelError(f"{path}: no such APR file")
        tensors = apr.load_file(path, device="cpu")
        with apr.safe_open(path) as f:
            md = f.metadata()
        if md.get("tied_embeddings") is None:  # older files: a missing or 0-byte head means tied
            md["tied_embeddings"] = _is_placeholder(tensors.get(LM_HEAD))
        return Qwen2Config.from_apr_metadata(md, source=str(path)), tensors
    raise ModelError(f"{path}: neither a GGUF, an .apr file nor a Hugging Face model directory")


def _open_gguf(path: Path) -> tuple[Qwen2Config, dict[str, torch.Tensor]]:
    """A qwen2 GGUF: its config and every tensor dequantized to float32 under its HF name."""
    from shiptwo.ggml import open_gguf
    from shiptwo.ggml.qwen2 import hf_config_from_gguf, iter_hf_tensors

    with open_gguf(path) as gguf:
        config = hf_config_from_gguf(gguf)
        tensors = {hf_name: gguf.dequantize(t.name) for hf_name, t in iter_hf_tensors(gguf)}
    return Qwen2Config.from_hf(config, source=str(path)), tensors


def _hf_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A Hugging Face directory's tensors, copied out of its shards (those its index names, if any).

    Read by `shiptwo.apr.convert.open_source`, the one reader of an HF directory.
    """
    from shiptwo.apr.convert import open_source
    from shiptwo.apr.decode import copy_tensor

    with open_source(path) as source:
        return {name: copy_tensor(t.data, t.dtype, t.shape) for name, t in source.tensors.items()}


def from_pretrained(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Qwen2:
    """Load a Qwen2 from a GGUF, an `.apr` file or a Hugging Face dir (config.json + *.safetensors).

    Every parameter is filled exactly once through the key table (see `load_state`); weights are
    cast to `dtype` and placed on `device`. The model is returned in eval mode.
    """
    path = Path(path)
    cfg, tensors = _open(path)
    if tensors is None:
        tensors = _hf_tensors(path)
    return _build(cfg, tensors, device=device, dtype=dtype, source=str(path))


def from_state(
    config: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    source: str = "<state>",
) -> Qwen2:
    """A Qwen2 from a config.json dict and Hugging Face-named tensors, checked as `from_pretrained` is."""
    return _build(
        Qwen2Config.from_hf(dict(config), source=source), tensors, device=device, dtype=dtype, source=source
    )


def _build(
    cfg: Qwen2Config,
    tensors: Mapping[str, torch.Tensor],
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    source: str,
) -> Qwen2:
    with torch.device("meta"):  # no random init of weights that are about to be overwritten
        model = Qwen2(cfg)
    model = model.to(dtype=dtype)
    load_state(model, tensors, source=source)
    return model.to(device).eval()


def save_apr(model: Qwen2, path: str | Path, *, metadata: Mapping[str, Any] | None = None) -> None:
    """Write `model` as an APR v2 file; a tied head is written as a physical copy (as aprender does)."""
    from shiptwo import apr

    tensors = state_for_checkpoint(model)
    if model.config.tied_embeddings:
        tensors[LM_HEAD] = tensors[EMBED].clone()
    md = {**model.config.to_apr_metadata(), "param_count": model.num_params(), **(metadata or {})}
    apr.save_file(tensors, str(path), metadata=md)


def save_hf(model: Qwen2, directory: str | Path) -> None:
    """Write `model` as a Hugging Face directory: config.json + model.safetensors."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype = next(model.parameters()).dtype
    cfg = {**model.config.to_hf(), "torch_dtype": str(dtype).removeprefix("torch.")}
    (directory / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    save_file(state_for_checkpoint(model), str(directory / "model.safetensors"), metadata={"format": "pt"})
