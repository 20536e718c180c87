"""Cost of one training step of each method relative to CLIP, and FILIP's cost vs its key chunk size.

Part 1: forward + backward of every registered method on the demo model (128-wide, 4-layer towers) at the demo's
pretrain resolution (16 px, 8 tokens), one process, CPU or GPU. Heads at the sizes given. Prints seconds per step
and the ratio to CLIP; SLIP/SimCLR/DeCLIP run the image tower on 3/2/2 x B images, which is most of their cost.
Part 2: FILIP's late-interaction similarity alone for a few key chunk sizes (time per call).
Usage: python benchmarks/bench_methods.py [--batch 128] [--reps 5] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from pipeline.methods import available, create_method
from pipeline.methods._losses import late_interaction
from pipeline.models import create_model

DEMO = {"embed_dim": 128,
        "vision_cfg": {"image_size": 16, "layers": 4, "width": 128, "head_width": 32, "patch_size": 4},
        "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4}}
HEADS = {"ssl_mlp_dim": 512, "ssl_emb_dim": 64, "simsiam_dim": 256, "simsiam_pred_dim": 64, "nn_queue_size": 4096}


def batch_of(rows: int, device: torch.device) -> dict[str, torch.Tensor]:
    text = torch.randint(1, 49000, (rows, 8))
    text[:, 0], text[:, 6], text[:, 7] = 49406, 49407, 0
    return {"image": torch.randn(rows, 3, 16, 16, device=device), "text": text.to(device),
            "views": torch.randn(rows, 2, 3, 16, 16, device=device), "text_aug": text.flip(1).to(device)}


def step_seconds(name: str, batch: dict, reps: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = create_model(DEMO).to(device)
    method = create_method(name, model, HEADS).to(device)
    times = []
    for i in range(reps + 1):  # the first step warms up (and fills DeCLIP's queue)
        start = time.perf_counter()
        out = method(model, batch)
        out["loss"].backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
        method.zero_grad(set_to_none=True)
    return statistics.median(times)


def filip_chunks(rows: int, reps: int, device: torch.device) -> None:
    q = torch.nn.functional.normalize(torch.randn(rows, 16, 128, device=device), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(rows, 8, 128, device=device), dim=-1)
    for chunk in sorted({16, 64, rows}):
        start = time.perf_counter()
        for _ in range(reps):
            late_interaction(q, k, chunk=chunk)
        print(f"  late_interaction {rows}x{rows}, 16 patches x 8 tokens, chunk {chunk:4d}: "
              f"{(time.perf_counter() - start) / reps * 1000:.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    batch = batch_of(args.batch, device)
    print(f"step time (forward + backward), batch {args.batch}, {device}, torch threads {torch.get_num_threads()}")
    base = None
    for name in ["clip"] + [n for n in available() if n != "clip"]:
        seconds = step_seconds(name, batch, args.reps, device)
        base = base or seconds
        print(f"  {name:8s} {seconds * 1000:8.1f} ms   x{seconds / base:.2f} of clip")
    filip_chunks(args.batch, args.reps, device)


if __name__ == "__main__":
    main()
