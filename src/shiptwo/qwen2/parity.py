"""Stage-by-stage comparison of our Qwen2 against transformers' own: the bisection the seeds did by hand.

Stages are captured from the transformers model with forward hooks (embeddings, every decoder
layer's raw output, the final norm): in transformers 5.x `output_hidden_states` replaces the last
layer's output with the final-normed one, so the tuple alone cannot name a diverging last layer.
transformers is imported by the caller; this module needs only torch.
"""

from __future__ import annotations

from typing import Any

import torch

from shiptwo.qwen2.model import max_rel_err, stage_names


def reference_stages(model: Any, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and [embeddings, each layer's output, final norm] from a transformers causal LM."""
    captured: list[torch.Tensor] = []

    def keep(_mod: object, _inp: object, out: object) -> None:
        captured.append(out[0] if isinstance(out, tuple) else out)  # type: ignore[arg-type]

    inner = model.model
    hooks = [inner.embed_tokens.register_forward_hook(keep)]
    hooks += [layer.register_forward_hook(keep) for layer in inner.layers]
    hooks.append(inner.norm.register_forward_hook(keep))
    try:
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    # Cross-check the hook reading against transformers' own tuple where both agree by definition.
    assert torch.equal(out.hidden_states[0], captured[0])
    assert torch.equal(out.hidden_states[-1], captured[-1])
    return out.logits, captured


def compare(ours: torch.nn.Module, ref: Any, ids: torch.Tensor) -> tuple[list[float], float, str]:
    """Per-stage rel errors, the logits' rel error, and a one-line report of every stage."""
    with torch.no_grad():
        logits, hidden = ours(ids, return_hidden=True)
    ref_logits, ref_hidden = reference_stages(ref, ids)
    errs = [max_rel_err(a, b) for a, b in zip(hidden, ref_hidden, strict=True)]
    names = stage_names(len(hidden) - 2)
    report = ", ".join(f"{n}: {e:.2e}" for n, e in zip(names, errs, strict=True))
    return errs, max_rel_err(logits, ref_logits), report


def first_over(errs: list[float], limit: float) -> str:
    """The first stage whose error exceeds `limit` (NaN counts as over), or "none"."""
    names = stage_names(len(errs) - 2)
    bad = [n for n, e in zip(names, errs, strict=True) if not e <= limit]
    return bad[0] if bad else "none"
