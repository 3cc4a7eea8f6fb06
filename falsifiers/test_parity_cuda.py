"""FALSIFY-PARITY-CUDA-*: the same weights give the same numbers on CPU and CUDA, stage by stage.

The seeds' H4D: a CUDA forward path nobody compared with the CPU one, layer by layer. TF32 is
switched off for the fp32 comparison (it would legitimately cost ~1e-3 of precision). Host gate
`cuda` (declared in the contract) skips these where no GPU is present.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import shiptwo.qwen2.model as model_mod
from shiptwo.qwen2.model import Qwen2, Qwen2Config, max_rel_err, stage_names
from shiptwo.qwen2.train import eval_batch

CFG = Qwen2Config(
    vocab_size=512,
    hidden_size=128,
    num_layers=3,
    num_heads=8,
    num_kv_heads=2,
    head_dim=16,
    intermediate_size=256,
    rope_theta=1_000_000.0,
    tied_embeddings=True,
)


@pytest.fixture
def no_tf32() -> Iterator[None]:
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def plant_cuda_path_defect(control: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant a defect that lives on the CUDA path only: the seeds' H4D, a device path nobody compared.

    Each patch wraps one function of the model or loss so that it misbehaves when its tensors are
    on a CUDA device and behaves exactly as before on the CPU, as a device-specific kernel or
    branch would.
    """
    if control is None:
        return
    if control == "cuda-rope-theta-default":
        real_rope = model_mod.rope_cos_sin

        def rope(
            seq_len: int, head_dim: int, theta: float, *, device: torch.device, dtype: torch.dtype
        ) -> tuple[torch.Tensor, torch.Tensor]:
            wrong = 10_000.0 if torch.device(device).type == "cuda" else theta
            return real_rope(seq_len, head_dim, wrong, device=device, dtype=dtype)

        monkeypatch.setattr(model_mod, "rope_cos_sin", rope)
    elif control == "cuda-rms-eps-wrong":
        real_norm = model_mod.RMSNorm.forward

        def norm(self: model_mod.RMSNorm, x: torch.Tensor) -> torch.Tensor:
            if not x.is_cuda:
                return real_norm(self, x)
            x32 = x.float()
            return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-2)).to(x.dtype)

        monkeypatch.setattr(model_mod.RMSNorm, "forward", norm)
    elif control == "cuda-loss-divided-twice":
        real_ce = model_mod.chunked_cross_entropy

        def ce(
            head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, **kw: object
        ) -> torch.Tensor:
            loss = real_ce(head, hidden, targets, **kw)  # type: ignore[arg-type]
            return loss / hidden.shape[0] if hidden.is_cuda else loss

        monkeypatch.setattr(model_mod, "chunked_cross_entropy", ce)
    else:
        raise AssertionError(f"unknown control {control!r}")  # pragma: no cover - the contract lists them


def random_model(dtype: torch.dtype) -> Qwen2:
    """Every parameter random, biases and norm gains included, so no defect hides behind a 0 or 1."""
    torch.manual_seed(0)
    model = Qwen2(CFG)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model.to(dtype).eval()


def stages(model: Qwen2, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with torch.no_grad():
        logits, hidden = model(ids.to(next(model.parameters()).device), return_hidden=True)
    return logits, hidden


def compare_devices(dtype: torch.dtype, limit: float) -> tuple[float, float]:
    cpu = random_model(dtype)
    gpu = copy.deepcopy(cpu).to("cuda")
    ids = torch.randint(0, CFG.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    ref_logits, ref_hidden = stages(cpu, ids)
    logits, hidden = stages(gpu, ids)
    errs = [max_rel_err(a, b) for a, b in zip(hidden, ref_hidden, strict=True)]
    names = stage_names(CFG.num_layers)
    over = [n for n, e in zip(names, errs, strict=True) if e > limit]
    report = ", ".join(f"{n}: {e:.2e}" for n, e in zip(names, errs, strict=True))
    # The verdict is record_measurement's, against the contract; this names where it diverged.
    print(f"first stage where CUDA leaves CPU beyond {limit:g}: {over[0] if over else 'none'} ({report})")
    return max(errs), max_rel_err(logits, ref_logits)


@pytest.mark.falsifier("FALSIFY-PARITY-CUDA-001")
def test_fp32_cpu_and_cuda_agree_every_layer(
    no_tf32: None, record_measurement, falsifier_spec, falsifier_control, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_cuda_path_defect(falsifier_control, monkeypatch)
    hidden, logits = compare_devices(
        torch.float32, falsifier_spec.measurements["hidden_max_rel_err"].passing.max
    )
    record_measurement("hidden_max_rel_err", hidden)
    record_measurement("logits_max_rel_err", logits)


@pytest.mark.falsifier("FALSIFY-PARITY-CUDA-BF16-001")
def test_bf16_cpu_and_cuda_agree_every_layer(
    record_measurement, falsifier_spec, falsifier_control, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_cuda_path_defect(falsifier_control, monkeypatch)
    hidden, logits = compare_devices(
        torch.bfloat16, falsifier_spec.measurements["hidden_max_rel_err"].passing.max
    )
    record_measurement("hidden_max_rel_err", hidden)
    record_measurement("logits_max_rel_err", logits)


@pytest.mark.falsifier("FALSIFY-PARITY-CUDA-EVAL-001")
def test_eval_batch_same_loss_on_cpu_and_cuda(
    no_tf32: None, record_measurement, falsifier_control, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_cuda_path_defect(falsifier_control, monkeypatch)
    cpu = random_model(torch.float32)
    gpu = copy.deepcopy(cpu).to("cuda")
    ids = torch.randint(0, CFG.vocab_size, (4, 65), generator=torch.Generator().manual_seed(2))
    x, y = ids[:, :-1], ids[:, 1:]
    cpu_loss, gpu_loss = eval_batch(cpu, x, y), eval_batch(gpu, x, y)
    record_measurement("eval_loss_abs_diff", abs(cpu_loss - gpu_loss))


def _python_ids(tokenizer_json: Path, n_tokens: int) -> torch.Tensor:
    import sysconfig

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    text = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text(encoding="utf-8")
    ids = tok.encode(text).ids[:n_tokens]
    return torch.tensor([ids], dtype=torch.long)


@pytest.mark.falsifier("FALSIFY-PARITY-QWEN-CUDA-001")
def test_real_qwen_logits_cpu_and_cuda(
    no_tf32: None, qwen_dir: Path, record_measurement, falsifier_control
) -> None:
    from shiptwo.qwen2.checkpoint import from_pretrained

    root = qwen_dir
    ids = _python_ids(root / "tokenizer.json", 128)
    cpu = from_pretrained(root, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        ref = cpu(ids)
    del cpu
    gpu = from_pretrained(root, device="cuda", dtype=torch.float32)
    if falsifier_control == "cuda-qkv-bias-dropped":
        # The seeds' H2 on one device path: the copy to the GPU leaves q/k/v biases at zero.
        with torch.no_grad():
            for layer in gpu.layers:
                for proj in (layer.attn.q_proj, layer.attn.k_proj, layer.attn.v_proj):
                    proj.bias.zero_()
    with torch.no_grad():
        out = gpu(ids.to("cuda"))
    record_measurement("logits_max_rel_err", max_rel_err(out, ref))
