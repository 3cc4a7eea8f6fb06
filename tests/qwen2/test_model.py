"""Unit tests of the Qwen2 building blocks against their formulas and transformers' pieces."""

from __future__ import annotations

import math

import pytest
import torch

from shiptwo.errors import ModelError
from shiptwo.qwen2.model import (
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

TINY = Qwen2Config(
    vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=48
)


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
            assert out[0, 0, pos, i].item() == pytest.approx(
                a * math.cos(angle) - b * math.sin(angle), abs=1e-6
            )
            assert out[0, 0, pos, i + d // 2].item() == pytest.approx(
                b * math.cos(angle) + a * math.sin(angle), abs=1e-6
            )


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
    cfg = Qwen2Config.from_hf(
        {
            **TINY.to_hf(),
            "rope_theta": None,
            "head_dim": None,
            "rope_parameters": {"rope_theta": 5e5, "rope_type": "default"},
        }
    )
    assert cfg.rope_theta == 5e5 and cfg.head_dim == 32 // 4


def test_apr_metadata_round_trip() -> None:
    md = TINY.to_apr_metadata()
    assert md["rope_type"] == 2
    assert Qwen2Config.from_apr_metadata(md) == TINY


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (
            {"hidden_size": 32},
            (
                "config.json: field(s) vocab_size, num_hidden_layers, num_attention_heads, "
                "intermediate_size missing"
            ),
        ),
        ({**TINY.to_hf(), "hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({**TINY.to_hf(), "use_sliding_window": True}, "use_sliding_window=true is not supported"),
        ({**TINY.to_hf(), "rope_scaling": {"rope_type": "yarn", "factor": 4}}, "rope scaling"),
        (
            {**TINY.to_hf(), "num_key_value_heads": 3},
            ("config.json: Qwen2 config: num_heads=4 is not a multiple of num_kv_heads=3"),
        ),
        ([1], "config.json: a JSON array, expected an object of config fields; fix or re-export config.json"),
        (
            {**TINY.to_hf(), "num_attention_heads": "four"},
            "config.json: field num_attention_heads='four': expected an integer; fix the config",
        ),
        (
            {**TINY.to_hf(), "num_attention_heads": 0},
            "config.json: field num_attention_heads=0: expected a positive integer; fix the config",
        ),
        ({**TINY.to_hf(), "hidden_size": [32]}, "config.json: field hidden_size=[32]: expected an integer"),
        ({**TINY.to_hf(), "vocab_size": 64.5}, "config.json: field vocab_size=64.5: expected an integer"),
        (
            {**TINY.to_hf(), "rope_theta": "1e6"},
            "config.json: field rope_theta='1e6': expected a finite number",
        ),
        (
            {**TINY.to_hf(), "rope_theta": None, "rope_parameters": {"rope_theta": True}},
            "config.json: field rope_parameters.rope_theta=True: expected a finite number",
        ),
        (
            {**TINY.to_hf(), "rope_scaling": [1]},
            "config.json: field rope_scaling=[1]: expected an object or null",
        ),
        (
            {**TINY.to_hf(), "tie_word_embeddings": "yes"},
            "config.json: field tie_word_embeddings='yes': expected true or false",
        ),
    ],
)
def test_bad_hf_config_is_refused_by_name(raw: dict, needle: str) -> None:
    with pytest.raises(ModelError) as err:
        Qwen2Config.from_hf(raw)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("md", "needle"),
    [
        ({"vocab_size": 64}, "metadata lacks hidden_size, num_layers, num_heads, intermediate_size"),
        ({**TINY.to_apr_metadata(), "rope_type": 0}, "rope_type=0; Qwen2 needs 2"),
        (
            {**TINY.to_apr_metadata(), "rope_type": "neox"},
            "m.apr: metadata rope_type='neox'; Qwen2 needs 2 (the integer code of NEOX halves); "
            "fix the metadata",
        ),
        ({**TINY.to_apr_metadata(), "num_heads": "x"}, "m.apr: metadata num_heads='x': expected an integer"),
        (
            {**TINY.to_apr_metadata(), "hidden_size": [32]},
            "m.apr: metadata hidden_size=[32]: expected an integer",
        ),
        (
            {**TINY.to_apr_metadata(), "num_kv_heads": True},
            "m.apr: metadata num_kv_heads=True: expected an integer",
        ),
        (
            {**TINY.to_apr_metadata(), "rms_norm_eps": "tiny"},
            "m.apr: metadata rms_norm_eps='tiny': expected a finite number; fix the metadata",
        ),
        (
            {**TINY.to_apr_metadata(), "tied_embeddings": "yes"},
            "m.apr: metadata tied_embeddings='yes': expected true or false",
        ),
        (
            {**TINY.to_apr_metadata(), "rope_theta": None},
            (
                "m.apr: metadata lacks rope_theta (absent or null); "
                "re-export the model with its architecture fields "
                "(APR defines no default for them)"
            ),
        ),
        (
            {k: v for k, v in TINY.to_apr_metadata().items() if k != "rope_theta"},
            "m.apr: metadata lacks rope_theta",
        ),
    ],
)
def test_bad_apr_metadata_is_refused_by_name(md: dict, needle: str) -> None:
    with pytest.raises(ModelError) as err:
        Qwen2Config.from_apr_metadata(md, source="m.apr")
    assert needle in str(err.value) and str(err.value).startswith("m.apr: ")
    assert "m.apr: m.apr" not in str(err.value)


def test_hf_config_without_rope_theta_takes_transformers_default() -> None:
    """transformers' Qwen2Config defaults rope_theta to 10000.0 when config.json names none; so do we."""
    transformers = pytest.importorskip("transformers")
    raw = {k: v for k, v in TINY.to_hf().items() if k != "rope_theta"}
    peer = transformers.Qwen2Config(**raw)
    theta = getattr(peer, "rope_theta", None) or peer.rope_parameters["rope_theta"]
    assert Qwen2Config.from_hf(raw).rope_theta == theta == 10_000.0


def test_nonpositive_config_value_is_refused() -> None:
    with pytest.raises(ModelError, match="hidden_size=0 must be positive"):
        Qwen2Config(hidden_size=0)


def test_flops_per_token_counts_weights_six_times() -> None:
    cfg = TINY
    n = sum(
        p.numel() for name, p in Qwen2(cfg).named_parameters() if "norm" not in name and "bias" not in name
    )
    # 6N (the embedding lookup is free, the tied head matmul is not: same count) + attention scores.
    assert flops_per_token(cfg, 1) == pytest.approx(6 * n + 12 * 2 * 4 * 8 / 2)


@pytest.mark.parametrize("grad", [False, True])
def test_chunked_cross_entropy_matches_whole_logits_cross_entropy(grad: bool) -> None:
    """The oracle is torch's own F.cross_entropy over the whole logits, as the loss was computed before."""
    from shiptwo.qwen2.model import chunked_cross_entropy

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(37, 16, requires_grad=grad)
    targets = torch.randint(0, 50, (37,))
    with torch.set_grad_enabled(grad):
        whole = torch.nn.functional.cross_entropy(head(hidden).float(), targets)
        chunked = chunked_cross_entropy(head, hidden, targets, chunk_rows=5)  # 8 chunks, the last short
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-6)
    if grad:
        want = torch.autograd.grad(whole, [hidden, head.weight])
        got = torch.autograd.grad(chunked, [hidden, head.weight])
        for a, b in zip(got, want, strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_model_loss_equals_cross_entropy_of_its_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    from shiptwo.qwen2 import model as model_module

    torch.manual_seed(0)
    m = Qwen2(TINY).eval()
    ids = torch.randint(0, 64, (3, 11))
    targets = torch.randint(0, 64, (3, 11))
    with torch.no_grad():
        logits = m(ids)
        want = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), targets.reshape(-1))
        whole = m.loss(ids, targets)
        monkeypatch.setattr(model_module, "LOSS_CHUNK_ELEMENTS", 64 * 4)  # 4 rows a chunk on a tiny model
        chunked = m.loss(ids, targets)
    assert whole.item() == pytest.approx(want.item(), rel=1e-6)
    assert chunked.item() == pytest.approx(want.item(), rel=1e-6)


def test_training_loss_runs_the_head_matmul_once_per_chunk() -> None:
    """Forward + backward of the chunked loss cost three head matmuls (logits, d hidden, d weight),
    as whole logits would: checkpointed chunks recomputed their logits in backward (a fourth)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from shiptwo.qwen2.model import chunked_cross_entropy

    class MatmulFlops(TorchDispatchMode):
        """2 m n k for every matrix product, in-place accumulating ones (addmm_) included."""

        flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            name = func.overloadpacket.__name__
            if name in ("mm", "addmm", "addmm_"):
                a, b = args[-2], args[-1]
                self.flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
            return func(*args, **(kwargs or {}))

    n, c, v = 37, 16, 50
    head = torch.nn.Linear(c, v, bias=False)
    hidden = torch.randn(n, c, requires_grad=True)
    targets = torch.randint(0, v, (n,))
    with MatmulFlops() as counter:
        chunked_cross_entropy(head, hidden, targets, chunk_rows=5).backward()
    assert counter.flops == 3 * 2 * n * c * v


@pytest.mark.parametrize("wants", ["hidden", "weight"])
def test_chunked_cross_entropy_gradient_of_one_input_only(wants: str) -> None:
    from shiptwo.qwen2.model import chunked_cross_entropy

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False).requires_grad_(wants == "weight")
    hidden = torch.randn(37, 16, requires_grad=wants == "hidden")
    targets = torch.randint(0, 50, (37,))
    leaf = hidden if wants == "hidden" else head.weight
    (want,) = torch.autograd.grad(torch.nn.functional.cross_entropy(head(hidden), targets), [leaf])
    (got,) = torch.autograd.grad(chunked_cross_entropy(head, hidden, targets, chunk_rows=5), [leaf])
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)


def test_chunked_training_loss_of_a_tied_model_matches_whole_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tied head's gradient (through the LM head) adds to the embedding's (through the lookup)."""
    from shiptwo.qwen2 import model as model_module

    torch.manual_seed(0)
    m = Qwen2(TINY)
    ids, targets = torch.randint(0, 64, (3, 11)), torch.randint(0, 64, (3, 11))
    want_loss = torch.nn.functional.cross_entropy(m(ids).reshape(-1, 64), targets.reshape(-1))
    want = torch.autograd.grad(want_loss, list(m.parameters()))
    monkeypatch.setattr(model_module, "LOSS_CHUNK_ELEMENTS", 64 * 4)  # 4 rows a chunk: 9 chunks
    got_loss = m.loss(ids, targets)
    got = torch.autograd.grad(got_loss, list(m.parameters()))
    assert got_loss.item() == pytest.approx(want_loss.item(), rel=1e-6)
    for (name, _), a, b in zip(m.named_parameters(), got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7), name


def test_chunked_cross_entropy_under_bf16_autocast_matches_whole_logits() -> None:
    from shiptwo.qwen2.model import chunked_cross_entropy

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        whole = torch.nn.functional.cross_entropy(head(hidden).float(), targets)
        chunked = chunked_cross_entropy(head, hidden, targets, chunk_rows=5)
    assert chunked.dtype == torch.float32
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-3)
    want = torch.autograd.grad(whole, [hidden, head.weight])
    got = torch.autograd.grad(chunked, [hidden, head.weight])
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype == torch.float32
        assert max_rel_err(a, b) < 2e-2


def test_chunked_training_loss_refuses_a_second_backward_by_name() -> None:
    """Its gradients are scaled in place and released by the first backward; a second would be wrong."""
    from shiptwo.qwen2.model import chunked_cross_entropy

    head = torch.nn.Linear(16, 50, bias=False)
    loss = chunked_cross_entropy(head, torch.randn(12, 16), torch.randint(0, 50, (12,)), chunk_rows=5)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="chunked cross-entropy: backward twice through one loss"):
        loss.backward()


def test_eval_loss_takes_the_log_softmax_a_few_rows_at_a_time() -> None:
    """No (N, V) fp32 log-probabilities in evaluation: at most EVAL_SOFTMAX_ROWS rows per kernel."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from shiptwo.qwen2.model import EVAL_SOFTMAX_ROWS, chunked_cross_entropy

    class SoftmaxRows(TorchDispatchMode):
        most = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func.overloadpacket.__name__ in ("cross_entropy_loss", "log_softmax", "_log_softmax"):
                self.most = max(self.most, args[0].shape[0])
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden, targets = (
        torch.randn(3 * EVAL_SOFTMAX_ROWS + 5, 16),
        torch.randint(0, 50, (3 * EVAL_SOFTMAX_ROWS + 5,)),
    )
    with torch.inference_mode():
        whole = torch.nn.functional.cross_entropy(head(hidden), targets)
        with SoftmaxRows() as seen:
            loss = chunked_cross_entropy(head, hidden, targets)
    assert seen.most == EVAL_SOFTMAX_ROWS
    assert loss.item() == pytest.approx(whole.item(), rel=1e-6)
