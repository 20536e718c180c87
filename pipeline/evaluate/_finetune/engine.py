"""DeepSpeed engine around a classifier with a torch client optimizer (AdamW, or SGD for linear probes).

Precision: bf16 / fp16 run through DeepSpeed's `torch_autocast` section on every device. The module's own
parameters stay fp32 and are the master weights; DeepSpeed runs the forward under torch.autocast and, for fp16,
scales the loss with torch's GradScaler (its ZeRO 0 and ZeRO 1/2 paths both do). So the EMA, the per-epoch
evaluation, the saved model and WiSE-FT all read fp32 weights, and the same code learns on a CPU (bf16 and fp16
autocast both exist there) as on a GPU. DeepSpeed's own `bf16` / `fp16` sections would cast the module itself
to 16 bits (FT-CLIP's fp16 run did, LayerNorm included); that is the one precision difference to FT-CLIP
(docs/evaluation.md).

DeepSpeed needs RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT even for one process (otherwise it
looks for MPI); torchrun sets them, a plain `python -m pipeline ...` gets single-process defaults here.
"""
from __future__ import annotations

import contextlib
import os
import socket

import torch

from ...errors import UserError

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
           "zero_optimization": {"stage": zero_stage}, "steps_per_print": 10 ** 9, "wall_clock_breakdown": False}
    if precision in AUTOCAST:
        cfg["torch_autocast"] = {"enabled": True, "dtype": str(AUTOCAST[precision]).removeprefix("torch.")}
    elif precision != "fp32":
        raise UserError(f"precision: {precision!r} (fp32, bf16, fp16)")
    if grad_clip:
        cfg["gradient_clipping"] = grad_clip
    return cfg


def make_optimizer(name: str, param_groups: list[dict], *, lr: float, betas, eps: float, momentum: float):
    """torch's AdamW (FT-CLIP / BEiT / WiSE-FT) or SGD with momentum (MoCo v3 / SLIP linear classification)."""
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, betas=tuple(betas), eps=eps)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum)
    raise ValueError(f"optimizer: {name!r} (adamw, sgd)")


def init_engine(*, model: torch.nn.Module, optimizer, micro_batch: int, grad_accum_steps: int, zero_stage: int,
                precision: str, grad_clip: float | None):
    """(engine, device): DeepSpeed's engine over `model` and a torch client optimizer (lr_scale kept per group)."""
    import deepspeed

    _, world, local_rank = ensure_dist_env()
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
    config = ds_config(micro_batch=micro_batch, grad_accum_steps=grad_accum_steps, world_size=world,
                       zero_stage=zero_stage, precision=precision, grad_clip=grad_clip)
    engine, _, _, _ = deepspeed.initialize(model=model.to(device), optimizer=optimizer, config=config)
    return engine, device


def autocast(precision: str, device: torch.device):
    """The evaluation-time counterpart of the engine's torch_autocast (FT-CLIP evaluates under autocast too)."""
    if precision not in AUTOCAST:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST[precision])


def grad_scaler(engine):
    """DeepSpeed's GradScaler of an fp16 torch_autocast engine (ZeRO 0 keeps it on the engine, ZeRO 1/2 on the
    optimizer), or None: its state is part of an exact resume."""
    return (getattr(engine, "torch_autocast_z0_gradscaler", None)
            or getattr(engine.optimizer, "torch_autocast_gradscaler", None))


def set_lr(engine, lr: float) -> None:
    """Apply the schedule's lr to every group, scaled by its layer-decay factor."""
    for group in engine.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
