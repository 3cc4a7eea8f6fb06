"""The Qwen2 decoder in one file: GQA attention with q/k/v bias, NEOX RoPE, RMSNorm, SwiGLU.

Shape notation used in the comments:
    B batch, T sequence length, C hidden size, V vocab size,
    H query heads, K key/value heads (H % K == 0), D head dim, F MLP (intermediate) size.

The module's parameter names are its own (`tok_embeddings`, `attn_norm`, ...); checkpoints speak
Hugging Face / APR names and are translated by the key table in `shiptwo.checkpoint`, so a renamed
or missing tensor can never be silently skipped. Loading: `shiptwo.checkpoint.from_pretrained`
(re-exported here as `from_pretrained`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shiptwo.errors import ModelError

# APR metadata `rope_type`: 0 = adjacent pairs, 2 = NEOX halves (the only one Qwen2 uses).
ROPE_TYPE_NEOX = 2


@dataclass(frozen=True)
class Qwen2Config:
    """The architecture numbers of a Qwen2 decoder (defaults: Qwen2.5-0.5B)."""

    vocab_size: int = 151_936
    hidden_size: int = 896
    num_layers: int = 24
    num_heads: int = 14
    num_kv_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 4_864
    max_position_embeddings: int = 32_768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tied_embeddings: bool = True

    def __post_init__(self) -> None:
        problems = [f"{k}={v}" for k, v in asdict(self).items() if isinstance(v, int | float)
                    and not isinstance(v, bool) and v <= 0]
        if problems:
            raise ModelError(f"Qwen2 config: {', '.join(problems)} must be positive")
        if self.num_heads % self.num_kv_heads:
            raise ModelError(f"Qwen2 config: num_heads={self.num_heads} is not a multiple of "
                             f"num_kv_heads={self.num_kv_heads}; fix the config")
        if self.head_dim % 2:
            raise ModelError(f"Qwen2 config: head_dim={self.head_dim} must be even for RoPE")

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any], *, source: str = "config.json") -> Qwen2Config:
        """Build from a Hugging Face `config.json` dict (transformers 4.x or 5.x spelling)."""
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        missing = [k for k in required if cfg.get(k) is None]
        if missing:
            raise ModelError(f"{source}: field(s) {', '.join(missing)} missing; a Qwen2 config.json needs them")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ModelError(f"{source}: hidden_act={cfg['hidden_act']!r}; only 'silu' (SwiGLU) is Qwen2")
        if cfg.get("use_sliding_window"):
            raise ModelError(f"{source}: use_sliding_window=true is not supported; set it to false")
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ModelError(f"{source}: rope scaling {rope!r} is not supported (only default RoPE)")
        theta = cfg.get("rope_theta") or rope.get("rope_theta") or 10_000.0
        heads, hidden = int(cfg["num_attention_heads"]), int(cfg["hidden_size"])
        return _named(source, lambda: cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(cfg["intermediate_size"]),
            max_position_embeddings=int(cfg.get("max_position_embeddings") or 32_768),
            rope_theta=float(theta),
            rms_norm_eps=float(cfg.get("rms_norm_eps") or 1e-6),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        ))

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face `config.json` dict for this architecture."""
        return {
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads, "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings, "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps, "tie_word_embeddings": self.tied_embeddings,
            "use_sliding_window": False, "attention_dropout": 0.0,
        }

    @classmethod
    def from_apr_metadata(cls, md: Mapping[str, Any], *, source: str = "model.apr") -> Qwen2Config:
        """Build from APR metadata; `tied_embeddings` may be None when the caller infers it."""
        keys = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size")
        missing = [k for k in keys if md.get(k) is None]
        if missing:
            raise ModelError(f"{source}: metadata lacks {', '.join(missing)}; re-export the model "
                             "with its architecture fields")
        rope_type = md.get("rope_type")
        if rope_type is not None and int(rope_type) != ROPE_TYPE_NEOX:
            raise ModelError(f"{source}: metadata rope_type={rope_type}; Qwen2 needs 2 (NEOX halves)")
        heads, hidden = int(md["num_heads"]), int(md["hidden_size"])
        return _named(source, lambda: cls(
            vocab_size=int(md["vocab_size"]), hidden_size=hidden, num_layers=int(md["num_layers"]),
            num_heads=heads, num_kv_heads=int(md.get("num_kv_heads") or heads),
            head_dim=int(md.get("head_dim") or hidden // heads),
            intermediate_size=int(md["intermediate_size"]),
            max_position_embeddings=int(md.get("max_position_embeddings") or 32_768),
            rope_theta=float(md.get("rope_theta") or 10_000.0),
            rms_norm_eps=float(md.get("rms_norm_eps") or 1e-6),
            tied_embeddings=bool(md.get("tied_embeddings", False)),
        ))

    def to_apr_metadata(self) -> dict[str, Any]:
        """The APR metadata keys aprender reads for a Qwen2 model."""
        return {
            "architecture": "qwen2", "hf_architecture": "Qwen2ForCausalLM", "hf_model_type": "qwen2",
            "hidden_size": self.hidden_size, "num_layers": self.num_layers,
            "num_heads": self.num_heads, "num_kv_heads": self.num_kv_heads,
            "vocab_size": self.vocab_size, "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings, "rope_theta": self.rope_theta,
            "rope_type": ROPE_TYPE_NEOX, "rms_norm_eps": self.rms_norm_eps,
            "head_dim": self.head_dim, "tied_embeddings": self.tied_embeddings,
        }


def _named(source: str, build: Callable[[], Qwen2Config]) -> Qwen2Config:
    """Build a config, prefixing any error with the file it came from."""
    try:
        return build()
    except ModelError as exc:
        raise ModelError(f"{source}: {exc}") from exc


class RMSNorm(nn.Module):
    """x / rms(x) * weight, normalised in fp32 and cast back before the weight (as Qwen2 does)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_cos_sin(seq_len: int, head_dim: int, theta: float, *, device: torch.device,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, (T, D), computed in fp32 and cast; both halves repeat (NEOX layout)."""
    # Built per call instead of kept as a buffer: `model.to(bfloat16)` would round a buffer.
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, T, D) by position: NEOX pairs dimension i with i + D/2."""
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
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # enable_gqa lets each group of H/K query heads share one k/v head without copying it.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           enable_gqa=self.n_head != self.n_kv_head)  # (B, H, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))  # (B, T, C)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: Qwen2Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, C) -> (B, T, F) -> (B, T, C)


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

    def forward(self, idx: torch.Tensor, *, return_hidden: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (B, T, V); with `return_hidden`, also the residual stream at every stage:
        [embeddings, after layer 0, ..., after layer L-1, after the final norm], each (B, T, C)."""
        _B, T = idx.shape
        x = self.tok_embeddings(idx)  # (B, T, C)
        cos, sin = rope_cos_sin(T, self.config.head_dim, self.config.rope_theta, device=x.device,
                                dtype=x.dtype)  # (T, D) each
        hidden = [x]
        for block in self.layers:
            x = block(x, cos, sin)
            hidden.append(x)
        x = self.norm(x)
        hidden.append(x)
        logits = self.lm_head(x)  # (B, T, V)
        return (logits, hidden) if return_hidden else logits

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean token cross-entropy in nats over every position of every sequence (fp32)."""
        logits = self.forward(idx)
        if not isinstance(logits, torch.Tensor):  # keeps the type checker honest; never taken
            raise TypeError("forward returned hidden states without being asked")
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1).long())

    def num_params(self) -> int:
        """Distinct parameters (a tied head counts once)."""
        return sum(p.numel() for p in self.parameters())


def flops_per_token(cfg: Qwen2Config, seq_len: int) -> float:
    """Training FLOPs per token (6N for the weights plus attention), as in the PaLM appendix."""
    per_layer = (cfg.hidden_size * cfg.head_dim * (cfg.num_heads * 2 + cfg.num_kv_heads * 2)
                 + 3 * cfg.hidden_size * cfg.intermediate_size)
    n = cfg.num_layers * per_layer + cfg.vocab_size * cfg.hidden_size  # the head matmul
    attn = 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len / 2  # causal: half the scores
    return 6 * n + attn


def ln_vocab(vocab_size: int) -> float:
    """Uniform prediction's loss in nats: what a model that learned nothing scores."""
    return math.log(vocab_size)


def from_pretrained(path: Any, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> Qwen2:
    """Load an `.apr` file or a Hugging Face directory (see `shiptwo.checkpoint.from_pretrained`)."""
    from shiptwo.checkpoint import from_pretrained as _load

    return _load(path, device=device, dtype=dtype)


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
