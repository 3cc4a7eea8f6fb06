"""The Qwen2 room's gates: the hardware gates `cuda` and `multi-gpu` (torch is imported only when
asked), and the default limits of the training gate GATE-TRAIN-005 (checked in `shiptwo.qwen2.train`;
here, where `shiptwo train --help` can show them without importing torch).
"""

from __future__ import annotations

from shiptwo.harness.gates import GateResult

# GATE-TRAIN-005's defaults, from the seeds: the epoch-0 val_loss ceiling in nats, and how many
# times the previous evaluation's val_loss a later one may reach before the run counts as diverged.
GATE_005_EPOCH0_MAX = 10.0
GATE_005_RATIO_MAX = 2.0


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
