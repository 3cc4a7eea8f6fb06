"""The Qwen2 decoder in one file: GQA attention with q/k/v bias, NEOX RoPE, RMSNorm, SwiGLU.

Shape notation used in the comments:
    B batch, T sequence length, C hidden size, V vocab size,
    H query heads, K key/value heads (H % K == 0), D head dim, F MLP (intermediate) size.

The module's parameter names are its own (`tok_embeddings`, `attn_norm`, ...); checkpoints speak
Hugging Face / APR names and are translated by the key table in `shiptwo.qwen2.checkpoint`, so a renamed
or missing tensor can never be silently skipped. Loading: `shiptwo.qwen2.checkpoint.from_pretrained`
(re-exported here as `from_pretrained`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shiptwo.apr.metadata import ROPE_TYPE_NEOX
from shiptwo.errors import ModelError
from shiptwo.qwen2.config import Qwen2Config

__all__ = [
    "ROPE_TYPE_NEOX",
    "Qwen2",
    "Qwen2Config",
    "chunked_cross_entropy",
    "flops_per_token",
    "ln_vocab",
    "max_rel_err",
    "stage_names",
]


class RMSNorm(nn.Module):
    """x / rms(x) * weight, normalised in fp32 and cast back before the weight (as Qwen2 does)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.rms_norm is the same formula in one kernel (bit-identical in fp32, measured) instead of
        # five passes over the activations. Its own weight multiply runs before the cast back, so
        # only an all-fp32 norm may hand it the weight.
        shape = (x.shape[-1],)
        if x.dtype == self.weight.dtype == torch.float32:
            return F.rms_norm(x, shape, self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), shape, eps=self.eps).to(x.dtype)


def rope_cos_sin(
    seq_len: int, head_dim: int, theta: float, *, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, (T, D), computed in fp32 and cast; both halves repeat (NEOX layout)."""
    # Built per call instead of kept as a buffer: `model.to(bfloat16)` would round a buffer.
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (..., D) by position: NEOX pairs dimension i with i + D/2; cos/sin broadcast to x.

    (B, heads, T, D) with (T, D) tables, or (B, T, heads, D) with (T, 1, D) tables.
    """
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    """Causal grouped-query self-attention; q/k/v carry a bias, the output projection does not."""

    def __init__(self, cfg: Qwen2Config) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=True)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        # RoPE before the transpose: on the projections' own contiguous (B, T, heads, D) layout the
        # elementwise passes are streaming reads, not strided ones.
        cos, sin = cos[:, None], sin[:, None]  # (T, 1, D)
        q = apply_rope(self.q_proj(x).view(B, T, self.n_head, self.head_dim), cos, sin).transpose(1, 2)
        k = apply_rope(self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim), cos, sin).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        # q (B, H, T, D), k (B, K, T, D)
        # enable_gqa lets each group of H/K query heads share one k/v head without copying it.
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=self.n_head != self.n_kv_head
        )  # (B, H, T, D)
        out: torch.Tensor = self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))
        return out  # (B, T, C)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: Qwen2Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)  # (B, T, F) each
        # Autograd keeps gate and up for backward, so training may not overwrite them; evaluation
        # reuses gate's memory rather than allocate two more (B, T, F) tensors.
        grad = torch.is_grad_enabled()
        hidden = F.silu(gate) * up if grad else F.silu(gate, inplace=True).mul_(up)
        out: torch.Tensor = self.down_proj(hidden)
        return out  # (B, T, C)


class Block(nn.Module):
    """One pre-norm decoder layer."""

    def __init__(self, cfg: Qwen2Config) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        x = x + self.mlp(self.mlp_norm(x))
        return x


class Qwen2(nn.Module):
    """The Qwen2 causal language model: token ids (B, T) -> logits (B, T, V)."""

    def __init__(self, cfg: Qwen2Config) -> None:
        super().__init__()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tied_embeddings:
            self.tie_weights()
        self.reset_parameters()

    def tie_weights(self) -> None:
        """Make the LM head the embedding matrix itself (one Parameter, two uses)."""
        self.lm_head.weight = self.tok_embeddings.weight

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """A fresh model: weights ~ N(0, std), biases 0, norm weights 1 (logits start near uniform)."""
        for name, p in self.named_parameters():
            if p.device.type == "meta":
                continue
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, std)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (B, T, V); with `targets` (B, T), the mean token cross-entropy instead (see `loss`).

        With `return_hidden`, also the residual stream at every stage: [embeddings, after layer 0,
        ..., after layer L-1, after the final norm], each (B, T, C).
        """
        _B, T = idx.shape
        x = self.tok_embeddings(idx)  # (B, T, C)
        cos, sin = rope_cos_sin(
            T, self.config.head_dim, self.config.rope_theta, device=x.device, dtype=x.dtype
        )  # (T, D) each
        hidden = [x]
        for block in self.layers:
            x = block(x, cos, sin)
            hidden.append(x)
        x = self.norm(x)
        if targets is not None:
            return chunked_cross_entropy(self.lm_head, x.reshape(-1, x.size(-1)), targets.reshape(-1))
        hidden.append(x)
        logits = self.lm_head(x)  # (B, T, V)
        return (logits, hidden) if return_hidden else logits

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean token cross-entropy in nats over every position of every sequence (fp32).

        The logits are never held whole: see `chunked_cross_entropy`.
        """
        loss = self.forward(idx, targets)
        if not isinstance(loss, torch.Tensor):  # keeps the type checker honest; never taken
            raise TypeError("forward returned hidden states without being asked")
        return loss

    def num_params(self) -> int:
        """Distinct parameters (a tied head counts once)."""
        return sum(p.numel() for p in self.parameters())


# Logit elements `chunked_cross_entropy` computes at once: 32 Mi (128 MiB in fp32), about 220 rows
# of a 151,936-entry vocab. Smaller chunks re-read the head matrix once per chunk and got slower
# on CPU; whole (B*T, V) logits plus their log-softmax and gradients were gigabytes per step.
LOSS_CHUNK_ELEMENTS = 1 << 25
# Without autograd nothing is kept for backward, so evaluation takes chunks 8x larger (1 GiB of
# fp32 logits at most): on the real 0.5B model (4 x 256 tokens, 2-core CPU) the small chunks'
# repeated reads of the 136M-parameter head cost 0.9x transformers' eval throughput.
EVAL_CHUNK_ELEMENTS = 1 << 28


# Rows per fp32 log-softmax in evaluation. 32 rows of a 151,936-entry vocab are 19 MiB, a block
# the allocator reuses, where whole (N, V) fp32 logits and log-probabilities were two fresh 622 MiB
# allocations per 4 x 256 batch (measured: 0.25 s instead of 0.35 s fp32, 0.52 s for 0.63 s bf16).
EVAL_SOFTMAX_ROWS = 32


def _ce_sum(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits: torch.Tensor = head(hidden)  # (N, V); the softmax runs in fp32 as before
    if torch.is_grad_enabled():
        return F.cross_entropy(logits.float(), targets.long(), reduction="sum")
    total = logits.new_zeros((), dtype=torch.float32)
    for start in range(0, logits.shape[0], EVAL_SOFTMAX_ROWS):
        rows = slice(start, start + EVAL_SOFTMAX_ROWS)
        total += F.cross_entropy(logits[rows].float(), targets[rows].long(), reduction="sum")
    return total


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `hidden @ weight.T` whose gradients are made chunk by chunk in forward.

    Checkpointing each chunk (the obvious way to hold one chunk of logits at a time) runs the head
    matmul a second time in backward: on the real 0.5B model, 1 x 256 tokens, that cost 2.20 s of
    head against 1.56 s for whole logits (about 8% of the step). Here each chunk's logits become
    its gradient (softmax - one-hot) at once and are multiplied out into the hidden and weight
    gradients; backward only scales them (1.63 s). Under autocast the matmuls run in the autocast
    dtype, as `head(hidden)` would, and the log-softmax in fp32.
    """

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int
    ) -> torch.Tensor:
        kind = hidden.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None  # (N, C)
        grad_weight: torch.Tensor | None = None  # (V, C), in the weight's dtype
        total = hidden.new_zeros((), dtype=torch.float32)
        w = weight.to(dtype)
        with torch.autocast(kind, enabled=False):
            for start in range(0, n, chunk_rows):
                h = hidden[start : start + chunk_rows].to(dtype)  # (n, C)
                t = targets[start : start + chunk_rows].long()  # (n,)
                # fp32 log-softmax, the kernel F.cross_entropy runs: the loss is the same sum.
                logp = torch.log_softmax(F.linear(h, w).float(), dim=-1)  # (n, V)
                total -= logp.gather(1, t[:, None]).sum()
                # d(mean loss)/d logits = (softmax - one_hot(targets)) / N, in logp's memory.
                grad = logp.exp_()
                grad[torch.arange(t.shape[0], device=t.device), t] -= 1.0
                grad_mm = grad.div_(n).to(dtype)  # (n, V)
                if grad_hidden is not None:
                    grad_hidden[start : start + chunk_rows] = grad_mm @ w
                if not want_weight:
                    continue
                if grad_weight is None:  # the first chunk writes it: no zero-filled (V, C) pass
                    grad_weight = (grad_mm.t() @ h).to(weight.dtype)
                elif grad_weight.dtype == dtype:  # accumulate inside the matmul, no (V, C) temporary
                    grad_weight.addmm_(grad_mm.t(), h)
                else:
                    grad_weight.add_(grad_mm.t() @ h)
        # Kept on ctx, not saved for backward: backward scales them in place and lets them go.
        ctx.grads = (grad_hidden, grad_weight)
        return total / n

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.grads is None:
            raise RuntimeError("chunked cross-entropy: backward twice through one loss (retain_graph)")
        grad_hidden, grad_weight = ctx.grads
        ctx.grads = None
        return (
            None if grad_hidden is None else grad_hidden.mul_(grad_out.to(grad_hidden.dtype)),
            None if grad_weight is None else grad_weight.mul_(grad_out.to(grad_weight.dtype)),
            None,
            None,
        )


def chunked_cross_entropy(
    head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, *, chunk_rows: int | None = None
) -> torch.Tensor:
    """Mean cross-entropy of `head(hidden)` (N, V) against `targets` (N,), `chunk_rows` rows at a time.

    Equals `F.cross_entropy(head(hidden).float(), targets)` up to fp32 summation order. With a
    large vocabulary the full logits (and their log-softmax and gradients) are the biggest
    tensors of a step; here only one chunk exists at a time. Under autograd a bias-free
    `nn.Linear` head turns each chunk into its gradients at once (`_LinearCrossEntropy`); any
    other head is checkpointed chunk by chunk, so backward recomputes its logits.
    """
    n = hidden.shape[0]
    grad = torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in head.parameters())
    )
    if chunk_rows is None:
        vocab = int(getattr(head, "out_features", 0)) or 1
        chunk_rows = max(1, (LOSS_CHUNK_ELEMENTS if grad else EVAL_CHUNK_ELEMENTS) // vocab)
    if n <= chunk_rows:
        return (
            _ce_sum(head, hidden, targets) / n
            if not grad
            else F.cross_entropy(head(hidden).float(), targets.long())
        )
    weight = getattr(head, "weight", None)
    if grad and isinstance(head, nn.Linear) and head.bias is None and isinstance(weight, torch.Tensor):
        loss: torch.Tensor = _LinearCrossEntropy.apply(hidden, weight, targets, chunk_rows)
        return loss
    from torch.utils.checkpoint import checkpoint

    total: torch.Tensor | None = None
    for start in range(0, n, chunk_rows):
        h, t = hidden[start : start + chunk_rows], targets[start : start + chunk_rows]
        part = checkpoint(_ce_sum, head, h, t, use_reentrant=False) if grad else _ce_sum(head, h, t)
        total = part if total is None else total + part
    if total is None:  # n == 0 took the first branch; this keeps the type checker honest
        raise ValueError("no rows")
    return total / n


def flops_per_token(cfg: Qwen2Config, seq_len: int) -> float:
    """Training FLOPs per token (6N for the weights plus attention), as in the PaLM appendix."""
    per_layer = (
        cfg.hidden_size * cfg.head_dim * (cfg.num_heads * 2 + cfg.num_kv_heads * 2)
        + 3 * cfg.hidden_size * cfg.intermediate_size
    )
    n = cfg.num_layers * per_layer + cfg.vocab_size * cfg.hidden_size  # the head matmul
    attn = 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len / 2  # causal: half the scores
    return 6 * n + attn


def ln_vocab(vocab_size: int) -> float:
    """Uniform prediction's loss in nats: what a model that learned nothing scores."""
    return math.log(vocab_size)


def stage_names(num_layers: int) -> list[str]:
    """Names of the stages `forward(return_hidden=True)` returns, for reports."""
    return ["embeddings", *(f"layer {i}" for i in range(num_layers)), "final norm"]


def max_rel_err(value: torch.Tensor, ref: torch.Tensor) -> float:
    """max|value - ref| / max|ref| over the whole tensor, computed in fp64 on CPU."""
    v, r = value.detach().to("cpu", torch.float64), ref.detach().to("cpu", torch.float64)
    if v.shape != r.shape:
        raise ModelError(f"cannot compare shapes {list(v.shape)} and {list(r.shape)}")
    scale = r.abs().max().item()
    return (v - r).abs().max().item() / (scale if scale > 0 else 1.0)
