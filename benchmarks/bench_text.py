"""Caption tokenisation throughput per text reduction strategy (syntax mask vs truncate), on CPU.

The POS tagger is loaded once (timed separately) and reused, as in a DataLoader worker. Strategies are timed in
interleaved rounds and the best round counts (slower rounds measure the other processes on the machine).
Usage: python benchmarks/bench_text.py [--captions 4000] [--batch 256] [--length 8] [--rounds 3]
"""
from __future__ import annotations

import argparse
import time

import torch

from pipeline.reduction.text import STRATEGIES, build_text_transform
from pipeline.reduction.syntax import load_tagger

# Varied English alt-text-like captions (written for this benchmark), cycled to the requested count.
CAPTIONS = [
    "A golden retriever puppy playing with a red ball on the green grass in a sunny park",
    "Modern minimalist living room with white sofa, wooden coffee table and large windows",
    "Vintage 1960s red convertible car parked on a cobblestone street in Rome",
    "Close-up photo of fresh strawberries and blueberries in a ceramic bowl",
    "Woman in a blue raincoat walking her dog along a foggy beach at dawn",
    "Stainless steel kitchen knife set with black handles, 6 pieces",
    "aerial view of snow covered mountains and a frozen lake",
    "Men's slim fit cotton t-shirt, navy blue, size M",
    "Two children are building a sandcastle while their parents watch from the shore.",
    "Abstract watercolor painting of purple flowers on textured paper",
    "The old lighthouse stands on a rocky cliff above crashing waves during a storm",
    "Homemade margherita pizza with basil leaves and melted mozzarella cheese",
    "A cat sleeping on a laptop keyboard next to a cup of coffee",
    "Crowd of fans cheering at an outdoor rock concert at night, stage lights",
    "Antique brass pocket watch with roman numerals on a wooden table",
    "Hikers crossing a suspension bridge over a deep green river canyon",
]


def throughput(strategy: str, captions: list[str], batch: int, length: int) -> float:
    """Captions per second of one strategy over all captions, in batches."""
    transform = build_text_transform(strategy, length)
    transform(captions[:batch])  # warm the BPE cache and the tagger, as a worker would after its first batch
    torch.manual_seed(0)
    start = time.perf_counter()
    for i in range(0, len(captions), batch):
        transform(captions[i:i + batch])
    return len(captions) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=8, help="context length incl. SOT/EOT")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    captions = [CAPTIONS[i % len(CAPTIONS)] + f" {i}" for i in range(args.captions)]  # suffix defeats caching

    start = time.perf_counter()
    load_tagger()
    print(f"tagger load (once per process): {time.perf_counter() - start:.2f} s")
    rates = {s: 0.0 for s in STRATEGIES}
    for _ in range(args.rounds):
        for s in STRATEGIES:
            rates[s] = max(rates[s], throughput(s, captions, args.batch, args.length))
    print(f"{'strategy':10s} {'captions/s':>11s} {'vs truncate':>12s}   ({args.captions} captions, "
          f"batch {args.batch}, context {args.length}, best of {args.rounds} rounds)")
    for strategy, rate in rates.items():
        print(f"{strategy:10s} {rate:11.0f} {rate / rates['truncate']:11.2f}x")
    per_worker = rates["syntax"]
    print(f"syntax mask: one loader worker feeds {per_worker:.0f} captions/s, i.e. a 4,096-sample batch every "
          f"{4096 / per_worker:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
