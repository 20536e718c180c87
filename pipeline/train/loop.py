"""One training stage (pretrain or finetune), top to bottom: set-up, resume, loop, final checkpoint.

Gradient accumulation: each micro-batch's loss is divided by grad_accum_steps before backward, so the
step's gradient is the gradient of the MEAN of the micro-batch losses. For a contrastive loss this is
not the loss of one big batch: each micro-batch's rows only see the negatives of that micro-batch
(global across ranks). Use more processes, not accumulation, to enlarge the set of negatives.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Experiment, to_dict
from ..data.loader import LoaderCounters, build_train_loader
from ..errors import UserError
from ..methods import create_method
from ..models import create_model, image_size_of, context_length_of, load_checkpoint, resolve_model_config
from ..models.export import export_open_clip
from ..models.resample import load_resampled
from ..reduction import check_image
from ..reduction.image import apply_image_reduction
from ..reduction.text import build_text_transform
from ..utils.io import torch_save
from .. import distributed
from . import checkpoint
from .metrics import MetricsLog
from .optim import build_optimizer, build_scheduler, total_steps


@dataclass
class Position:
    """Where training is: optimizer steps done, samples seen, next micro-batch (epoch, batch)."""
    step: int = 0
    samples_seen: int = 0
    epoch: int = 0
    batch: int = 0


class TrainModule(torch.nn.Module):
    """Model + method in one module, so DDP syncs the gradients of method heads too."""

    def __init__(self, model: torch.nn.Module, method: torch.nn.Module):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, batch: dict) -> dict:
        return self.method(self.model, batch)


def build_model(experiment: Experiment, stage_name: str, init: str | Path | None) -> tuple[torch.nn.Module, dict]:
    """The stage's model at its image size / context length, from `init` weights (resampled) if given."""
    stage = experiment.stage(stage_name)
    config = resolve_model_config(experiment.model.name, experiment.model.config,
                                  image_size=stage.image_size, context_length=stage.text_length)
    torch.manual_seed(stage.seed)  # identical initial weights on every rank
    model = create_model(config)
    if init is not None:
        load_resampled(model, load_checkpoint(init)["model"], source=str(init))
    red = stage.image_reduction
    if red.strategy != "none":  # installing refuses a tower without a patch grid; then the grid is checked
        apply_image_reduction(model, red.strategy, red.tokens, red.grid_window)
        check_image(red, where=stage_name, grid=tuple(model.visual.grid_size))
    if stage.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model, config


def load_method_state(method: torch.nn.Module, init: str | Path | None) -> None:
    """Method heads/queues from the previous stage's final checkpoint, when it carries them."""
    if init is None:
        return
    state = load_checkpoint(init).get("method") or {}
    if state:
        method.load_state_dict(state)


def method_hooks(experiment: Experiment, method, image_size: int) -> dict:
    """The loader hooks a method asks for: augmented image views, augmented captions."""
    from ..data.views import CaptionAugmenter, ViewMaker

    hooks = {}
    if method.image_views:
        hooks["view_maker"] = ViewMaker(views=method.image_views, image_size=image_size,
                                        crop_scale=getattr(method, "view_crop_scale", (0.08, 1.0)))
    if method.text_augment:
        hooks["caption_augmenter"] = CaptionAugmenter(alpha=experiment.method_options.text_aug_alpha)
    return hooks


def micro_batches(loader, position: Position):
    """(epoch, batch index, batch) from `position` onwards, epoch after epoch."""
    epoch, start = position.epoch, position.batch
    while True:
        produced = 0
        for index, batch in enumerate(loader.epoch(epoch, start), start=start):
            produced += 1
            yield epoch, index, batch
        if produced == 0 and start == 0:
            raise UserError("training data: an epoch produced no batch (empty or unreadable shards)")
        epoch, start = epoch + 1, 0


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_step(module, raw_model, optimizer, scaler, batches: list[dict], *, device: torch.device,
               precision: str, grad_clip: float | None, logit_scale_max: float) -> dict[str, float]:
    """One optimizer step over micro-batches; returns the mean of the logged scalars."""
    sums: dict[str, float] = {}
    for i, batch in enumerate(batches):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "skipped"}
        last = i == len(batches) - 1
        sync = module.no_sync() if hasattr(module, "no_sync") and not last else nullcontext()
        with sync:  # DDP all-reduces gradients only on the last micro-batch
            with autocast(device, precision):
                out = module(batch)
            scaler.scale(out["loss"] / len(batches)).backward()
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(distributed.mean_across(value.detach().float()))
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():  # CLIP: temperature may not drop below 1/logit_scale_max
        raw_model.logit_scale.clamp_(0, math.log(logit_scale_max))
    return {key: value / len(batches) for key, value in sums.items()}


def fingerprint(experiment: Experiment, stage_name: str, train_data: Path, init: Path | None) -> dict:
    """What a resumable checkpoint must match to be resumed: same config, data list and init file."""
    import hashlib

    return {"experiment": to_dict(experiment), "stage": stage_name,
            "train_data": hashlib.sha1(Path(train_data).read_bytes()).hexdigest(),
            "init": None if init is None else [Path(init).stat().st_size, Path(init).stat().st_mtime_ns]}


def resume(folder: Path, expected: dict, parts: dict, *, rank: int, world_size: int) -> Position:
    """Restore model/optimizer/... and RNG from the newest matching checkpoint in `folder`.
    Checkpoints of another configuration (an edited experiment, new data) are deleted instead."""
    ckpt = checkpoint.load_latest(folder)
    if ckpt is None:
        return Position()
    if ckpt.get("fingerprint") != expected:
        distributed.barrier()  # every rank has read the folder before rank 0 empties it
        if rank == 0:
            print(f"{folder}: checkpoints are from another configuration; starting afresh", flush=True)
            for path in checkpoint.list_checkpoints(folder):
                path.unlink(missing_ok=True)
        return Position()
    for name, part in parts.items():
        if ckpt[name]:
            part.load_state_dict(ckpt[name])
    if len(ckpt["rng"]) == world_size:
        checkpoint.set_rng_state(ckpt["rng"][rank])
    data = ckpt["data"]
    if rank == 0:
        print(f"resuming from {folder}/step_{ckpt['step']:08d}.pt (epoch {data['epoch']}, batch {data['batch']})",
              flush=True)
    return Position(step=ckpt["step"], samples_seen=ckpt["samples_seen"], epoch=data["epoch"], batch=data["batch"])


def save_checkpoint(folder: Path, position: Position, parts: dict, extra: dict, *, keep: int) -> None:
    """Collective (per-rank RNG states are gathered); rank 0 writes."""
    rngs = distributed.gather_objects(checkpoint.rng_state())
    if distributed.is_main():
        payload = {name: part.state_dict() for name, part in parts.items()}
        payload.update(extra, rng=rngs, step=position.step, samples_seen=position.samples_seen,
                       data={"epoch": position.epoch, "batch": position.batch})
        checkpoint.save(folder, position.step, payload, keep=keep)
    distributed.barrier()


def train(*, experiment: Experiment, stage_name: str, train_data: str | Path, out: str | Path,
          init: str | Path | None = None) -> Path:
    """Run (or resume) one stage and write its final checkpoint to `out`; returns `out`."""
    stage = experiment.stage(stage_name)
    device = distributed.init_from_env()
    rank, world_size = distributed.world()
    out, folder = Path(out), Path(out).parent
    model, model_config = build_model(experiment, stage_name, init)
    method = create_method(experiment.method, model, to_dict(experiment.method_options))
    load_method_state(method, init)
    model.to(device)
    method.to(device)
    loader = build_train_loader(
        stats_path=train_data, image_size=image_size_of(model_config), augment=stage.augment,
        seed=stage.seed, workers=stage.workers, shuffle_shards=stage.shuffle_shards,
        text_transform=build_text_transform(stage.text_reduction, context_length_of(model_config)),
        batch_size=stage.batch_size // (world_size * stage.grad_accum_steps), rank=rank, world_size=world_size,
        pin_memory=device.type == "cuda", device=device, **method_hooks(experiment, method, image_size_of(model_config)))
    steps = total_steps(data_samples=loader.samples, batch_size=stage.batch_size, epochs=stage.epochs,
                        samples=stage.samples)
    named = list(model.named_parameters()) + [(f"method.{n}", p) for n, p in method.named_parameters()]
    optimizer = build_optimizer(named, lr=stage.lr, weight_decay=stage.weight_decay, betas=stage.betas, eps=stage.eps)
    scheduler = build_scheduler(optimizer, total=steps, warmup=stage.warmup_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=stage.precision == "fp16")
    torch.manual_seed(stage.seed + 1000 * (rank + 1))  # training-time randomness (patch masks) per rank
    parts = {"model": model, "method": method, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    expected = fingerprint(experiment, stage_name, Path(train_data), None if init is None else Path(init))
    position = resume(folder / "checkpoints", expected, parts, rank=rank, world_size=world_size)
    module = TrainModule(model, method)
    if world_size > 1:
        # broadcast_buffers=False: method buffers (e.g. DeCLIP's 65k feature queue) are built identically
        # on every rank from gathered features; re-sending them each step would cost ~134 MB per step.
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    if stage.compile:
        module = torch.compile(module)
    extra = {"fingerprint": expected, "model_config": model_config, "experiment": to_dict(experiment),
             "stage": stage_name}
    run_steps(module, model, optimizer, scheduler, scaler, loader, position, stage=stage, steps=steps,
              device=device, folder=folder, save=lambda: save_checkpoint(
                  folder / "checkpoints", position, parts, extra, keep=stage.keep_checkpoints))
    if rank == 0:
        weights = model.state_dict()
        torch_save({"model": weights, "model_config": model_config, "experiment": to_dict(experiment),
                    "stage": stage_name, "step": position.step, "samples_seen": position.samples_seen,
                    "method": method.state_dict()}, out)
        export_open_clip(model=weights, model_config=model_config, folder=folder / "open_clip",
                         name=f"clipforge-{experiment.name}-{stage_name}")
    distributed.barrier()
    distributed.cleanup()
    return out


def run_steps(module, model, optimizer, scheduler, scaler, loader, position: Position, *, stage, steps: int,
              device: torch.device, folder: Path, save) -> None:
    """The loop: gather micro-batches, step, log every log_every, checkpoint every checkpoint_every."""
    main = distributed.is_main()
    log = MetricsLog(folder, resume_step=position.step, enabled=main)
    stream = micro_batches(loader, position)
    per_epoch, counters = loader.batches_per_epoch(), LoaderCounters(unused_per_epoch=loader.unused_per_epoch())
    tick, tick_samples = time.perf_counter(), position.samples_seen
    module.train()
    while position.step < steps:
        batches = []
        for _ in range(stage.grad_accum_steps):
            epoch, index, batch = next(stream)
            counters.take(batch, epoch)  # removes batch["loader"]
            batches.append(batch)
        position.epoch, position.batch = divmod(epoch * per_epoch + index + 1, per_epoch)
        scheduler.step_update(position.step + 1)
        values = train_step(module, model, optimizer, scaler, batches, device=device, precision=stage.precision,
                            grad_clip=stage.grad_clip, logit_scale_max=stage.logit_scale_max)
        position.step += 1
        position.samples_seen += stage.batch_size
        if position.step % stage.log_every == 0 or position.step == steps:
            now = time.perf_counter()
            record = {"step": position.step, "samples": position.samples_seen, "epoch": position.epoch,
                      "lr": optimizer.param_groups[0]["lr"], "samples_per_s": (position.samples_seen - tick_samples) / (now - tick),
                      **counters.flush(device), **values}
            tick, tick_samples = now, position.samples_seen
            log.log(record)
            if main:
                print(f"step {position.step}/{steps} epoch {position.epoch} loss {record['loss']:.4f} "
                      f"lr {record['lr']:.2e} logit_scale {model.logit_scale.exp().item():.2f} "
                      f"{record['samples_per_s']:.1f} samples/s", flush=True)
        if position.step % stage.checkpoint_every == 0 and position.step < steps:
            save()
    log.close()
