"""One training stage (pretrain or finetune), top to bottom: set-up, resume, loop, final checkpoint.
The optimizer step itself (micro-batches, gradient accumulation, clamps) is pipeline/train/step.py.
"""
from __future__ import annotations

import time
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
from .checks import check_training
from .metrics import MetricsLog
from .optim import build_optimizer, build_scheduler, total_steps
from .step import train_step


@dataclass
class Position:
    """Where training is: optimizer steps done, samples seen, next micro-batch (epoch, batch)."""
    step: int = 0
    samples_seen: int = 0
    epoch: int = 0
    batch: int = 0


class TrainModule(torch.nn.Module):
    """Model + method in one module, so DDP syncs the gradients of method heads too. `features_only`:
    the method's per-sample features instead of its loss (gradient accumulation, pipeline/train/step.py)."""

    def __init__(self, model: torch.nn.Module, method: torch.nn.Module):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, batch: dict, features_only: bool = False) -> dict:
        if features_only:
            return self.method.features(self.model, batch)
        return self.method(self.model, batch)


def build_model(experiment: Experiment, stage_name: str, init: str | Path | None) -> tuple[torch.nn.Module, dict]:
    """The stage's model at its image size / context length, from `init` weights (resampled) if given."""
    stage = experiment.stage(stage_name)
    config = resolve_model_config(experiment.model.name, experiment.model.config, image_size=stage.image_size,
                                  context_length=stage.text_length, pos_embed_type=stage.pos_embed_type)
    torch.manual_seed(stage.seed)  # identical initial weights on every rank
    model = create_model(config)
    if init is not None:
        load_resampled(model, load_checkpoint(init)["model"], source=str(init))
    if stage.freeze_patch_embed:
        model.visual.conv1.requires_grad_(False)
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


# Stage keys that say how a run is laid out and operated, not what it computes: a retry that comes back with
# fewer nodes, processes or loader workers (or another log / checkpoint cadence) resumes the same run.
LAYOUT_KEYS = ("processes", "workers", "resources", "log_every", "checkpoint_every", "keep_checkpoints", "compile")


def fingerprint(experiment: Experiment, stage_name: str, train_data: Path, init: Path | None) -> dict:
    """What a resumable checkpoint must match to be resumed: same config (but for its layout keys), data list and
    init file."""
    import hashlib

    config = to_dict(experiment)
    for stage in Experiment.STAGES:
        config[stage] = {k: v for k, v in config[stage].items() if k not in LAYOUT_KEYS}
    return {"experiment": config, "stage": stage_name,
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
    restore_rank_state(parts["method"], ckpt.get("method_ranks"), rank=rank, world_size=world_size)
    data = ckpt["data"]
    if rank == 0:
        print(f"resuming from {folder}/step_{ckpt['step']:08d}.pt (epoch {data['epoch']}, batch {data['batch']})",
              flush=True)
    if len(ckpt["rng"]) == world_size:
        checkpoint.set_rng_state(ckpt["rng"][rank])
    else:  # another world size: the data stream continues exactly, training-time draws restart per rank
        torch.manual_seed(expected["experiment"][expected["stage"]]["seed"] + 1000 * (rank + 1) + ckpt["step"])
        if rank == 0:
            print(f"resuming on {world_size} ranks a run saved on {len(ckpt['rng'])}: batches continue exactly "
                  f"(none repeated or skipped); patch and text masks are drawn afresh from (seed, step, rank)",
                  flush=True)
    return Position(step=ckpt["step"], samples_seen=ckpt["samples_seen"], epoch=data["epoch"], batch=data["batch"])


def restore_rank_state(method, saved: list[dict] | None, *, rank: int, world_size: int) -> None:
    """Each rank's own rank-local method state (DeCLIP's per-rank queue). Under another world size rank r
    takes saved rank r mod (saved ranks): every bank keeps a real history, some appear twice or not at all."""
    if not saved:
        return
    method.load_state_dict(saved[rank % len(saved)], strict=False)
    if rank == 0 and len(saved) != world_size:
        print(f"method state of {len(saved)} ranks restored on {world_size} ranks (rank r takes saved rank "
              f"r mod {len(saved)})", flush=True)


def save_checkpoint(folder: Path, position: Position, parts: dict, extra: dict, *, keep: int) -> None:
    """Collective (per-rank RNG states and rank-local method state are gathered); rank 0 writes."""
    rngs = distributed.gather_objects(checkpoint.rng_state())
    method = parts["method"]
    local = {k: v.cpu() for k, v in method.state_dict().items() if k in set(method.rank_local_keys())}
    ranks = distributed.gather_to_main(local) if local else None
    if distributed.is_main():
        payload = {name: part.state_dict() for name, part in parts.items()}
        payload.update(extra, rng=rngs, step=position.step, samples_seen=position.samples_seen,
                       data={"epoch": position.epoch, "batch": position.batch}, method_ranks=ranks)
        checkpoint.save(folder, position.step, payload, keep=keep)
    distributed.barrier()


@dataclass
class Engine:
    """What an optimizer step needs: `module` runs the forward (`core`, or DDP / torch.compile around it);
    `bounds` are the (parameter, low, high) temperatures clamped around each step."""
    module: torch.nn.Module
    core: TrainModule
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    bounds: list

    def step(self, batches: list[dict], step: int, *, stage, device: torch.device) -> dict[str, torch.Tensor]:
        self.scheduler.step(step)
        return train_step(self.module, self.core, self.optimizer, self.scaler, batches, device=device,
                          precision=stage.precision, grad_clip=stage.grad_clip, bounds=self.bounds)


def train(*, experiment: Experiment, stage_name: str, train_data: str | Path, out: str | Path,
          init: str | Path | None = None) -> Path:
    """Run (or resume) one stage and write its final checkpoint to `out`; returns `out`."""
    stage = experiment.stage(stage_name)
    check_training(experiment, stage_name, where=experiment.name)
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
    optimizer = build_optimizer({"": model, "method": method}, lr=stage.lr, weight_decay=stage.weight_decay,
                                rule=stage.weight_decay_rule, betas=stage.betas, eps=stage.eps)
    scaler = torch.amp.GradScaler(device.type, enabled=stage.precision == "fp16")
    torch.manual_seed(stage.seed + 1000 * (rank + 1))  # training-time randomness (patch masks) per rank
    parts = {"model": model, "method": method, "optimizer": optimizer, "scaler": scaler}
    expected = fingerprint(experiment, stage_name, Path(train_data), None if init is None else Path(init))
    position = resume(folder / "checkpoints", expected, parts, rank=rank, world_size=world_size)
    core = module = TrainModule(model, method)
    if world_size > 1:
        # broadcast_buffers=False: method buffers (DeCLIP's per-rank feature queue) differ between ranks
        # by design; re-sending rank 0's each step would also cost ~134 MB per step.
        # find_unused_parameters=True: DDP then keeps its gradient buckets instead of rebuilding them after a
        # process's first step, so a resumed run all-reduces in the uninterrupted run's order (bit-identical);
        # the price is one walk of the autograd graph per step.
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
            find_unused_parameters=True)
    if stage.compile:
        module = torch.compile(module)
    low, high = stage.logit_scale_bounds
    schedule = build_scheduler(optimizer, stage, total=steps, data_samples=loader.samples)
    engine = Engine(module, core, optimizer, schedule, scaler,
                    bounds=[(model.logit_scale, low, high)] + method.scale_bounds())
    extra = {"fingerprint": expected, "model_config": model_config, "experiment": to_dict(experiment),
             "stage": stage_name}
    run_steps(engine, loader, position, stage=stage, steps=steps, device=device, folder=folder,
              save=lambda: save_checkpoint(folder / "checkpoints", position, parts, extra,
                                           keep=stage.keep_checkpoints))
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


def logged(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """The step's scalars averaged over ranks: one all-reduce and one host sync per logged step."""
    keys = list(values)
    means = distributed.mean_across(torch.stack([values[k].float() for k in keys]))
    return dict(zip(keys, means.tolist()))


def run_steps(engine: Engine, loader, position: Position, *, stage, steps: int, device: torch.device,
              folder: Path, save) -> None:
    """The loop: gather micro-batches, step, log every log_every, checkpoint every checkpoint_every."""
    main = distributed.is_main()
    log = MetricsLog(folder, resume_step=position.step, enabled=main)
    stream = micro_batches(loader, position)
    per_epoch, counters = loader.batches_per_epoch(), LoaderCounters(unused_per_epoch=loader.unused_per_epoch())
    tick, tick_samples = time.perf_counter(), position.samples_seen
    engine.module.train()
    while position.step < steps:
        batches = []
        for _ in range(stage.grad_accum_steps):
            epoch, index, batch = next(stream)
            counters.take(batch, epoch)  # removes batch["loader"]
            batches.append(batch)
        position.epoch, position.batch = divmod(epoch * per_epoch + index + 1, per_epoch)
        values = engine.step(batches, position.step, stage=stage, device=device)
        position.step += 1
        position.samples_seen += stage.batch_size
        if position.step % stage.log_every == 0 or position.step == steps:
            now = time.perf_counter()
            record = {"step": position.step, "samples": position.samples_seen, "epoch": position.epoch,
                      "lr": engine.optimizer.param_groups[0]["lr"],
                      "samples_per_s": (position.samples_seen - tick_samples) / (now - tick),
                      **counters.flush(device), **logged(values)}
            tick, tick_samples = now, position.samples_seen
            log.log(record)
            if main:
                print(f"step {position.step}/{steps} epoch {position.epoch} loss {record['loss']:.4f} "
                      f"lr {record['lr']:.2e} logit_scale {engine.core.model.logit_scale.exp().item():.2f} "
                      f"{record['samples_per_s']:.1f} samples/s", flush=True)
        if position.step % stage.checkpoint_every == 0 and position.step < steps:
            save()
    log.close()
