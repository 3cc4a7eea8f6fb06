"""The seeds' model falsifiers on the real Qwen2.5-Coder-0.5B-Instruct weights, on the CPU.

Subject: the snapshot `shiptwo models fetch` derives (BF16, tied head) or the one
$SHIPTWO_QWEN_DIR names, and the GGUF it came from. Each test declares controls in its contract:
the seed defect planted into the real model (`shiptwo.models.defects`), which the test must
refute the same way it would refute the bug in a user's loader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from shiptwo.models.defects import plant_into_model
from shiptwo.models.evaltext import STDLIB
from shiptwo.qwen2.model import ln_vocab
from shiptwo.qwen2.train import eval_batch


def _subject(model: Any, control: Any) -> Any:
    """The model under test: the real one, or a copy with the active control's defect planted."""
    return model if control is None else plant_into_model(control.id, model)


@pytest.mark.falsifier("FALSIFY-QWEN-STEP0-001")
def test_qwen_step0_val_loss_on_python_source(
    qwen_model: Any, qwen_batch: torch.Tensor, falsifier_control: Any, record_measurement: Any
) -> None:
    model = _subject(qwen_model, falsifier_control)
    loss = eval_batch(model, qwen_batch[:, :-1], qwen_batch[:, 1:])
    print(f"val_loss {loss:.4f} nats; ln(vocab) {ln_vocab(model.config.vocab_size):.4f}")
    record_measurement("val_loss", loss)


@pytest.mark.falsifier("FALSIFY-QWEN-LOGITS-001")
def test_qwen_one_token_logits_are_sane(
    qwen_model: Any, falsifier_control: Any, record_measurement: Any
) -> None:
    # The seeds' falsify_h4_cpu_forward: one token in, the next-token logits out.
    model = _subject(qwen_model, falsifier_control)
    with torch.no_grad():
        logits = model(torch.tensor([[785]]))[0, -1].double()  # 785 = "The"
    finite = torch.isfinite(logits)
    record_measurement("nonfinite_logits", float((~finite).sum()))
    values = logits[finite]
    record_measurement("logits_std", float(values.std()) if values.numel() > 1 else 0.0)
    record_measurement(
        "peak_to_mean_abs", float(values.abs().max() / values.abs().mean()) if values.numel() else 0.0
    )
    probs = logits.softmax(-1)
    record_measurement("next_token_entropy", float(-(probs * probs.clamp_min(1e-300).log()).sum()))


def _bias_stats(model: Any) -> dict[str, float]:
    out = {}
    for proj in ("q_proj", "k_proj", "v_proj"):
        out[proj] = max(
            float(layer.attn.get_submodule(proj).bias.detach().abs().max()) for layer in model.layers
        )
    return out


@pytest.mark.falsifier("FALSIFY-QWEN-INIT-STATS-001")
def test_qwen_weights_have_trained_statistics(
    qwen_model: Any, falsifier_control: Any, record_measurement: Any
) -> None:
    # The seeds' falsify_h4_init_stats, on the real weights as decoded by the loader under test.
    model = _subject(qwen_model, falsifier_control)
    embed = model.tok_embeddings.weight.detach().double()
    record_measurement("embed_std", float(embed.std()))
    record_measurement("embed_abs_mean", float(embed.mean().abs()))
    norms = torch.cat(
        [p.detach().reshape(-1) for n, p in model.named_parameters() if n.endswith("norm.weight")]
    )
    record_measurement("norm_weight_abs_max", float(norms.abs().max()))
    bias = _bias_stats(model)
    # A trained Qwen2 leans on large key biases; a fresh init's are about 0.02 x 4 at most.
    record_measurement("k_bias_abs_max", bias["k_proj"])
    record_measurement("qkv_bias_abs_max", max(bias.values()))


@pytest.fixture(scope="module")
def gguf_reference(qwen_gguf: Path, qwen_batch: torch.Tensor) -> dict[str, Any]:
    """transformers' own loading of the GGUF (dequantized by the `gguf` package), run once per module.

    Its logits, stages and loss serve the real run and every control run alike; the 2 GB model is
    dropped as soon as they are taken.
    """
    transformers = pytest.importorskip("transformers")
    from shiptwo.qwen2.parity import reference_stages

    ids, targets = qwen_batch[:2, :128], qwen_batch[:2, 1:129]
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(qwen_gguf.parent), gguf_file=qwen_gguf.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    logits, stages = reference_stages(ref, ids)
    loss = float(
        torch.nn.functional.cross_entropy(logits.double().reshape(-1, logits.shape[-1]), targets.reshape(-1))
    )
    return {"ids": ids, "targets": targets, "logits": logits, "stages": stages, "loss": loss}


@pytest.mark.falsifier("FALSIFY-QWEN-GGUF-PARITY-001")
def test_qwen_gguf_matches_transformers_layer_by_layer(
    qwen_gguf: Path,
    gguf_reference: dict[str, Any],
    falsifier_control: Any,
    falsifier_spec: Any,
    record_measurement: Any,
) -> None:
    """Our GGUF reader, dequantizers, key table and model against transformers loading the same file.

    transformers dequantizes through the `gguf` package and runs its own Qwen2; every stage is
    compared and the first one over the contract's tolerance is named (the seeds' H4B/H4D
    bisection, done for them).
    """
    from shiptwo.qwen2.checkpoint import from_pretrained
    from shiptwo.qwen2.model import max_rel_err, stage_names
    from shiptwo.qwen2.parity import first_over

    ids, targets = gguf_reference["ids"], gguf_reference["targets"]
    ours = _subject(from_pretrained(qwen_gguf, dtype=torch.float32), falsifier_control)
    with torch.no_grad():
        logits, hidden = ours(ids, return_hidden=True)
    errs = [max_rel_err(a, b) for a, b in zip(hidden, gguf_reference["stages"], strict=True)]
    our_loss = float(
        torch.nn.functional.cross_entropy(logits.double().reshape(-1, logits.shape[-1]), targets.reshape(-1))
    )
    limit = falsifier_spec.measurements["hidden_max_rel_err"].passing.max
    report = ", ".join(f"{n}: {e:.1e}" for n, e in zip(stage_names(len(errs) - 2), errs, strict=True))
    print(
        f"first stage over {limit:g}: {first_over(errs, limit)} ({report}); "
        f"loss ours {our_loss:.4f} transformers {gguf_reference['loss']:.4f} nats"
    )
    record_measurement("loss_abs_diff", abs(our_loss - gguf_reference["loss"]))
    record_measurement("hidden_max_rel_err", max(errs))
    record_measurement("logits_max_rel_err", max_rel_err(logits, gguf_reference["logits"]))


@pytest.mark.falsifier("FALSIFY-QWEN-BF16-PARITY-001")
def test_qwen_bf16_snapshot_survives_apr_import_and_export(
    qwen_dir: Path, tmp_path: Path, falsifier_control: Any, record_measurement: Any
) -> None:
    """The real BF16 snapshot -> `apr import` -> every tensor's code, dims and bytes as the source's.

    Both sides are parsed by hand from their specs (`shiptwo.apr.testing`), so neither shiptwo's
    codec nor the safetensors package judges its own output. The control imports a copy whose
    header tags the BF16 bytes F16: the seeds' mislabel, which every NaN/Inf check passed.
    """
    from shiptwo.apr.testing import safetensors_raw, spec_tensors
    from shiptwo.cli import main
    from shiptwo.models.defects import write_defective_snapshot

    source = qwen_dir
    if falsifier_control is not None:
        source = tmp_path / "defective"
        write_defective_snapshot(qwen_dir, source, falsifier_control.id)
    out = tmp_path / "model.apr"
    assert main(["apr", "import", str(source), "-o", str(out)]) == 0
    raw = safetensors_raw(qwen_dir / "model.safetensors")  # the truth: the real snapshot's bytes
    written = spec_tensors(out)
    bf16_code = 30  # docs/apr-v2.md, as a literal: not shiptwo's own DType table
    mismatched = sorted(
        name
        for name, (st_dtype, shape, data) in raw.items()
        if st_dtype != "BF16" or written.get(name) != (bf16_code, shape, data)
    )
    del written
    record_measurement("mismatched_tensors", len(mismatched))
    back = tmp_path / "back.safetensors"
    assert main(["apr", "export", str(out), "-o", str(back)]) == 0
    record_measurement(
        "export_bytes_differ", float(back.read_bytes() != (qwen_dir / "model.safetensors").read_bytes())
    )


def _cli(*argv: str) -> None:
    from shiptwo.cli import main

    code = main(list(argv))
    assert code == 0, f"shiptwo {' '.join(argv)} exited {code}"


@pytest.fixture(scope="module")
def qwen_shards(qwen_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train and validation shards of CPython stdlib source, made by `encode-corpus` with the real vocab."""
    root = tmp_path_factory.mktemp("qwen-shards")
    for split, modules in (("train", ("shlex.py", "fnmatch.py")), ("val", ("getopt.py", "keyword.py"))):
        corpus = root / f"{split}.jsonl"
        corpus.write_text(
            "".join(
                json.dumps({"content": (STDLIB / m).read_text(encoding="utf-8")}) + "\n" for m in modules
            ),
            encoding="utf-8",
        )
        _cli(
            "tokenize",
            "encode-corpus",
            "--tokenizer",
            str(qwen_dir),
            "--corpus",
            str(corpus),
            "--output",
            str(root / split),
            "--no-progress",
        )
    return root


FINETUNE_SEQ = 128


@pytest.mark.falsifier("FALSIFY-QWEN-FINETUNE-001")
def test_qwen_short_finetune_from_the_real_init(
    qwen_dir: Path,
    qwen_shards: Path,
    tmp_path: Path,
    falsifier_control: Any,
    monkeypatch: pytest.MonkeyPatch,
    record_measurement: Any,
) -> None:
    """`shiptwo train` from the real weights on real-vocab shards; its val loss checked independently.

    The trainer's reported val loss must be plausible for a 0.5B code model (never the seeds'
    0.00081) and agree with a forward written here, on the saved checkpoint, over the same
    validation windows: a plain `cross_entropy` of the logits, none of the trainer's eval code.
    The control replays the seeds' eval pollution: evaluation reads the training data.
    """
    import shiptwo.qwen2.train as train_mod
    from shiptwo.qwen2.checkpoint import from_pretrained
    from shiptwo.shards import ShardReader

    if falsifier_control == "eval-reads-train-data":
        real_evaluate = train_mod.evaluate
        train_reader = ShardReader(qwen_shards / "train", seq_len=FINETUNE_SEQ)

        def polluted(model: Any, reader: Any, **kw: Any) -> float:
            return real_evaluate(model, train_reader, **kw)

        monkeypatch.setattr(train_mod, "evaluate", polluted)
    out, run = tmp_path / "ckpt", tmp_path / "run"
    _cli(
        "train",
        "--init",
        str(qwen_dir),
        "--shards",
        str(qwen_shards / "train"),
        "--val-shards",
        str(qwen_shards / "val"),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        str(FINETUNE_SEQ),
        "--eval-batches",
        "2",
        "--lr",
        "1e-5",
        "--warmup-steps",
        "1",
        "--output",
        str(out),
        "--run-dir",
        str(run),
        "--no-progress",
        "--format",
        "json",
    )
    epoch = json.loads((out / "epoch-000.metadata.json").read_text(encoding="utf-8"))
    reported = float(epoch["val_loss"])
    record_measurement("val_loss", reported)

    # The independent forward: the saved checkpoint, the first 2 x 2 validation windows, plain CE.
    model = from_pretrained(out / "epoch-000.apr", dtype=torch.float32)
    val = ShardReader(qwen_shards / "val", seq_len=FINETUNE_SEQ)
    windows = torch.stack([torch.as_tensor(val.window(i).astype("int64")) for i in range(4)])
    with torch.no_grad():
        logits = model(windows[:, :-1]).double()
    independent = float(
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    )
    print(f"trainer val_loss {reported:.4f} nats, independent forward {independent:.4f} nats")
    record_measurement("val_loss_abs_diff_independent", abs(reported - independent))


TOKENIZER_MODULES = ("argparse.py", "json/decoder.py", "asyncio/tasks.py", "dataclasses.py")


@pytest.mark.falsifier("FALSIFY-QWEN-TOKENIZER-001")
def test_snapshot_tokenizer_matches_the_independently_built_vocab(
    qwen_dir: Path, falsifier_control: Any, record_measurement: Any
) -> None:
    """Two independent sources of one vocab give the same ids on real Python.

    The snapshot's tokenizer.json comes from the GGUF's metadata (`shiptwo.ggml.tokenizer`); the
    other is rebuilt from the tiktoken ranks in the pinned dashscope wheel
    (`shiptwo tokenize fetch-qwen2`). The control swaps the byte-level pre-tokenizer for a
    whitespace split: the seeds' wrong pre-tokenizer, which still encodes without an error.
    """
    from tokenizers import Tokenizer, pre_tokenizers

    from shiptwo.harness.gates import check_gate

    gate = check_gate("qwen-tokenizer")
    if not gate.ok:
        pytest.skip(f"host gate 'qwen-tokenizer' closed: {gate.reason}")
    ours = Tokenizer.from_file(str(qwen_dir / "tokenizer.json"))
    if falsifier_control == "whitespace-pretokenizer":
        ours.pre_tokenizer = pre_tokenizers.Whitespace()
    reference = Tokenizer.from_file(str(gate.artifacts[0]))
    texts = [(STDLIB / m).read_text(encoding="utf-8") for m in TOKENIZER_MODULES]
    texts.append("<|im_start|>user\nwrite a haiku<|im_end|>\n<|endoftext|>")
    total = differing = 0
    for text in texts:
        a, b = ours.encode(text).ids, reference.encode(text).ids
        total += len(b)
        differing += sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))
    record_measurement("id_mismatch_fraction", differing / total)
