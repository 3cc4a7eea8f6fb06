"""Benchmark: read every tensor of a few-hundred-MB BF16 model via shiptwo.apr vs safetensors.

Synthetic tensors with Qwen2.5-0.5B shapes (fewer layers, smaller vocab) are written as
safetensors, imported to APR, then both files are read tensor by tensor in the same run,
interleaved, page cache warm; the best times are compared as ratios:
- unverified lazy open (open + get_tensor of every tensor) vs `safetensors.safe_open` (goal <= 1.1x);
- verified `apr.load_file` (both CRCs, the default) vs one plain read pass over the same APR file,
  the memory floor of any load that checks every byte (goal <= 1.3x). The floor is the fastest of
  one `readinto` of the whole file into a fresh bytearray, `readinto` in 8 MiB chunks into one,
  and one `readinto` into a fresh `numpy.empty` (no zero fill; numpy asks for huge pages, which
  is several times cheaper where page faults are dear, as in a VM).
Import throughput is printed beside a plain file copy of the same safetensors file.

    .venv/bin/python benchmarks/bench_apr_read.py [--layers 6] [--vocab 32768] [--repeats 7]
        [--format json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open as st_safe_open
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file as st_save_file

from shiptwo import apr
from shiptwo.apr.convert import import_model
from shiptwo.apr.crc import crc32_backend
from shiptwo.jsonout import print_json

LAZY_GOAL = 1.1  # unverified lazy open / safetensors.safe_open
VERIFIED_GOAL = 1.3  # verified load_file / one plain read pass
CHUNK = 8 << 20

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


def read_whole(path: Path) -> int:
    """One plain read pass: the whole file into a fresh bytearray with one readinto."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        return f.readinto(buf) or 0


def read_numpy(path: Path) -> int:
    """One plain read pass: the whole file with one readinto into a fresh, unfilled numpy array."""
    with open(path, "rb", buffering=0) as f:
        buf = np.empty(os.fstat(f.fileno()).st_size, dtype=np.uint8)
        return f.readinto(buf.data) or 0


def read_chunked(path: Path) -> int:
    """One plain read pass in 8 MiB readinto calls into a fresh bytearray of the file's size."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        view, pos = memoryview(buf), 0
        while pos < len(buf):
            n = f.readinto(view[pos : pos + CHUNK])
            if not n:
                break
            pos += n
        return pos


def open_only_safetensors(path: Path) -> int:
    with st_safe_open(str(path), framework="pt") as f:
        return len(f.keys())


def open_only_apr(path: Path) -> int:
    with apr.safe_open(path, framework="pt") as f:
        return len(f.keys())


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)

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
        apr_mb = apr_path.stat().st_size / 1e6

        t = best_seconds(
            {
                "safetensors.safe_open (open only)": lambda: open_only_safetensors(st_path),
                "shiptwo.apr.safe_open (open only)": lambda: open_only_apr(apr_path),
                "safetensors.safe_open": lambda: read_all_safetensors(st_path, touch=False),
                "shiptwo.apr.safe_open": lambda: read_all_apr(apr_path, touch=False),
                "safetensors.safe_open + copy": lambda: read_all_safetensors(st_path, touch=True),
                "shiptwo.apr.safe_open + copy": lambda: read_all_apr(apr_path, touch=True),
                "safetensors.torch.load_file": lambda: st_load_file(str(st_path)),
                "shiptwo.apr.load_file (header CRC)": lambda: apr.load_file(apr_path, verify_footer=False),
                "shiptwo.apr.load_file (both CRCs)": lambda: apr.load_file(apr_path),
                "plain read of the .apr (one readinto)": lambda: read_whole(apr_path),
                "plain read of the .apr (8 MiB readinto)": lambda: read_chunked(apr_path),
                "plain read of the .apr (numpy readinto)": lambda: read_numpy(apr_path),
            },
            args.repeats,
        )
        assert apr.read_header(apr_path).names == sorted(st_load_file(str(st_path)))
        n_tensors = len(apr.read_header(apr_path).tensors)

    def ratio(a: str, b: str) -> float:
        return t[a] / t[b]

    floor = min(seconds for name, seconds in t.items() if name.startswith("plain read of the .apr"))
    verified = t["shiptwo.apr.load_file (both CRCs)"] / floor
    lazy = ratio("shiptwo.apr.safe_open", "safetensors.safe_open")
    figures = {
        "layers": args.layers,
        "vocab": args.vocab,
        "safetensors_mb": mb,
        "apr_mb": apr_mb,
        "tensors": n_tensors,
        "torch": torch.__version__,
        "crc32_backend": crc32_backend(),
        "best_s": t,
        "lazy_open_ratio": lazy,
        "lazy_open_goal": LAZY_GOAL,
        "open_only_ratio": ratio("shiptwo.apr.safe_open (open only)", "safetensors.safe_open (open only)"),
        "touch_every_byte_ratio": ratio("shiptwo.apr.safe_open + copy", "safetensors.safe_open + copy"),
        "read_floor_s": floor,
        "verified_load_vs_read_ratio": verified,
        "verified_load_goal": VERIFIED_GOAL,
        "verified_load_vs_safetensors_load_file": ratio(
            "shiptwo.apr.load_file (both CRCs)", "safetensors.torch.load_file"
        ),
        "header_crc_load_vs_safetensors_load_file": ratio(
            "shiptwo.apr.load_file (header CRC)", "safetensors.torch.load_file"
        ),
        "import_mb_s": mb / import_s,
        "copy_mb_s": mb / copy_s,
        "import_vs_copy_ratio": import_s / copy_s,
    }
    if args.format == "json":
        print_json(figures, indent=2)
        return 0
    print(
        f"model: {args.layers} layers, vocab {args.vocab}, BF16, {mb:.0f} MB ({apr_mb:.0f} MB as APR), "
        f"{n_tensors} tensors; torch {torch.__version__}; CRC-32 through {crc32_backend()}"
    )
    for name, seconds in t.items():
        print(f"  {name:<40} {seconds * 1e3:8.1f} ms  {mb / seconds:8.0f} MB/s")
    print(
        f"read every tensor (open + get_tensor, zero-copy, no footer CRC), apr / safetensors: "
        f"{lazy:.2f}x (goal <= {LAZY_GOAL}x); open only: {figures['open_only_ratio']:.2f}x"
    )
    print(
        f"read and touch every byte (get_tensor + copy), apr / safetensors: "
        f"{figures['touch_every_byte_ratio']:.2f}x"
    )
    print(
        f"verified load_file (both CRCs) / one plain read pass of the .apr: {verified:.2f}x "
        f"(goal <= {VERIFIED_GOAL}x)"
    )
    print(
        f"load_file, apr (header CRC) / safetensors: "
        f"{figures['header_crc_load_vs_safetensors_load_file']:.2f}x; verified: "
        f"{figures['verified_load_vs_safetensors_load_file']:.2f}x (safetensors maps lazily, reads nothing)"
    )
    print(
        f"import: {mb / import_s:.0f} MB/s ({import_s * 1e3:.0f} ms); plain file copy: "
        f"{mb / copy_s:.0f} MB/s ({copy_s * 1e3:.0f} ms); import / copy time: {import_s / copy_s:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
