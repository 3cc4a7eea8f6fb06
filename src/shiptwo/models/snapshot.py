"""A Hugging Face snapshot derived from a GGUF: what transformers and `from_pretrained` read.

The snapshot is written the way the upstream model ships, so the falsifiers meet the same
defect surface a user's download would: BF16 weights and, for Qwen2.5-0.5B, one matrix shared by
the embedding and the head (`tie_word_embeddings: true`, no `lm_head.weight` stored).

Which matrix is tied: a Q4_K_M GGUF stores the head twice over, the embedding at Q5_0 and
`output.weight` at Q8_0, both quantized from the same upstream matrix. The snapshot keeps the
finer one (the head's), because the head is what the loss reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shiptwo.apr.constants import EMBED, LM_HEAD


def write_snapshot(gguf_path: Path, out: Path, *, dtype: str = "bfloat16", tied: bool = True) -> None:
    """Write config.json, generation_config.json, tokenizer files and model.safetensors into `out`."""
    import torch

    from shiptwo.apr.stwriter import save_safetensors
    from shiptwo.ggml import open_gguf
    from shiptwo.ggml.qwen2 import hf_config_from_gguf, iter_hf_tensors
    from shiptwo.ggml.tokenizer import tokenizer_files_from_gguf

    torch_dtype = getattr(torch, dtype)
    out.mkdir(parents=True, exist_ok=True)
    with open_gguf(gguf_path) as gguf:
        config = hf_config_from_gguf(gguf)
        tensors: dict[str, torch.Tensor] = {}
        for hf_name, tensor in iter_hf_tensors(gguf):
            tensors[hf_name] = gguf.dequantize(tensor.name).to(torch_dtype)
        for name, text in tokenizer_files_from_gguf(gguf.metadata).items():
            (out / name).write_text(text, encoding="utf-8")
    if tied:
        head = tensors.pop(LM_HEAD, None)
        if head is not None:
            tensors[EMBED] = head  # the finer copy of the shared matrix (see the module doc)
    elif LM_HEAD not in tensors:
        tensors[LM_HEAD] = tensors[EMBED].clone()
    config = {**config, "tie_word_embeddings": tied, "torch_dtype": dtype}
    _write_json(out / "config.json", config)
    _write_json(
        out / "generation_config.json",
        {
            "bos_token_id": config.get("bos_token_id"),
            "eos_token_id": config.get("eos_token_id"),
            "pad_token_id": config.get("pad_token_id", config.get("bos_token_id")),
            "do_sample": False,
        },
    )
    save_safetensors(tensors, out / "model.safetensors", metadata={"format": "pt", "source": gguf_path.name})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
