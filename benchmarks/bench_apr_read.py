"""Benchmark: read every tensor of a few-hundred-MB BF16 model via shiptwo.apr vs safetensors.

Synthetic tensors with Qwen2.5-0.5B shapes (fewer layers, smaller vocab) are written as
safetensors, imported to APR, then both files are read tensor by tensor in the same run,
interleaved, page cache warm; the best times are compared as a ratio (goal <= 1.1x). Import
throughput is printed beside a plain file copy of the same safetensors file.

    .venv/bin/python benchmarks/bench_apr_read.py [--layers 8] [--vocab 32768] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open as st_safe_open
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file as st_save_file

from shiptwo import apr
from shiptwo.apr.convert import import_model

HIDDEN, FFN, KV = 896, 4864, 128  # Qwen2.5-0.5B: hidden 896, FFN 4864, 2 KV heads x 64


def qwen_like(layers: int, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def w(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    # Untied (an lm_head of its own), so both files hold exactly the same tensors.
    out = {
        "model.embed_tokens.weight": w(vocab, HIDDEN),
        "model.norm.weight": w(HIDDEN),
        "lm_head.weight": w(vocab, HIDDEN),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        out |= {
            p + "self_attn.q_proj.weight": w(HIDDEN, HIDDEN),
            p + "self_attn.q_proj.bias": w(HIDDEN),
            p + "self_attn.k_proj.weight": w(KV, HIDDEN),
            p + "self_attn.k_proj.bias": w(KV),
            p + "self_attn.v_proj.weight": w(KV, HIDDEN),
            p + "self_attn.v_proj.bias": w(KV),
            p + "self_attn.o_proj.weight": w(HIDDEN, HIDDEN),
            p + "mlp.gate_proj.weight": w(FFN, HIDDEN),
            p + "mlp.up_proj.weight": w(FFN, HIDDEN),
            p + "mlp.down_proj.weight": w(HIDDEN, FFN),
            p + "input_layernorm.weight": w(HIDDEN),
            p + "post_attention_layernorm.weight": w(HIDDEN),
        }
    return out


def _touch(t: torch.Tensor) -> int:
    # A numpy copy of the raw bits reads every byte at memcpy speed; torch's bf16 clone is
    # several times slower here and would hide the readers' own cost.
    return int(t.view(torch.int16).numpy().copy().size)


def read_all_safetensors(path: Path, *, touch: bool) -> int:
    n = 0
    with st_safe_open(str(path), framework="pt") as f:
        for k in f.keys():  # noqa: SIM118 - safetensors.safe_open is not iterable
            t = f.get_tensor(k)
            n += _touch(t) if touch else t.numel()
    return n


def read_all_apr(path: Path, *, touch: bool) -> int:
    n = 0
    with apr.safe_open(path, framework="pt") as f:
        for k in f.keys():  # noqa: SIM118 - same API on both sides
            t = f.get_tensor(k)
            n += _touch(t) if touch else t.numel()
    return n


def best_seconds(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best of `repeats` interleaved runs each (the machine is shared: the minimum is the signal)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm the page cache and the imports
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-apr-") as tmp:
        root = Path(tmp)
        st_path, apr_path = root / "model.safetensors", root / "model.apr"
        st_save_file(qwen_like(args.layers, args.vocab), str(st_path), metadata={"format": "pt"})
        mb = st_path.stat().st_size / 1e6

        copy_s = import_s = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            shutil.copyfile(st_path, root / "copy.safetensors")
            copy_s = min(copy_s, time.perf_counter() - start)
            start = time.perf_counter()
            import_model(st_path, apr_path)
            import_s = min(import_s, time.perf_counter() - start)

        t = best_seconds(
            {
                "safetensors.safe_open": lambda: read_all_safetensors(st_path, touch=False),
                "shiptwo.apr.safe_open": lambda: read_all_apr(apr_path, touch=False),
                "safetensors.safe_open + copy": lambda: read_all_safetensors(st_path, touch=True),
                "shiptwo.apr.safe_open + copy": lambda: read_all_apr(apr_path, touch=True),
                "safetensors.torch.load_file": lambda: st_load_file(str(st_path)),
                "shiptwo.apr.load_file (header CRC)": lambda: apr.load_file(apr_path, verify_footer=False),
                "shiptwo.apr.load_file (both CRCs)": lambda: apr.load_file(apr_path),
            },
            args.repeats,
        )
        assert apr.read_header(apr_path).names == sorted(st_load_file(str(st_path)))
        print(
            f"model: {args.layers} layers, vocab {args.vocab}, BF16, {mb:.0f} MB, "
            f"{len(apr.read_header(apr_path).tensors)} tensors; torch {torch.__version__}"
        )
        for name, seconds in t.items():
            print(f"  {name:<38} {seconds * 1e3:8.1f} ms  {mb / seconds:8.0f} MB/s")

        def ratio(a: str, b: str) -> float:
            return t[a] / t[b]

        print(
            f"read every tensor (open + get_tensor, zero-copy), apr / safetensors: "
            f"{ratio('shiptwo.apr.safe_open', 'safetensors.safe_open'):.2f}x (goal <= 1.1x)"
        )
        print(
            f"read and touch every byte (get_tensor + copy), apr / safetensors: "
            f"{ratio('shiptwo.apr.safe_open + copy', 'safetensors.safe_open + copy'):.2f}x (goal <= 1.1x)"
        )
        print(
            f"load_file, apr (header CRC) / safetensors: "
            f"{ratio('shiptwo.apr.load_file (header CRC)', 'safetensors.torch.load_file'):.2f}x; with the "
            f"footer CRC pass over the file: "
            f"{ratio('shiptwo.apr.load_file (both CRCs)', 'safetensors.torch.load_file'):.2f}x"
        )
        print(
            f"import: {mb / import_s:.0f} MB/s ({import_s * 1e3:.0f} ms); plain file copy: "
            f"{mb / copy_s:.0f} MB/s ({copy_s * 1e3:.0f} ms); import / copy time: {import_s / copy_s:.2f}x"
        )


if __name__ == "__main__":
    main()
