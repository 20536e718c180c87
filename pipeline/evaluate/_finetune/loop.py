"""Supervised fine-tuning loop shared by FT-CLIP (finetune_eval), the ResNet-50 baseline and SLIP's linear
classification: DeepSpeed engine, BEiT's warmup + cosine lr, label smoothing or mixup/cutmix targets, timm
ModelEmaV3 in fp32, and model selection on a validation part held out from train.

Every epoch scores model and EMA on the validation part (never on test); the test set is scored once at the end,
for the last epoch and for the epoch the validation part chose. Each finished epoch is a resumable checkpoint
(resume.py); the RNGs are reseeded per epoch from (seed, epoch, rank), so a killed run, rerun, ends with the
same weights and numbers as an uninterrupted one. Settings come from the evaluation's config section.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from ...config import to_dict
from ...errors import UserError
from .._metrics import classification_metrics
from . import resume
from .engine import autocast, grad_scaler, init_engine, set_lr


def lr_at(step: int, *, total: int, warmup: int, lr: float, min_lr: float, warmup_start_lr: float) -> float:
    """BEiT / FT-CLIP utils.cosine_scheduler at one step: np.linspace(warmup_start_lr, lr, warmup) over the warmup
    steps (both ends included), then min_lr + (lr - min_lr)/2 (1 + cos(pi i / (total - warmup)))."""
    if step < warmup:
        return warmup_start_lr + (lr - warmup_start_lr) * (step / (warmup - 1) if warmup > 1 else 1.0)
    i = step - warmup
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, i / max(1, total - warmup))))


def _loss_and_mixup(s, num_classes: int):
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    if s.mixup > 0 or s.cutmix > 0:
        mix = Mixup(mixup_alpha=s.mixup, cutmix_alpha=s.cutmix, label_smoothing=s.label_smoothing,
                    num_classes=num_classes)
        return SoftTargetCrossEntropy(), mix
    return torch.nn.CrossEntropyLoss(label_smoothing=s.label_smoothing), None


@torch.no_grad()
def evaluate(model, dataset, *, batch_size: int, workers: int, device, precision: str) -> dict[str, float]:
    """Metrics of `model` on `dataset` (eval mode, under the training precision's autocast)."""
    model.eval()
    logits, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        with autocast(precision, torch.device(device)):
            out = model(images.to(device))
        logits.append(out.float().cpu())
        labels.append(torch.as_tensor(targets))
    return classification_metrics(torch.cat(logits), torch.cat(labels))


def _seed_epoch(seed: int, epoch: int, rank: int) -> torch.Generator:
    """Reseed torch, numpy and random for one epoch of one rank; the loader's own generator comes from the same
    numbers, so an epoch replays identically whether or not the run was resumed before it."""
    value = (seed * 1_000_003 + epoch * 1_009 + rank) % 2 ** 31
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)
    return torch.Generator().manual_seed(value)


def _train_loader(dataset, s, world: int, rank: int, micro: int):
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=s.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=micro, sampler=sampler, num_workers=s.workers, drop_last=True)
    if len(loader) < s.grad_accum_steps:
        raise UserError(f"batch_size: {s.batch_size} is larger than the training set ({len(dataset)} images)")
    return sampler, loader


def _epoch(engine, loader, criterion, mixup, ema, sched, device) -> float:
    """One pass; `sched(step)` is the lr of an optimizer step. Returns the mean training loss."""
    engine.train()
    total = 0.0
    for images, targets in loader:
        set_lr(engine, sched(engine.global_steps))
        images, targets = images.to(device), targets.to(device)
        if mixup is not None:
            images, targets = mixup(images, targets)
        loss = criterion(engine(images).float(), targets)
        engine.backward(loss)
        before = engine.global_steps
        engine.step()
        if ema is not None and engine.global_steps > before:
            ema.update(engine.module)  # constant decay from the first step, as FT-CLIP's timm ModelEma
        total += loss.item()
    return total / max(1, len(loader))


def _fp32_masters(module) -> None:
    """The EMA and the saved weights read the module's parameters: they must be the fp32 masters."""
    low = sorted({str(p.dtype) for p in module.parameters() if p.dtype != torch.float32})
    if low:
        raise RuntimeError(f"engine module holds {low} parameters: the EMA would average rounded weights")


def _schedule(s, steps_per_epoch: int, per_epoch: bool):
    total, warmup = s.epochs * steps_per_epoch, s.warmup_steps
    if warmup is None:
        warmup = int(round(s.warmup_epochs * steps_per_epoch))
    kw = dict(lr=s.lr, min_lr=s.min_lr, warmup_start_lr=s.warmup_start_lr)
    if per_epoch:  # MoCo v3 / SLIP main_linear: one lr per epoch, cosine over epochs
        return lambda step: lr_at(step // steps_per_epoch, total=s.epochs, warmup=0, **kw)
    return lambda step: lr_at(step, total=total, warmup=warmup, **kw)


class _Best:
    """Best validation epoch so far of one model (raw or EMA), with a CPU copy of its weights."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.epoch, self.acc1, self.weights = state.get("epoch"), state.get("acc1"), state.get("weights")

    def offer(self, epoch: int, metrics: dict, module) -> None:
        if self.acc1 is None or metrics["acc1"] > self.acc1:
            self.epoch, self.acc1 = epoch, metrics["acc1"]
            self.weights = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def state(self) -> dict:
        return {"epoch": self.epoch, "acc1": self.acc1, "weights": self.weights}


def train_classifier(*, model, optimizer, train_set, val_set, test_set, num_classes: int, settings,
                     eval_batch_size: int, resume_dir: Path, per_epoch_schedule: bool = False) -> dict:
    """Fine-tune with `settings` (an evaluate.<evaluation> config section). Returns {'history', 'rank', 'model',
    'ema', 'val_indices'...} and on rank 0 the test metrics: 'final', 'final_ema', and 'best' / 'best_ema' (test
    metrics of the epoch chosen on the validation part; absent without one) with 'best_epoch' / 'best_ema_epoch'."""
    from timm.utils import ModelEmaV3

    s = settings
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if s.batch_size % (world * s.grad_accum_steps):
        raise UserError(f"batch_size: {s.batch_size} does not divide by processes x grad_accum_steps "
                        f"= {world * s.grad_accum_steps}")
    micro = s.batch_size // (world * s.grad_accum_steps)
    torch.manual_seed(s.seed)
    engine, device = init_engine(model=model, optimizer=optimizer, micro_batch=micro,
                                 grad_accum_steps=s.grad_accum_steps, zero_stage=s.zero_stage,
                                 precision=s.precision, grad_clip=s.grad_clip)
    _fp32_masters(engine.module)
    rank = dist.get_rank()
    if rank == 0 and s.precision != "fp32":
        print(f"finetune: DeepSpeed torch_autocast {s.precision} on {device.type}, fp32 master weights",
              file=sys.stderr, flush=True)
    sampler, loader = _train_loader(train_set, s, world, rank, micro)
    sched = _schedule(s, len(loader) // s.grad_accum_steps, per_epoch_schedule)
    criterion, mixup = _loss_and_mixup(s, num_classes)
    ema = ModelEmaV3(engine.module, decay=s.ema_decay, dtype=torch.float32) if s.ema_decay else None
    run = _Run(engine, ema, s, resume_dir, rank, world, len(train_set))
    evaluate_kw = dict(batch_size=eval_batch_size, workers=s.workers, device=device, precision=s.precision)
    for epoch in range(run.start_epoch, s.epochs):
        sampler.set_epoch(epoch)
        loader.generator = _seed_epoch(s.seed, epoch, rank)
        start = time.time()
        loss = _epoch(engine, loader, criterion, mixup, ema, sched, device)
        row = {"epoch": epoch + 1, "train_loss": loss, "seconds": time.time() - start}
        if rank == 0 and val_set is not None:  # ZeRO <= 2 keeps full weights on every rank
            row["val"] = evaluate(engine.module, val_set, **evaluate_kw)
            run.best.offer(epoch + 1, row["val"], engine.module)
            if ema is not None:
                row["val_ema"] = evaluate(ema.module, val_set, **evaluate_kw)
                run.best_ema.offer(epoch + 1, row["val_ema"], ema.module)
        if rank == 0:
            print(f"epoch {epoch + 1}/{s.epochs}: loss {loss:.4f}" + "".join(
                f", {k} acc1 {row[k]['acc1']:.4f}" for k in ("val", "val_ema") if k in row), file=sys.stderr, flush=True)
        run.history.append(row)
        run.checkpoint(epoch + 1)
    return run.finish(test_set, evaluate_kw)


class _Run:
    """The state a resumable checkpoint carries, restored at start and written after every epoch."""

    def __init__(self, engine, ema, s, folder: Path, rank: int, world: int, train_size: int):
        self.engine, self.ema, self.s, self.folder, self.rank = engine, ema, s, Path(folder), rank
        self.key = resume.fingerprint(to_dict(s), world, train_size)
        self.history, self.start_epoch, self.best, self.best_ema = [], 0, _Best(), _Best()
        loaded = resume.load(self.folder, expected=self.key, rank=rank, zero_stage=s.zero_stage)
        if loaded is not None:
            self._restore(*loaded)

    def _restore(self, state: dict, optimizer_state: dict) -> None:
        e = self.engine
        e.module.load_state_dict(state["model"])
        if self.s.zero_stage == 0:
            e.optimizer.load_state_dict(optimizer_state)
        else:
            parts = [None] * dist.get_world_size()
            parts[dist.get_rank()] = optimizer_state
            e.optimizer.load_state_dict(parts, load_from_fp32_weights=True)
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        if grad_scaler(e) is not None:
            grad_scaler(e).load_state_dict(state["scaler"])
        e.global_steps, e.global_samples, e.micro_steps = state["steps"]
        self.history, self.start_epoch = state["history"], state["epoch"]
        self.best, self.best_ema = _Best(state["best"]), _Best(state["best_ema"])
        if self.rank == 0:
            print(f"finetune: resuming after epoch {self.start_epoch} from {self.folder}", file=sys.stderr, flush=True)

    def checkpoint(self, epoch: int) -> None:
        """ZeRO 1/2: every rank's optimizer partition, then (barrier) rank 0's state.pt naming the epoch, then
        (barrier) older partitions dropped; a kill anywhere leaves a complete earlier or later checkpoint."""
        e, zero = self.engine, self.s.zero_stage
        if zero:
            resume.save_partition(self.folder, e.optimizer.state_dict(), rank=self.rank, epoch=epoch)
            dist.barrier()
        if self.rank == 0:
            state = {"fingerprint": self.key, "epoch": epoch, "history": self.history,
                     "model": e.module.state_dict(), "ema": None if self.ema is None else self.ema.module.state_dict(),
                     "scaler": None if grad_scaler(e) is None else grad_scaler(e).state_dict(),
                     "steps": [e.global_steps, e.global_samples, e.micro_steps],
                     "best": self.best.state(), "best_ema": self.best_ema.state(),
                     "optimizer": None if zero else e.optimizer.state_dict()}
            resume.save_state(self.folder, state)
        dist.barrier()
        if zero:
            resume.prune(self.folder, rank=self.rank, epoch=epoch)

    def _score_best(self, out: dict, key: str, best: _Best, live, evaluate_kw: dict, test_set) -> None:
        """Test metrics of the validation-chosen epoch: its weights loaded into `live`, then put back."""
        if best.weights is None:
            return
        final = {k: v.detach().clone() for k, v in live.state_dict().items()}
        live.load_state_dict(best.weights)
        out[key], out[f"{key}_epoch"], out[f"{key}_val_acc1"] = evaluate(live, test_set, **evaluate_kw), best.epoch, best.acc1
        live.load_state_dict(final)

    def finish(self, test_set, evaluate_kw: dict) -> dict:
        module, ema = self.engine.module, None if self.ema is None else self.ema.module
        out = {"history": self.history, "model": module, "ema": ema, "rank": self.rank}
        if self.rank == 0:
            out["final"] = evaluate(module, test_set, **evaluate_kw)
            out["final_ema"] = None if ema is None else evaluate(ema, test_set, **evaluate_kw)
            self._score_best(out, "best", self.best, module, evaluate_kw, test_set)
            if ema is not None:
                self._score_best(out, "best_ema", self.best_ema, ema, evaluate_kw, test_set)
        dist.barrier()
        return out
