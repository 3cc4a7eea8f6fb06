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
    def from_hf(cls, cfg: Any, *, source: str = "config.json") -> Qwen2Config:
        """Build from a Hugging Face `config.json` dict (transformers 4.x or 5.x spelling).

        Absent optional fields take transformers' Qwen2Config defaults (rope_theta 10000.0,
        max_position_embeddings 32768, rms_norm_eps 1e-6); a field of the wrong type is a
        ModelError naming the file, the field and the value.
        """
        if not isinstance(cfg, Mapping):
            raise ModelError(f"{source}: a JSON {_json_type(cfg)}, expected an object of config fields; "
                             "fix or re-export config.json")
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        missing = [k for k in required if cfg.get(k) is None]
        if missing:
            raise ModelError(f"{source}: field(s) {', '.join(missing)} missing; a Qwen2 config.json needs them")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ModelError(f"{source}: hidden_act={cfg['hidden_act']!r}; only 'silu' (SwiGLU) is Qwen2")
        if cfg.get("use_sliding_window"):
            raise ModelError(f"{source}: use_sliding_window=true is not supported; set it to false")
        rope_key = "rope_parameters" if cfg.get("rope_parameters") is not None else "rope_scaling"
        rope = cfg.get(rope_key) or {}
        if not isinstance(rope, Mapping):
            raise ModelError(f"{source}: field {rope_key}={rope!r}: expected an object or null")
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ModelError(f"{source}: rope scaling {rope!r} is not supported (only default RoPE)")
        f = _Fields(cfg, source=source, what="field")
        # transformers' Qwen2Config default when config.json names no theta (5.x keeps it in rope_parameters).
        theta = f.number("rope_theta") if cfg.get("rope_theta") is not None else (
            _Fields(rope, source=source, what=f"field {rope_key}.").number("rope_theta")
            if rope.get("rope_theta") is not None else 10_000.0)
        heads, hidden = f.positive_integer("num_attention_heads"), f.positive_integer("hidden_size")
        return _named(source, lambda: cls(
            vocab_size=f.integer("vocab_size"),
            hidden_size=hidden,
            num_layers=f.integer("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=f.integer("num_key_value_heads", default=heads),
            head_dim=f.integer("head_dim", default=hidden // heads),
            intermediate_size=f.integer("intermediate_size"),
            max_position_embeddings=f.integer("max_position_embeddings", default=32_768),
            rope_theta=theta,
            rms_norm_eps=f.number("rms_norm_eps", default=1e-6),
            tied_embeddings=f.flag("tie_word_embeddings", default=False),
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
        """Build from APR metadata; `tied_embeddings` may be None when the caller infers it.

        `rope_theta` is required: APR defines no default, and guessing one is how a Qwen2
        (theta 1e6) would silently run with 10,000. A field of the wrong type is a ModelError
        naming the file, the field and the value.
        """
        keys = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "rope_theta")
        missing = [k for k in keys if md.get(k) is None]
        if missing:
            raise ModelError(f"{source}: metadata lacks {', '.join(missing)} (absent or null); re-export the "
                             "model with its architecture fields (APR defines no default for them)")
        rope_type = md.get("rope_type")
        if rope_type is not None and (isinstance(rope_type, bool) or rope_type != ROPE_TYPE_NEOX):
            raise ModelError(f"{source}: metadata rope_type={rope_type!r}; Qwen2 needs {ROPE_TYPE_NEOX} "
                             "(the integer code of NEOX halves); fix the metadata")
        f = _Fields(md, source=source, what="metadata")
        heads, hidden = f.positive_integer("num_heads"), f.positive_integer("hidden_size")
        return _named(source, lambda: cls(
            vocab_size=f.integer("vocab_size"), hidden_size=hidden, num_layers=f.integer("num_layers"),
            num_heads=heads, num_kv_heads=f.integer("num_kv_heads", default=heads),
            head_dim=f.integer("head_dim", default=hidden // heads),
            intermediate_size=f.integer("intermediate_size"),
            max_position_embeddings=f.integer("max_position_embeddings", default=32_768),
            rope_theta=f.number("rope_theta"),
            rms_norm_eps=f.number("rms_norm_eps", default=1e-6),
            tied_embeddings=f.flag("tied_embeddings", default=False),
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


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if isinstance(value, int | float) else type(value).__name__)


class _Fields:
    """Typed reads of a config mapping; a wrong type names the file, the field and the value.

    A missing or null field takes `default`; without one it is an error (callers check presence first).
    """

    def __init__(self, data: Mapping[str, Any], *, source: str, what: str) -> None:
        self.data, self.source, self.what = data, source, what

    def _bad(self, key: str, value: Any, expected: str) -> ModelError:
        sep = "" if self.what.endswith(".") else " "
        return ModelError(f"{self.source}: {self.what}{sep}{key}={value!r}: expected {expected}; fix the "
                          f"{'metadata' if self.what == 'metadata' else 'config'}")

    def _get(self, key: str, default: Any) -> Any:
        value = self.data.get(key)
        if value is None:
            if default is None:
                raise self._bad(key, value, "a value (it is required)")
            return default
        return value

    def integer(self, key: str, *, default: int | None = None) -> int:
        value = self._get(key, default)
        # JSON writers may spell an integer 896.0; a bool, a string or 896.5 is not one.
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                isinstance(value, float) and not value.is_integer()):
            raise self._bad(key, value, "an integer")
        return int(value)

    def positive_integer(self, key: str) -> int:
        value = self.integer(key)
        if value <= 0:
            raise self._bad(key, value, "a positive integer")
        return value

    def number(self, key: str, *, default: float | None = None) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self._bad(key, value, "a finite number")
        return float(value)

    def flag(self, key: str, *, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(key, value, "true or false")
        return value


def _named(source: str, build: Callable[[], Qwen2Config]) -> Qwen2Config:
    """Build a config, prefixing any error with the file it came from."""
    try:
        return build()
    except ModelError as exc:
        if str(exc).startswith(f"{source}: "):  # a typed field read already named the file
            raise
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

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, return_hidden: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (B, T, V); with `targets` (B, T), the mean token cross-entropy instead (see `loss`).

        With `return_hidden`, also the residual stream at every stage: [embeddings, after layer 0,
        ..., after layer L-1, after the final norm], each (B, T, C).
        """
        _B, T = idx.shape
        x = self.tok_embeddings(idx)  # (B, T, C)
        cos, sin = rope_cos_sin(T, self.config.head_dim, self.config.rope_theta, device=x.device,
                                dtype=x.dtype)  # (T, D) each
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


def _ce_sum(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()  # (N, V), fp32 for the softmax as before
    return F.cross_entropy(logits, targets.long(), reduction="sum")


def chunked_cross_entropy(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, *,
                          chunk_rows: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of `head(hidden)` (N, V) against `targets` (N,), `chunk_rows` rows at a time.

    Equals `F.cross_entropy(head(hidden).float(), targets)` up to fp32 summation order. With a
    large vocabulary the full logits (and their log-softmax and gradients) are the biggest
    tensors of a step; here only one chunk exists at a time. Under autograd each chunk is
    checkpointed, so backward recomputes its logits instead of keeping every chunk's alive.
    """
    n = hidden.shape[0]
    if chunk_rows is None:
        vocab = int(getattr(head, "out_features", 0)) or 1
        chunk_rows = max(1, LOSS_CHUNK_ELEMENTS // vocab)
    if n <= chunk_rows:
        return F.cross_entropy(head(hidden).float(), targets.long())
    from torch.utils.checkpoint import checkpoint

    grad = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    total: torch.Tensor | None = None
    for start in range(0, n, chunk_rows):
        h, t = hidden[start:start + chunk_rows], targets[start:start + chunk_rows]
        part = checkpoint(_ce_sum, head, h, t, use_reentrant=False) if grad else _ce_sum(head, h, t)
        total = part if total is None else total + part
    if total is None:  # n == 0 took the first branch; this keeps the type checker honest
        raise ValueError("no rows")
    return total / n


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
