"""The hardware gates of the Qwen2 room: `cuda` and `multi-gpu` (torch is imported only when asked)."""

from __future__ import annotations

from shiptwo.harness.gates import GateResult


def cuda() -> GateResult:
    try:
        import torch
    except ImportError:
        return GateResult("cuda", False, "torch is not installed")
    if not torch.cuda.is_available():
        return GateResult("cuda", False, "torch.cuda.is_available() is False")
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return GateResult("cuda", True, f"{torch.cuda.device_count()} CUDA device(s): {names}")


def multi_gpu() -> GateResult:
    result = cuda()
    if not result.ok:
        return GateResult("multi-gpu", False, result.reason)
    import torch

    count = torch.cuda.device_count()
    if count < 2:
        return GateResult("multi-gpu", False, f"torch sees {count} CUDA device, 2 are needed")
    return GateResult("multi-gpu", True, f"torch sees {count} CUDA devices")
