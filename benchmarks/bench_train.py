"""Train-step throughput: clipforge's step (pipeline.train.step.train_step) against open_clip_train's
train_one_epoch on the same model config, batches, precision, schedule and initial weights.

Part 1 (demo model, 16 px / 8 tokens): samples/s of both, side by side in alternating rounds (which one goes
first alternates too, so load from other processes hits both alike), as wall-clock samples/s and as samples
per CPU-second of this process (time.process_time, which other processes on a shared machine disturb much
less); the ratio per round, its median and spread; and after the same steps from the same weights, the largest
difference between the two runs' weights (the results are equal up to float rounding: open_clip_train builds
torch's default AdamW, a per-tensor loop on CPU, we build the fused one). --compile adds our step with the
stage's `compile: true` (torch.compile of the model + method).

Part 2 (--vit, open_clip's ViT-B-16): each step at full tokens (224 px = 197 image tokens, 77 text tokens) and at
CLIPA's I37/T8 (96 px, 8 text tokens), for both; speed-up = time(full) / time(I37,T8), FLOP ratio from
torch.utils.flop_counter over one forward + backward, and speed-up / FLOP ratio (1.0 = the step's cost shrinks
exactly with its FLOPs; per-step costs that do not shrink with tokens, such as the optimizer, pull it down).

Data loading is left out on purpose (both read the same pre-built tensors): the ratios measure the step.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train.py --steps 20 --rounds 5
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train.py --vit --vit-batch 8 --rounds 3
"""
from __future__ import annotations

import argparse
import logging
import math
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
LR, WD, BETAS, EPS, WARMUP = 1e-3, 0.1, (0.9, 0.98), 1e-6, 2


def demo_config(image_size: int, text_length: int) -> dict:
    demo = yaml.safe_load((REPO_ROOT / "config" / "experiments" / "demo.yaml").read_text())
    return resolve_model_config(None, demo["model"]["config"], image_size=image_size, context_length=text_length)


def make_batches(steps: int, batch: int, image_size: int, text_length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, 3, image_size, image_size, generator=g),
             torch.randint(1, 49000, (batch, text_length), generator=g)) for _ in range(steps)]


class Clock:
    """Wall and CPU seconds since start()."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rates(self, samples: int) -> tuple[float, float]:
        return samples / (time.perf_counter() - self.wall), samples / (time.process_time() - self.cpu)


def run_ours(cfg: dict, batches: list, precision: str, warmup: int, compile_step: bool = False,
             plain_adamw: bool = False):
    """(wall samples/s, CPU samples/s, model) of our step over batches[warmup:] after `warmup` steps;
    `plain_adamw`: torch's default AdamW over our parameter groups instead of the fused one (equality check)."""
    torch.manual_seed(0)
    model = create_model(cfg)
    core = TrainModule(model, create_method("clip", model, {}))
    opt = build_optimizer({"": model}, lr=LR, weight_decay=WD, rule="open_clip", betas=BETAS, eps=EPS)
    if plain_adamw:
        opt = torch.optim.AdamW([{k: v for k, v in g.items() if k in ("params", "weight_decay")}
                                 for g in opt.param_groups], lr=LR, betas=BETAS, eps=EPS)
    sched = WarmupCosine(opt, lr=LR, total=len(batches), warmup=WARMUP, warmup_start_lr=0.0, min_lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=precision == "fp16")
    module = torch.compile(core) if compile_step else core
    bounds = [(model.logit_scale, 0.0, math.log(100))]
    core.train()
    clock = Clock()
    for step, (images, texts) in enumerate(batches):
        if step == warmup:
            clock.start()
        sched.step(step)
        train_step(module, core, opt, scaler, [{"image": images, "text": texts}], device=torch.device("cpu"),
                   precision=precision, grad_clip=None, bounds=bounds)
    return (*clock.rates((len(batches) - warmup) * batches[0][0].shape[0]), model)


class _Loader:
    """What train_one_epoch reads from data['train'].dataloader."""

    def __init__(self, batches):
        self.batches, self.num_batches = batches, len(batches)
        self.num_samples = len(batches) * batches[0][0].shape[0]

    def __iter__(self):
        return iter(self.batches)


def open_clip_optimizer(model: torch.nn.Module) -> torch.optim.AdamW:
    """open_clip_train.main's AdamW: its exclude rule, torch's default implementation."""
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = list(model.named_parameters())
    return torch.optim.AdamW([{"params": [p for n, p in named if exclude(n, p) and p.requires_grad], "weight_decay": 0.},
                              {"params": [p for n, p in named if not exclude(n, p) and p.requires_grad],
                               "weight_decay": WD}], lr=LR, betas=BETAS, eps=EPS)


def run_open_clip(cfg: dict, batches: list, precision: str, warmup: int, compile_step: bool = False):
    import open_clip
    from open_clip_train.data import DataInfo
    from open_clip_train.scheduler import cosine_lr
    from open_clip_train.train import train_one_epoch

    torch.manual_seed(0)
    model = create_model(cfg)
    model.output_dict = True
    opt = open_clip_optimizer(model)
    batch = batches[0][0].shape[0]
    args = SimpleNamespace(device="cpu", precision=OPEN_CLIP_PRECISION[precision], distill=False, accum_freq=1,
                           skip_scheduler=False, horovod=False, grad_clip_norm=None, log_every_n_steps=10**9,
                           batch_size=batch, world_size=1, rank=0, local_rank=0, wandb=False)
    scaler = torch.amp.GradScaler("cpu") if precision == "fp16" else None
    sched = cosine_lr(opt, LR, WARMUP, len(batches))
    loss = open_clip.ClipLoss()
    # epoch 0 = the warmup steps, epoch 1 = the timed ones: train_one_epoch's step index is epoch x its length
    train_one_epoch(model, {"train": DataInfo(_Loader(batches[:warmup]))}, loss, 0, opt, scaler, sched, None, args)
    clock = Clock()
    clock.start()
    rest = batches[warmup:]
    shift = lambda step: sched(step - len(rest) + warmup)  # noqa: E731  (epoch 1 starts at len(rest))
    train_one_epoch(model, {"train": DataInfo(_Loader(rest))}, loss, 1, opt, scaler, shift, None, args)
    return (*clock.rates(len(rest) * batch), model)


def weight_difference(a: torch.nn.Module, b: torch.nn.Module) -> tuple[float, float]:
    """(largest absolute difference, largest difference relative to the weights' scale) over all tensors."""
    diffs = [((x - y).abs().max().item(), (x - y).abs().max().item() / max(1e-12, y.abs().max().item()))
             for x, y in zip(a.state_dict().values(), b.state_dict().values()) if x.is_floating_point()]
    return max(d[0] for d in diffs), max(d[1] for d in diffs)


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def demo_part(args) -> None:
    cfg = demo_config(args.image_size, args.text_length)
    batches = make_batches(args.steps + args.warmup, args.batch_size, args.image_size, args.text_length)
    runners = {"clipforge": run_ours, "open_clip_train": run_open_clip}
    if args.compile:
        runners["clipforge+compile"] = lambda *a: run_ours(*a, compile_step=True)
    rates = {name: [] for name in runners}
    for r in range(args.rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        models = {}
        for name in order:
            wall, cpu, models[name] = runners[name](cfg, batches, args.precision, args.warmup)
            rates[name].append((wall, cpu))
        print(f"round {r + 1}: " + "   ".join(f"{n} {rates[n][-1][0]:7.1f} samples/s ({rates[n][-1][1]:7.1f} per CPU-s)"
                                           for n in runners), flush=True)
    print(f"threads {torch.get_num_threads()}, batch {args.batch_size}, {args.image_size} px, {args.text_length} "
          f"tokens, {args.precision}, {args.steps} timed steps x {args.rounds} rounds")
    for name in [n for n in runners if n != "open_clip_train"]:
        for i, label in enumerate(("wall samples/s", "samples per CPU-second")):
            ratios = [o[i] / t[i] for o, t in zip(rates[name], rates["open_clip_train"])]
            print(f"{name} / open_clip_train, {label}: {spread(ratios)} (goal >= 1.25)")
    absolute, relative = weight_difference(models["clipforge"], models["open_clip_train"])
    plain = weight_difference(run_ours(cfg, batches, args.precision, args.warmup, plain_adamw=True)[2],
                              models["open_clip_train"])
    print(f"weights after {len(batches)} steps vs open_clip_train: clipforge max |diff| {absolute:.2e} (relative to "
          f"the tensor's scale {relative:.2e}; bound: 2 x lr x steps = {2 * LR * len(batches):.1e}, since the "
          f"fused AdamW rounds differently and Adam's normalisation turns a rounding difference of a near-zero "
          f"gradient into up to lr); with torch's default AdamW: max |diff| {plain[0]:.2e}")


def flops_of_step(cfg: dict, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = create_model(cfg)
    core = TrainModule(model, create_method("clip", model, {}))
    with FlopCounterMode(display=False) as counter:
        core({"image": batch[0], "text": batch[1]})["loss"].backward()
    return counter.get_total_flops()


def vit_part(args) -> None:
    settings = {"full (I197,T77)": (224, 77), "CLIPA (I37,T8)": (96, 8)}
    configs = {k: resolve_model_config("ViT-B-16", None, image_size=s, context_length=t) for k, (s, t) in settings.items()}
    batches = {k: make_batches(args.vit_steps + 1, args.vit_batch, s, t) for k, (s, t) in settings.items()}
    flops = {k: flops_of_step(configs[k], batches[k][0]) for k in settings}
    flop_ratio = flops["full (I197,T77)"] / flops["CLIPA (I37,T8)"]
    runners = {"clipforge": run_ours, "open_clip_train": run_open_clip}
    if args.compile:
        runners["clipforge+compile"] = lambda *a: run_ours(*a, compile_step=True)
    cpu = {(n, k): [] for n in runners for k in settings}
    for r in range(args.rounds):
        order = [(n, k) for n in runners for k in settings]
        for name, key in order if r % 2 == 0 else reversed(order):
            cpu[name, key].append(runners[name](configs[key], batches[key], "fp32", 1)[1])
        print(f"round {r + 1}: " + "  ".join(f"{n} {k} {cpu[n, k][-1]:.2f}" for n in runners for k in settings)
              + " samples per CPU-s", flush=True)
    print(f"ViT-B/16, batch {args.vit_batch}, {args.vit_steps} timed steps x {args.rounds} rounds, fp32, "
          f"threads {torch.get_num_threads()}; FLOP ratio full / I37,T8 = {flop_ratio:.2f} "
          f"({flops['full (I197,T77)'] / 1e9:.0f} / {flops['CLIPA (I37,T8)'] / 1e9:.0f} GFLOP per step)")
    for name in runners:
        per_round = [f / s / flop_ratio for f, s in zip(cpu[name, "CLIPA (I37,T8)"], cpu[name, "full (I197,T77)"])]
        speedup = statistics.median(cpu[name, "CLIPA (I37,T8)"]) / statistics.median(cpu[name, "full (I197,T77)"])
        print(f"{name}: speed-up {speedup:.2f}, speed-up / FLOP ratio {spread(per_round)} (goal for clipforge >= 0.95)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per round (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=16, help="demo pretrain: 16 px, 8 tokens")
    p.add_argument("--text-length", type=int, default=8)
    p.add_argument("--precision", choices=list(OPEN_CLIP_PRECISION), default="fp32")
    p.add_argument("--compile", action="store_true", help="also time our step under torch.compile (both parts)")
    p.add_argument("--vit", action="store_true", help="part 2 instead: ViT-B/16 full tokens vs I37/T8")
    p.add_argument("--vit-batch", type=int, default=8)
    p.add_argument("--vit-steps", type=int, default=2)
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    vit_part(args) if args.vit else demo_part(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
