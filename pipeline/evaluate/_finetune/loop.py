"""Supervised fine-tuning loop shared by FT-CLIP (finetune_eval) and the ResNet-50 baseline: DeepSpeed engine,
warmup + cosine lr, label smoothing or mixup/cutmix targets, timm ModelEmaV3, test accuracy of model and EMA per
epoch. Settings come from the evaluation's config section (the schema names and defaults every key).
"""
from __future__ import annotations

import math
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from ...errors import UserError
from .._metrics import classification_metrics
from .engine import init_engine, set_lr


def lr_at(step: int, *, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warmup to lr, then half-cosine down to min_lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def _loss_and_mixup(s, num_classes: int):
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    if s.mixup > 0 or s.cutmix > 0:
        mix = Mixup(mixup_alpha=s.mixup, cutmix_alpha=s.cutmix, label_smoothing=s.label_smoothing,
                    num_classes=num_classes)
        return SoftTargetCrossEntropy(), mix
    return torch.nn.CrossEntropyLoss(label_smoothing=s.label_smoothing), None


@torch.no_grad()
def evaluate(model, dataset, *, batch_size: int, workers: int, device) -> dict[str, float]:
    model.eval()
    logits, labels = [], []
    dtype = next(model.parameters()).dtype  # bf16 / fp16 engines hold low-precision weights
    for images, targets in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        logits.append(model(images.to(device, dtype=dtype)).float().cpu())
        labels.append(torch.as_tensor(targets))
    return classification_metrics(torch.cat(logits), torch.cat(labels))


def _train_loader(dataset, s, world: int, rank: int, micro: int):
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=s.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=micro, sampler=sampler, num_workers=s.workers, drop_last=True)
    if len(loader) < s.grad_accum_steps:
        raise UserError(f"batch_size: {s.batch_size} is larger than the training set ({len(dataset)} images)")
    return sampler, loader


def _epoch(engine, loader, criterion, mixup, ema, sched: dict, device) -> float:
    engine.train()
    total = 0.0
    dtype = next(engine.module.parameters()).dtype
    for images, targets in loader:
        set_lr(engine, lr_at(engine.global_steps, **sched))
        images, targets = images.to(device), targets.to(device)
        if mixup is not None:
            images, targets = mixup(images, targets)
        images = images.to(dtype)
        loss = criterion(engine(images), targets)
        engine.backward(loss)
        before = engine.global_steps
        engine.step()
        if ema is not None and engine.global_steps > before:
            ema.update(engine.module, step=engine.global_steps)
        total += loss.item()
    return total / max(1, len(loader))


def train_classifier(*, model, param_groups: list[dict], train_set, test_set, num_classes: int,
                     settings, eval_batch_size: int) -> dict:
    """Fine-tune with `settings` (an evaluate.<evaluation> config section: epochs, batch_size, lr, ...); returns {'history': [...per epoch], 'final', 'final_ema', 'best_epoch', 'model', 'ema'}."""
    from timm.utils import ModelEmaV3

    s = settings
    torch.manual_seed(s.seed)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if s.batch_size % (world * s.grad_accum_steps):
        raise UserError(f"batch_size: {s.batch_size} does not divide by processes x grad_accum_steps "
                        f"= {world * s.grad_accum_steps}")
    micro = s.batch_size // (world * s.grad_accum_steps)
    engine, device = init_engine(model=model, param_groups=param_groups, lr=s.lr, betas=s.betas, eps=s.eps,
                                 micro_batch=micro, grad_accum_steps=s.grad_accum_steps, zero_stage=s.zero_stage,
                                 precision=s.precision, grad_clip=s.grad_clip)
    rank = dist.get_rank()
    sampler, loader = _train_loader(train_set, s, world, rank, micro)
    steps_per_epoch = len(loader) // s.grad_accum_steps
    sched = dict(total=s.epochs * steps_per_epoch, warmup=int(round(s.warmup_epochs * steps_per_epoch)),
                 lr=s.lr, min_lr=s.min_lr)
    criterion, mixup = _loss_and_mixup(s, num_classes)
    ema = ModelEmaV3(engine.module, decay=s.ema_decay) if s.ema_decay else None
    history = []
    for epoch in range(s.epochs):
        sampler.set_epoch(epoch)
        start = time.time()
        loss = _epoch(engine, loader, criterion, mixup, ema, sched, device)
        row = {"epoch": epoch + 1, "train_loss": loss, "seconds": time.time() - start}
        if rank == 0:  # ZeRO <= 2 keeps full weights on every rank: rank 0 scores the test set alone
            row["test"] = evaluate(engine.module, test_set, batch_size=eval_batch_size, workers=s.workers,
                                   device=device)
            if ema is not None:
                row["test_ema"] = evaluate(ema.module, test_set, batch_size=eval_batch_size, workers=s.workers,
                                           device=device)
            print(f"epoch {epoch + 1}/{s.epochs}: loss {loss:.4f}, test acc1 {row['test']['acc1']:.4f}"
                  + (f", EMA {row['test_ema']['acc1']:.4f}" if ema is not None else ""), file=sys.stderr, flush=True)
        dist.barrier()
        history.append(row)
    return _summary(history, engine.module, ema, rank)


def _summary(history: list[dict], model, ema, rank: int) -> dict:
    out = {"history": history, "model": model, "ema": None if ema is None else ema.module, "rank": rank}
    if rank == 0:
        best = max(history, key=lambda r: r["test"]["acc1"])
        out.update(final=history[-1]["test"], best_epoch=best["epoch"], best_acc1=best["test"]["acc1"],
                   final_ema=history[-1].get("test_ema"))
        if ema is not None:
            best_ema = max(history, key=lambda r: r["test_ema"]["acc1"])
            out.update(best_ema_epoch=best_ema["epoch"], best_ema_acc1=best_ema["test_ema"]["acc1"])
    return out
