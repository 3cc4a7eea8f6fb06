"""Unit tests of the Qwen2 building blocks against their formulas and transformers' pieces."""

from __future__ import annotations

import math

import pytest
import torch

from shiptwo.errors import ModelError
from shiptwo.model import (
    Qwen2,
    Qwen2Config,
    RMSNorm,
    apply_rope,
    flops_per_token,
    ln_vocab,
    max_rel_err,
    rope_cos_sin,
    stage_names,
)

TINY = Qwen2Config(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                   intermediate_size=48)


def test_rmsnorm_matches_formula_in_fp64() -> None:
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 16))
    x = torch.randn(3, 5, 16)
    x64 = x.double()
    expected = x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight.double()
    assert max_rel_err(norm(x), expected) < 1e-6


def test_rope_rotates_pairs_i_and_i_plus_half_by_position_angle() -> None:
    d, t, theta = 8, 5, 10_000.0
    cos, sin = rope_cos_sin(t, d, theta, device=torch.device("cpu"), dtype=torch.float64)
    x = torch.randn(1, 1, t, d, dtype=torch.float64)
    out = apply_rope(x, cos, sin)
    for pos in range(t):
        for i in range(d // 2):
            angle = pos * theta ** (-2 * i / d)
            a, b = x[0, 0, pos, i].item(), x[0, 0, pos, i + d // 2].item()
            assert out[0, 0, pos, i].item() == pytest.approx(a * math.cos(angle) - b * math.sin(angle), abs=1e-6)
            assert out[0, 0, pos, i + d // 2].item() == pytest.approx(b * math.cos(angle) + a * math.sin(angle),
                                                                     abs=1e-6)


def test_rope_matches_transformers_apply_rotary_pos_emb() -> None:
    modeling = pytest.importorskip("transformers.models.qwen2.modeling_qwen2")
    q, k = torch.randn(2, 4, 7, 16), torch.randn(2, 2, 7, 16)
    cos, sin = rope_cos_sin(7, 16, 1e6, device=torch.device("cpu"), dtype=torch.float32)
    ref_q, ref_k = modeling.apply_rotary_pos_emb(q, k, cos[None], sin[None])
    assert torch.allclose(apply_rope(q, cos, sin), ref_q, atol=1e-6)
    assert torch.allclose(apply_rope(k, cos, sin), ref_k, atol=1e-6)


def test_forward_shapes_and_stages() -> None:
    model = Qwen2(TINY)
    logits, hidden = model(torch.randint(0, 64, (3, 9)), return_hidden=True)
    assert logits.shape == (3, 9, 64)
    assert len(hidden) == len(stage_names(TINY.num_layers)) == TINY.num_layers + 2
    assert all(h.shape == (3, 9, 32) for h in hidden)


def test_attention_is_causal() -> None:
    model = Qwen2(TINY).eval()
    ids = torch.randint(0, 64, (1, 10))
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % 64
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.equal(a[0, :6], b[0, :6])
    assert not torch.equal(a[0, 6:], b[0, 6:])


def test_tied_head_is_one_parameter() -> None:
    tied, untied = Qwen2(TINY), Qwen2(Qwen2Config(**{**TINY.__dict__, "tied_embeddings": False}))
    assert tied.lm_head.weight is tied.tok_embeddings.weight
    assert untied.num_params() - tied.num_params() == 64 * 32


def test_fresh_model_predicts_nearly_uniform() -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, 64, (4, 17))
    loss = Qwen2(TINY).loss(ids[:, :-1], ids[:, 1:]).item()
    assert abs(loss - ln_vocab(64)) < 0.05


def test_hf_config_round_trip_and_transformers_spelling() -> None:
    assert Qwen2Config.from_hf(TINY.to_hf()) == TINY
    cfg = Qwen2Config.from_hf({**TINY.to_hf(), "rope_theta": None, "head_dim": None,
                               "rope_parameters": {"rope_theta": 5e5, "rope_type": "default"}})
    assert cfg.rope_theta == 5e5 and cfg.head_dim == 32 // 4


def test_apr_metadata_round_trip() -> None:
    md = TINY.to_apr_metadata()
    assert md["rope_type"] == 2
    assert Qwen2Config.from_apr_metadata(md) == TINY


@pytest.mark.parametrize(("raw", "needle"), [
    ({"hidden_size": 32}, ("config.json: field(s) vocab_size, num_hidden_layers, num_attention_heads, "
                          "intermediate_size missing")),
    ({**TINY.to_hf(), "hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({**TINY.to_hf(), "use_sliding_window": True}, "use_sliding_window=true is not supported"),
    ({**TINY.to_hf(), "rope_scaling": {"rope_type": "yarn", "factor": 4}}, "rope scaling"),
    ({**TINY.to_hf(), "num_key_value_heads": 3}, ("config.json: Qwen2 config: num_heads=4 is not a "
                                                 "multiple of num_kv_heads=3")),
])
def test_bad_hf_config_is_refused_by_name(raw: dict, needle: str) -> None:
    with pytest.raises(ModelError) as err:
        Qwen2Config.from_hf(raw)
    assert needle in str(err.value)


@pytest.mark.parametrize(("md", "needle"), [
    ({"vocab_size": 64}, "metadata lacks hidden_size, num_layers, num_heads, intermediate_size"),
    ({**TINY.to_apr_metadata(), "rope_type": 0}, "rope_type=0; Qwen2 needs 2"),
])
def test_bad_apr_metadata_is_refused_by_name(md: dict, needle: str) -> None:
    with pytest.raises(ModelError) as err:
        Qwen2Config.from_apr_metadata(md, source="m.apr")
    assert needle in str(err.value) and "m.apr" in str(err.value)


def test_nonpositive_config_value_is_refused() -> None:
    with pytest.raises(ModelError, match="hidden_size=0 must be positive"):
        Qwen2Config(hidden_size=0)


def test_flops_per_token_counts_weights_six_times() -> None:
    cfg = TINY
    n = sum(p.numel() for name, p in Qwen2(cfg).named_parameters() if "norm" not in name and "bias" not in name)
    # 6N (the embedding lookup is free, the tied head matmul is not: same count) + attention scores.
    assert flops_per_token(cfg, 1) == pytest.approx(6 * n + 12 * 2 * 4 * 8 / 2)
