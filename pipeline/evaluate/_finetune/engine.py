"""DeepSpeed engine around a classifier with a torch AdamW client optimizer (no fused_adam build).

DeepSpeed needs RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT even for one process (otherwise it
looks for MPI); torchrun sets them, a plain `python -m pipeline ...` gets single-process defaults here.
"""
from __future__ import annotations

import os
import socket

import torch

from ...errors import UserError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the environment, defaulting to a single local process."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        if os.environ["WORLD_SIZE"] != "1":
            raise UserError("MASTER_PORT: must be set for a multi-process run (torchrun sets it)")
        os.environ["MASTER_PORT"] = str(_free_port())
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def ds_config(*, micro_batch: int, grad_accum_steps: int, world_size: int, zero_stage: int,
              precision: str, grad_clip: float | None) -> dict:
    if zero_stage not in (0, 1, 2):
        raise UserError(f"zero_stage: {zero_stage} is not supported (0, 1, 2; stage 3 partitions the weights "
                        f"the EMA copy and the per-epoch evaluation read)")
    cfg = {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": grad_accum_steps,
           "train_batch_size": micro_batch * grad_accum_steps * world_size,
           "zero_optimization": {"stage": zero_stage}, "steps_per_print": 10 ** 9, "wall_clock_breakdown": False,
           "bf16": {"enabled": precision == "bf16"}, "fp16": {"enabled": precision == "fp16"}}
    if grad_clip:
        cfg["gradient_clipping"] = grad_clip
    return cfg


def init_engine(*, model: torch.nn.Module, param_groups: list[dict], lr: float, betas: tuple[float, float],
                eps: float, micro_batch: int, grad_accum_steps: int, zero_stage: int,
                precision: str, grad_clip: float | None):
    """(engine, device): DeepSpeed's engine over `model` with AdamW on timm-style param groups (lr_scale kept)."""
    import deepspeed

    rank, world, local_rank = ensure_dist_env()
    cuda = torch.cuda.is_available()
    if precision != "fp32" and not cuda:
        raise UserError(f"precision: {precision} needs a GPU; use fp32 on CPU")
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
    optimizer = torch.optim.AdamW(param_groups, lr=lr, betas=tuple(betas), eps=eps)
    config = ds_config(micro_batch=micro_batch, grad_accum_steps=grad_accum_steps, world_size=world,
                       zero_stage=zero_stage, precision=precision, grad_clip=grad_clip)
    engine, _, _, _ = deepspeed.initialize(model=model.to(device), optimizer=optimizer, config=config)
    return engine, device


def set_lr(engine, lr: float) -> None:
    """Apply the schedule's lr to every group, scaled by its layer-decay factor."""
    for group in engine.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
