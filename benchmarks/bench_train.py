"""Train-step throughput: clipforge's step (pipeline.train.loop.train_step) against open_clip_train's
train_one_epoch, on the same model config, batch, precision, optimizer and in-memory batches.

Data loading is left out on purpose (both read the same pre-built tensors) so the ratio measures the
step itself: forward, loss, backward, AdamW, logit-scale clamp and the per-step bookkeeping. The two
loops alternate for --rounds rounds (which one goes first alternates too) so that load from other
processes hits both alike; besides wall-clock samples/s it reports samples per CPU-second of this process
(time.process_time), which other processes on a shared machine disturb much less.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train.py --steps 20 --rounds 3
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time
from types import SimpleNamespace

import torch
import yaml

from pipeline.config import REPO_ROOT
from pipeline.methods import create_method
from pipeline.models import create_model, resolve_model_config
from pipeline.train.loop import TrainModule
from pipeline.train.optim import WarmupCosine, build_optimizer
from pipeline.train.step import train_step

OPEN_CLIP_PRECISION = {"fp32": "fp32", "bf16": "amp_bf16", "fp16": "amp"}


def model_config(image_size: int, text_length: int) -> dict:
    demo = yaml.safe_load((REPO_ROOT / "config" / "experiments" / "demo.yaml").read_text())
    return resolve_model_config(None, demo["model"]["config"], image_size=image_size, context_length=text_length)


def make_batches(steps: int, batch: int, image_size: int, text_length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, 3, image_size, image_size, generator=g),
             torch.randint(1, 49000, (batch, text_length), generator=g)) for _ in range(steps)]


def fresh(cfg: dict, lr: float, steps: int):
    torch.manual_seed(0)
    model = create_model(cfg)
    opt = build_optimizer({"": model}, lr=lr, weight_decay=0.1, rule="open_clip", betas=(0.9, 0.98), eps=1e-6)
    return model, opt


class Clock:
    """Wall and CPU seconds since start()."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rates(self, samples: int) -> tuple[float, float]:
        return samples / (time.perf_counter() - self.wall), samples / (time.process_time() - self.cpu)


def run_ours(cfg: dict, batches: list, precision: str, warmup: int) -> tuple[float, float]:
    model, opt = fresh(cfg, 1e-3, len(batches))
    module = TrainModule(model, create_method("clip", model, {}))
    sched = WarmupCosine(opt, lr=1e-3, total=len(batches), warmup=2, warmup_start_lr=0.0, min_lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=precision == "fp16")
    module.train()
    clock = Clock()
    for step, (images, texts) in enumerate(batches):
        if step == warmup:
            clock.start()
        sched.step(step)
        train_step(module, module, opt, scaler, [{"image": images, "text": texts}], device=torch.device("cpu"),
                   precision=precision, grad_clip=None, bounds=[(model.logit_scale, 0.0, 4.605170185988092)])
    return clock.rates((len(batches) - warmup) * batches[0][0].shape[0])


class _Loader:
    """What train_one_epoch reads from data['train'].dataloader."""

    def __init__(self, batches):
        self.batches, self.num_batches = batches, len(batches)
        self.num_samples = len(batches) * batches[0][0].shape[0]

    def __iter__(self):
        return iter(self.batches)


def run_open_clip(cfg: dict, batches: list, precision: str, warmup: int) -> tuple[float, float]:
    import open_clip
    from open_clip_train.data import DataInfo
    from open_clip_train.scheduler import cosine_lr
    from open_clip_train.train import train_one_epoch

    model, opt = fresh(cfg, 1e-3, len(batches))
    model.output_dict = True
    batch = batches[0][0].shape[0]
    args = SimpleNamespace(device="cpu", precision=OPEN_CLIP_PRECISION[precision], distill=False, accum_freq=1,
                           skip_scheduler=False, horovod=False, grad_clip_norm=None, log_every_n_steps=10**9,
                           batch_size=batch, world_size=1, rank=0, local_rank=0, wandb=False)
    scaler = torch.amp.GradScaler("cpu") if precision == "fp16" else None
    loss = open_clip.ClipLoss()
    sched = cosine_lr(opt, 1e-3, 2, len(batches))
    train_one_epoch(model, {"train": DataInfo(_Loader(batches[:warmup]))}, loss, 0, opt, scaler, sched, None, args)
    clock = Clock()
    clock.start()
    train_one_epoch(model, {"train": DataInfo(_Loader(batches[warmup:]))}, loss, 1, opt, scaler, sched, None, args)
    return clock.rates((len(batches) - warmup) * batch)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per round (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=16, help="demo pretrain: 16 px, 8 tokens")
    p.add_argument("--text-length", type=int, default=8)
    p.add_argument("--precision", choices=list(OPEN_CLIP_PRECISION), default="fp32")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    cfg = model_config(args.image_size, args.text_length)
    batches = make_batches(args.steps + args.warmup, args.batch_size, args.image_size, args.text_length)
    ours, theirs = [], []
    for r in range(args.rounds):
        first, second = (run_ours, run_open_clip) if r % 2 == 0 else (run_open_clip, run_ours)
        results = {fn: fn(cfg, batches, args.precision, args.warmup) for fn in (first, second)}
        ours.append(results[run_ours])
        theirs.append(results[run_open_clip])
        print(f"round {r + 1}: clipforge {ours[-1][0]:7.1f} samples/s ({ours[-1][1]:7.1f} per CPU-s)   "
              f"open_clip_train {theirs[-1][0]:7.1f} samples/s ({theirs[-1][1]:7.1f} per CPU-s)", flush=True)
    print(f"threads {torch.get_num_threads()}, batch {args.batch_size}, {args.image_size} px, "
          f"{args.text_length} tokens, {args.precision}, {args.steps} timed steps x {args.rounds} rounds")
    for i, label in enumerate(("samples/s (wall)", "samples per CPU-second")):
        a, b = statistics.median(o[i] for o in ours), statistics.median(t[i] for t in theirs)
        print(f"median {label}: clipforge {a:.1f}, open_clip_train {b:.1f}, ratio {a / b:.3f} (goal >= 1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
