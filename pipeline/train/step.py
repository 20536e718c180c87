"""One optimizer step: forward + backward over the step's micro-batches, clip, clamp, AdamW.

Gradient accumulation (grad_accum_steps k > 1) works as open_clip_train's --accum-freq: every micro-batch
first runs without gradients and its per-sample features are cached (`Method.features`); then each
micro-batch j runs again with gradients, its fresh features replace its cached ones, and the method's loss
over all k cached micro-batches is backpropagated. Summed over j, the gradients are exactly those of one
step on a k-times larger batch (for a contrastive loss: k-times more negatives), at the memory of one
micro-batch plus the cached features. The random draws of a micro-batch's forward (patch masks, MLM masks)
are replayed for its second pass, so both passes see the same masks. Only methods whose loss is a function
of per-sample features (`Method.accumulates`: clip, filip) can do this; the others refuse k > 1
(pipeline.train.checks).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _rng_state(device: torch.device):
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _no_sync(module, last: bool):
    """DDP all-reduces gradients only in the step's last backward."""
    return module.no_sync() if hasattr(module, "no_sync") and not last else nullcontext()


def accumulate(module, core, scaler, batches: list[dict], *, device: torch.device, precision: str) -> dict:
    """Backward of the loss over all `batches` as one batch, one micro-batch's graph at a time (module
    docstring); returns the method's output of the last pass (the whole step's loss)."""
    cached, states = [], []
    with torch.no_grad():
        for batch in batches:
            states.append(_rng_state(device))
            with autocast(device, precision):
                features = module(batch, features_only=True)
            cached.append({k: v for k, v in features.items() if v.ndim > 0})
    after = _rng_state(device)
    for j, batch in enumerate(batches):
        _set_rng_state(states[j], device)
        last = j == len(batches) - 1
        with _no_sync(module, last=last):
            with autocast(device, precision):
                fresh = module(batch, features_only=True)
                # a shared (0-d) tensor such as the temperature enters every pass: its gradient is kept in
                # one pass only (open_clip's --accum-freq adds it once per micro-batch, k times too much)
                joined = {key: (value if last else value.detach()) if value.ndim == 0 else
                          torch.cat([c[key] for c in cached[:j]] + [value] + [c[key] for c in cached[j + 1:]])
                          for key, value in fresh.items()}
                out = core.method.loss(joined)
            scaler.scale(out["loss"]).backward()
    _set_rng_state(after, device)
    return out


@torch.no_grad()
def clamp_scales(bounds: list[tuple[torch.nn.Parameter, float, float]]) -> None:
    for param, low, high in bounds:
        param.clamp_(low, high)


def train_step(module, core, optimizer, scaler, batches: list[dict], *, device: torch.device, precision: str,
               grad_clip: float | None, bounds: list[tuple[torch.nn.Parameter, float, float]]
               ) -> dict[str, torch.Tensor]:
    """One optimizer step over the step's micro-batches; returns the method's logged scalars, detached and
    on the device (no host sync here: the caller reads them on logging steps only).

    `module` is what runs the forward (the TrainModule `core`, possibly inside DDP / torch.compile);
    `bounds` are the (parameter, low, high) temperatures clamped before the step (the DeCLIP code clamps
    after the forward, which only matters when the initial value is out of bounds) and after it (CLIP)."""
    batches = [to_device(b, device) for b in batches]
    if len(batches) == 1:
        with autocast(device, precision):
            out = module(batches[0])
        scaler.scale(out["loss"]).backward()
    else:
        out = accumulate(module, core, scaler, batches, device=device, precision=precision)
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    clamp_scales(bounds)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    clamp_scales(bounds)
    return {key: value.detach() for key, value in out.items()}
