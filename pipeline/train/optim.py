"""AdamW with CLIP's decay rule and a warmup + cosine schedule counted in optimizer steps."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UserError


_NORMS = (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)


def decays(name: str, param: torch.Tensor, owner: nn.Module, rule: str) -> bool:
    """Whether parameter `name` of module `owner` gets weight decay under `rule` (the stage's
    weight_decay_rule; the schema says where each rule comes from). Decaying gains, biases or temperatures
    shrinks scales, not complexity, which is why every rule exempts some of them."""
    if "logit_scale" in name:
        return False
    if rule == "declip":
        leaf = name.rsplit(".", 1)[-1]
        return not (isinstance(owner, _NORMS) or (leaf == "bias" and isinstance(owner, (nn.Linear, nn.Conv2d))))
    if rule == "slip" and name.endswith("class_embedding"):
        return True
    return param.ndim >= 2


def owned_parameters(modules: dict[str, nn.Module]) -> list[tuple[str, nn.Parameter, nn.Module]]:
    """(name, parameter, the module that owns it) of every parameter, names prefixed by the dict's keys."""
    out, seen = [], set()
    for prefix, module in modules.items():
        for owner_name, owner in module.named_modules():
            for leaf, param in owner.named_parameters(recurse=False):
                if id(param) not in seen:  # a tied parameter is optimised once
                    seen.add(id(param))
                    out.append((".".join(part for part in (prefix, owner_name, leaf) if part), param, owner))
    return out


def build_optimizer(modules: dict[str, nn.Module], *, lr: float, weight_decay: float, rule: str,
                    betas: tuple[float, float], eps: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `modules` ({"": model, "method": method}), two groups.

    torch's fused AdamW (one kernel over all tensors, CPU and CUDA) where the parameters allow it: the same
    update as the per-tensor loop torch picks by default on CPU up to float rounding, at a fifth of its time
    on the demo model (benchmarks/bench_train.py); open_clip_train builds the default one."""
    params = [(n, p, o) for n, p, o in owned_parameters(modules) if p.requires_grad]
    groups = [
        {"params": [p for n, p, o in params if decays(n, p, o, rule)], "weight_decay": weight_decay},
        {"params": [p for n, p, o in params if not decays(n, p, o, rule)], "weight_decay": 0.0},
    ]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for _, p, _ in params)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None)


def total_steps(*, data_samples: int, batch_size: int, epochs: float | None, samples: int | None) -> int:
    """Optimizer steps of a stage: `samples` (rounded up to whole global batches) or `epochs` passes
    over the data, where an epoch is data_samples // batch_size steps (the last partial batch dropped)."""
    if samples is not None:
        return max(1, math.ceil(samples / batch_size))
    per_epoch = data_samples // batch_size
    if per_epoch < 1:
        raise UserError(f"batch_size: {batch_size} exceeds the {data_samples} training samples")
    return max(1, math.ceil(epochs * per_epoch))


class WarmupCosine:
    """The learning rate of optimizer step `step` (0-based): linear warmup from `warmup_start_lr` to `lr`
    over `warmup` steps, then a half cosine from `lr` down to `min_lr` at step `total`:

        step <  warmup: warmup_start_lr + (lr - warmup_start_lr) * (step + 1) / warmup
        step >= warmup: min_lr + 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup))) * (lr - min_lr)

    With warmup_start_lr = min_lr = 0 this is open_clip_train's `cosine_lr` value for value (CLIPA's
    schedule, and what benchmarks/bench_train.py compares against). The cosine phase is SLIP's
    `utils.cosine_scheduler` with its --lr-end; SLIP's warmup is np.linspace(lr_start, lr, warmup), which
    starts at lr_start where ours starts one step in (the two differ by at most (lr - start) / warmup per
    step and meet at the peak). open_clip's function has no start or floor and timm's CosineLRScheduler
    shifts the cosine one step, so the formula is written here. The schedule is a pure function of the
    step: nothing to checkpoint."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, lr: float, total: int, warmup: int,
                 warmup_start_lr: float, min_lr: float):
        self.optimizer, self.lr, self.total, self.warmup = optimizer, lr, total, warmup
        self.warmup_start_lr, self.min_lr = warmup_start_lr, min_lr

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.warmup_start_lr + (self.lr - self.warmup_start_lr) * (step + 1) / self.warmup
        cosine = math.cos(math.pi * (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_lr + 0.5 * (1 + cosine) * (self.lr - self.min_lr)

    def step(self, step: int) -> float:
        """Set every parameter group's lr for optimizer step `step`; returns it."""
        value = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = value
        return value


def warmup_length(stage, *, data_samples: int) -> int:
    """The stage's warmup in optimizer steps: warmup_epochs epochs of the data when set, else warmup_steps."""
    if stage.warmup_epochs is None:
        return stage.warmup_steps
    return round(stage.warmup_epochs * (data_samples // stage.batch_size))


def build_scheduler(optimizer: torch.optim.Optimizer, stage, *, total: int, data_samples: int) -> WarmupCosine:
    """The schedule of a stage's settings (lr, warmup, warmup_start_lr, min_lr) over `total` steps."""
    return WarmupCosine(optimizer, lr=stage.lr, total=total, warmup=warmup_length(stage, data_samples=data_samples),
                        warmup_start_lr=stage.warmup_start_lr, min_lr=stage.min_lr)
