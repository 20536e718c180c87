"""Train-step speed-up of CLIPA token reduction vs full tokens, next to the FLOP ratio, on a small CLIP on CPU.

FLOPs of forward + backward are counted with torch.utils.flop_counter.FlopCounterMode; a train step (zero_grad,
forward, CLIP loss, backward, AdamW step) is timed on pre-tokenised captions and random images. Settings are
timed in interleaved rounds so that load from other processes hits all of them alike; the best round counts
(as timeit advises: slower rounds measure the other processes, not the code).
Goal: measured speed-up >= 0.85 x FLOP ratio. Usage: python benchmarks/bench_tokens.py [--batch 64] [--rounds 5]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.methods import create_method
from pipeline.models import create_model
from pipeline.reduction.image import apply_image_reduction, kept_image_tokens
from pipeline.reduction.text import build_text_transform

PATCH = 8
MODEL = {"embed_dim": 192,
         "vision_cfg": {"image_size": 64, "layers": 6, "width": 192, "head_width": 64, "patch_size": PATCH},
         "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 192, "heads": 3, "layers": 6}}
CAPTION = "a {} photo of a small brown dog with a red collar running across a wet green meadow near an old barn"


@dataclass(frozen=True)
class Setting:
    name: str
    image_size: int
    image_strategy: str
    tokens: int | None
    text_length: int
    text_strategy: str


SETTINGS = [
    Setting("full (I65,T32)", 64, "none", None, 32, "truncate"),
    Setting("resize (I17,T32)", 32, "none", None, 32, "truncate"),
    Setting("random mask (I17,T32)", 64, "random", 16, 32, "truncate"),
    Setting("grid mask k=2 (I17,T32)", 64, "grid", None, 32, "truncate"),
    Setting("block mask (I17,T32)", 64, "block", 16, 32, "truncate"),
    Setting("text syntax (I65,T8)", 64, "none", None, 8, "syntax"),
    Setting("resize+syntax (I17,T8)", 32, "none", None, 8, "syntax"),
]


def build(setting: Setting, batch: int):
    """(model, method, optimizer, batch dict) for one setting."""
    config = {**MODEL, "vision_cfg": {**MODEL["vision_cfg"], "image_size": setting.image_size},
              "text_cfg": {**MODEL["text_cfg"], "context_length": setting.text_length}}
    torch.manual_seed(0)
    model = create_model(config).train()
    apply_image_reduction(model, setting.image_strategy, setting.tokens, 2)
    method = create_method("clip", model, {})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    texts = build_text_transform(setting.text_strategy, setting.text_length)(
        [CAPTION.format(i) for i in range(batch)])
    data = {"image": torch.randn(batch, 3, setting.image_size, setting.image_size), "text": texts}
    return model, method, optimizer, data


def step(model, method, optimizer, data) -> None:
    optimizer.zero_grad(set_to_none=True)
    method(model, data)["loss"].backward()
    optimizer.step()


def flops(model, method, data) -> int:
    """FLOPs of one forward + backward."""
    counter = FlopCounterMode(display=False)
    with counter:
        method(model, data)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per setting per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    built = {s: build(s, args.batch) for s in SETTINGS}
    counted = {s: flops(*built[s][:2], built[s][3]) for s in SETTINGS}
    times: dict[Setting, list[float]] = {s: [] for s in SETTINGS}
    for s in SETTINGS:  # warm-up (allocator, first-call overheads)
        step(*built[s])
    for round_ in range(args.rounds):
        for s in SETTINGS:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(*built[s])
            times[s].append((time.perf_counter() - start) / args.steps)
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    full = SETTINGS[0]
    base_time, base_flops = min(times[full]), counted[full]
    print(f"\nsmall CLIP (ViT width 192 x 6 layers, patch {PATCH}; text width 192 x 6), batch {args.batch}, "
          f"{args.threads} thread(s), best of {args.rounds} rounds x {args.steps} steps")
    print(f"{'setting':26s} {'img tok':>7s} {'txt tok':>7s} {'GFLOP/step':>10s} {'FLOP ratio':>10s} "
          f"{'ms/step':>8s} {'speed-up':>8s} {'speed-up/FLOP ratio':>19s}")
    for s in SETTINGS:
        img = kept_image_tokens(s.image_size, PATCH, s.image_strategy, s.tokens, 2) + 1
        ratio, t = base_flops / counted[s], min(times[s])
        speedup = base_time / t
        print(f"{s.name:26s} {img:7d} {s.text_length:7d} {counted[s] / 1e9:10.2f} {ratio:10.2f} {t * 1e3:8.1f} "
              f"{speedup:8.2f} {speedup / ratio:19.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
