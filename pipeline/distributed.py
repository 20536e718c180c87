"""Process-group helpers for torchrun: one process per device, gloo on CPU, nccl on GPU.

Every helper is a no-op when training runs as a single process, so library code never branches
on "distributed or not".
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def init_from_env() -> torch.device:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT); return this
    process's device. One process (or no torchrun at all) needs no process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30))
    return torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    return world()[0] == 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Rows of `x` from every rank, concatenated in rank order, with gradients flowing back.

    torch.distributed.nn's all_gather backward sums each copy's gradient onto the rank that owns
    the rows, so a loss over local rows x all gathered columns, averaged by DDP, has exactly the
    gradient of the same loss computed on the whole global batch in one process."""
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def mean_across(value: torch.Tensor) -> torch.Tensor:
    """Mean of a (detached) tensor over ranks, for logging the global loss."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def gather_objects(obj) -> list:
    """Every rank's picklable `obj`, in rank order (used for per-rank RNG states in checkpoints)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj) -> list | None:
    """Every rank's picklable `obj` in rank order on rank 0, None on the others: per-rank state too large to
    copy to every rank (DeCLIP's per-rank feature banks, 134 MB each at the recipe's size)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
