"""AdamW with CLIP's decay rule and a warmup + cosine schedule counted in optimizer steps."""
from __future__ import annotations

import math

import torch
from timm.scheduler import CosineLRScheduler

from ..errors import UserError


def decays(name: str, param: torch.Tensor) -> bool:
    """Weight decay only on matrices: gains/biases of norms, biases, logit_scale and 1-D embeddings
    (class token) are excluded, as in CLIP/open_clip; decaying them shrinks scales, not complexity."""
    return param.ndim >= 2 and not name.endswith("logit_scale")


def build_optimizer(named_params: list[tuple[str, torch.nn.Parameter]], *, lr: float, weight_decay: float,
                    betas: tuple[float, float], eps: float) -> torch.optim.AdamW:
    params = [(n, p) for n, p in named_params if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if decays(n, p)], "weight_decay": weight_decay},
        {"params": [p for n, p in params if not decays(n, p)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def total_steps(*, data_samples: int, batch_size: int, epochs: float | None, samples: int | None) -> int:
    """Optimizer steps of a stage: `samples` (rounded up to whole global batches) or `epochs` passes
    over the data, where an epoch is data_samples // batch_size steps (the last partial batch dropped)."""
    if samples is not None:
        return max(1, math.ceil(samples / batch_size))
    per_epoch = data_samples // batch_size
    if per_epoch < 1:
        raise UserError(f"batch_size: {batch_size} exceeds the {data_samples} training samples")
    return max(1, math.ceil(epochs * per_epoch))


def build_scheduler(optimizer: torch.optim.Optimizer, *, total: int, warmup: int) -> CosineLRScheduler:
    """timm's per-update cosine schedule. Call `scheduler.step_update(step + 1)` before optimizer step
    `step` (0-based): warmup is then lr/warmup, 2lr/warmup, ..., the peak at step `warmup`, and the last
    step still has a small positive rate (t_initial is one longer than the decay)."""
    warmup = min(warmup, max(0, total - 1))
    return CosineLRScheduler(optimizer, t_initial=max(1, total - warmup + 1), lr_min=0.0, warmup_t=warmup,
                             warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)
