"""The key table, tied embeddings, and loading/saving in both formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from shiptwo.errors import FormatError, ModelError
from shiptwo.qwen2.checkpoint import (
    KEY_TABLE,
    checkpoint_to_module,
    from_pretrained,
    module_to_checkpoint,
    read_config,
    save_apr,
    save_hf,
)
from shiptwo.qwen2.model import Qwen2, Qwen2Config

TIED = Qwen2Config(
    vocab_size=64,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    intermediate_size=48,
    tied_embeddings=True,
)
UNTIED = Qwen2Config(**{**TIED.__dict__, "tied_embeddings": False})


def model(cfg: Qwen2Config, seed: int = 0) -> Qwen2:
    torch.manual_seed(seed)
    m = Qwen2(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))  # biases and norms off their init values
    return m


def same(a: Qwen2, b: Qwen2) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("cfg", [TIED, UNTIED], ids=["tied", "untied"])
def test_table_covers_every_parameter_once_and_reverses(cfg: Qwen2Config) -> None:
    table = checkpoint_to_module(cfg)
    params = {n for n, _ in Qwen2(cfg).named_parameters()}
    assert sorted(table.values()) == sorted(params)
    assert len(set(table.values())) == len(table)
    assert {v: k for k, v in module_to_checkpoint(cfg).items()} == table
    assert ("lm_head.weight" in table) is (not cfg.tied_embeddings)
    assert len(table) == 2 + 12 * cfg.num_layers + (0 if cfg.tied_embeddings else 1)
    assert len(KEY_TABLE) == 15


@pytest.mark.parametrize("cfg", [TIED, UNTIED], ids=["tied", "untied"])
@pytest.mark.parametrize("fmt", ["apr", "hf"])
def test_round_trip(cfg: Qwen2Config, fmt: str, tmp_path: Path) -> None:
    if fmt == "apr":
        pytest.importorskip("shiptwo.apr")
    src = model(cfg)
    path = tmp_path / "m.apr" if fmt == "apr" else tmp_path / "hf"
    (save_apr if fmt == "apr" else save_hf)(src, path)
    loaded = from_pretrained(path)
    assert read_config(path) == cfg
    assert same(src, loaded) and not loaded.training
    assert (loaded.lm_head.weight is loaded.tok_embeddings.weight) is cfg.tied_embeddings
    assert from_pretrained(path, dtype=torch.bfloat16).lm_head.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("cfg", [TIED, UNTIED], ids=["tied", "untied"])
def test_saved_hf_dir_loads_in_transformers_with_equal_logits(cfg: Qwen2Config, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    src = model(cfg).eval()
    save_hf(src, tmp_path)
    ref = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        assert torch.allclose(src(ids), ref(ids).logits, atol=1e-5)


def test_zero_byte_or_absent_head_means_tied_in_apr(tmp_path: Path) -> None:
    apr = pytest.importorskip("shiptwo.apr")
    src = model(TIED)
    save_apr(src, tmp_path / "full.apr")
    tensors = apr.load_file(tmp_path / "full.apr")
    with apr.safe_open(tmp_path / "full.apr") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "tied_embeddings"}
    del tensors["lm_head.weight"]
    apr.save_file(tensors, tmp_path / "nohead.apr", metadata=meta)
    loaded = from_pretrained(tmp_path / "nohead.apr")
    assert loaded.config.tied_embeddings and same(src, loaded)


def test_tied_head_that_differs_from_embedding_is_refused(tmp_path: Path) -> None:
    save_hf(model(UNTIED), tmp_path)
    cfg = (
        (tmp_path / "config.json")
        .read_text()
        .replace('"tie_word_embeddings": false', '"tie_word_embeddings": true')
    )
    (tmp_path / "config.json").write_text(cfg)
    with pytest.raises(
        ModelError, match="'lm_head.weight' differs from 'model.embed_tokens.weight' although"
    ):
        from_pretrained(tmp_path)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    save_hf(model(UNTIED), tmp_path)
    t = load_file(tmp_path / "model.safetensors")
    del t["model.layers.0.self_attn.q_proj.bias"]
    t["model.layers.1.self_attn.v_proj.bias"] = torch.zeros(3)
    t["model.rotary_emb.inv_freq"] = torch.zeros(4)
    save_file(t, tmp_path / "model.safetensors")
    with pytest.raises(ModelError) as err:
        from_pretrained(tmp_path)
    msg = str(err.value)
    assert (
        "missing tensor 'model.layers.0.self_attn.q_proj.bias' (for parameter 'layers.0.attn.q_proj.bias')"
        in msg
    )
    assert (
        "tensor 'model.layers.1.self_attn.v_proj.bias' has shape [3], parameter 'layers.1.attn.v_proj.bias' "
        "needs [16]" in msg
    )
    assert "unexpected tensor 'model.rotary_emb.inv_freq'" in msg


def test_tensor_in_two_shards_is_refused(tmp_path: Path) -> None:
    save_hf(model(TIED), tmp_path)
    t = load_file(tmp_path / "model.safetensors")
    save_file({"model.norm.weight": t["model.norm.weight"]}, tmp_path / "extra.safetensors")
    with pytest.raises(FormatError, match="tensor 'model.norm.weight' appears in more than one shard"):
        from_pretrained(tmp_path)


def test_sharded_dir_is_read_through_its_index(tmp_path: Path) -> None:
    """The index names the shards: a stray *.safetensors beside them is not read."""
    import json

    m = model(UNTIED)
    save_hf(m, tmp_path)
    t = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    head = {"lm_head.weight": t.pop("lm_head.weight")}
    save_file(t, tmp_path / "model-00001-of-00002.safetensors")
    save_file(head, tmp_path / "model-00002-of-00002.safetensors")
    save_file({"model.norm.weight": t["model.norm.weight"]}, tmp_path / "stray.safetensors")
    weight_map = dict.fromkeys(t, "model-00001-of-00002.safetensors") | {
        "lm_head.weight": "model-00002-of-00002.safetensors"
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = from_pretrained(tmp_path)
    assert torch.equal(loaded.lm_head.weight, m.lm_head.weight)
    assert torch.equal(loaded.norm.weight, m.norm.weight)


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda p: p.mkdir(), "no config.json; a Hugging Face model directory needs one"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text("{nope")), "config.json: not valid JSON"),
        (
            lambda p: (
                p.mkdir(),
                (p / "config.json").write_text(
                    '{"vocab_size": 8, "hidden_size": 8, '
                    '"num_hidden_layers": 1, "num_attention_heads": 2, '
                    '"intermediate_size": 8}'
                ),
            ),
            "no *.safetensors weights",
        ),
        (lambda p: None, "neither a GGUF, an .apr file nor a Hugging Face model directory"),
    ],
)
def test_bad_paths_are_refused_by_name(setup, needle: str, tmp_path: Path) -> None:
    path = tmp_path / "m"
    setup(path)
    with pytest.raises((ModelError, FormatError)) as err:
        from_pretrained(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_aprender_bf16_file_with_zero_byte_head_placeholder_loads_tied(tmp_path: Path) -> None:
    """aprender's defect: BF16 weights beside a 0-byte F32 `lm_head.weight` of full shape."""
    import json

    testing = pytest.importorskip("shiptwo.apr.testing")
    from shiptwo.qwen2.checkpoint import state_for_checkpoint

    src = model(TIED).to(torch.bfloat16)
    entries = [
        (k, 30, list(v.shape), v.contiguous().view(torch.uint8).numpy().tobytes())  # 30 = BF16
        for k, v in state_for_checkpoint(src).items()
    ]
    entries.append(("lm_head.weight", 0, [TIED.vocab_size, TIED.hidden_size], b""))  # 0 = F32, no data
    entries.sort(key=lambda e: e[0].encode())
    meta = json.dumps({**TIED.to_apr_metadata(), "tied_embeddings": True}).encode()
    (tmp_path / "aprender.apr").write_bytes(testing.spec_file(entries, meta))
    loaded = from_pretrained(tmp_path / "aprender.apr", dtype=torch.bfloat16)
    assert loaded.lm_head.weight is loaded.tok_embeddings.weight
    assert same(src, loaded)
