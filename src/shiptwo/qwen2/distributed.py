"""Data-parallel plumbing for `torchrun --nproc_per_node N -m shiptwo train ...` (PyTorch DDP).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them this is a one-process run and
nothing here talks to a process group. gloo serves CPU runs, NCCL GPU runs. Every rank takes an
equal, contiguous slice of each global batch, so DDP's gradient average equals the gradient of
the global mean loss and N processes follow the one-process loss trajectory.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

from shiptwo.errors import UsageError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the run: rank, world size, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and logs; the others only compute."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init(device: str) -> DistContext:
    """Join the process group torchrun describes in the environment (or stay single-process).

    `device` is "cpu" or "cuda"; with CUDA each process takes GPU LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device {device!r}: use cpu or cuda")
    dev = "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                "--device cuda: torch.cuda.is_available() is False on this host; use --device cpu"
            )
        torch.cuda.set_device(local)
        dev = f"cuda:{local}"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev)


def shutdown(ctx: DistContext, *, completed: bool) -> None:
    """Leave the process group if this run joined one.

    After a completed run every rank waits at a barrier first: rank 0 still writes the checkpoint
    and the plot after the last collective, and a rank that tears its gloo pairs down while a peer
    is still connected can abort ("terminate called without an active exception", seen in CI).
    After a failure no barrier: the other ranks may never reach it.
    """
    if not (ctx.active and dist.is_initialized()):
        return
    if completed:
        dist.barrier()
    dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End a torchrun worker now, skipping the interpreter's and C++'s teardown.

    gloo's worker threads can still be joinable when static destructors run at exit, and a rank
    then dies with SIGABRT ("terminate called without an active exception") after a run that
    completed and left its process group (about 1 run in 20 on a busy 2-core host, and in CI).
    Everything the run owes is written and flushed before this is called.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def local_slice(global_batch: int, ctx: DistContext) -> slice:
    """The rows of a global batch this rank trains on; the batch must split evenly."""
    if global_batch % ctx.world_size:
        raise UsageError(
            f"--batch-size {global_batch} does not split over {ctx.world_size} processes; "
            f"use a multiple of {ctx.world_size}"
        )
    per = global_batch // ctx.world_size
    return slice(ctx.rank * per, (ctx.rank + 1) * per)


def mean_over_ranks(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of a scalar across ranks (itself when single-process)."""
    if not ctx.active:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size
