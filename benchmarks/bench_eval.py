"""Feature-extraction throughput of evaluation (images/s): model forward alone vs the full ImageFolder path.

    python benchmarks/bench_eval.py [--model demo|ViT-B-16] [--images 512] [--batch-size 128] [--device auto]

Prints images/s of (a) encode_image on ready tensors, (b) decode + eval transform + encode_image through
pipeline.evaluate.image_features over a temporary ImageFolder, and their ratio (how much the input path costs).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from pipeline.evaluate._datasets import classification_dataset
from pipeline.evaluate._features import image_features
from pipeline.models import create_model, image_size_of, resolve_model_config

REPO = Path(__file__).resolve().parents[1]


def model_config(name: str) -> dict:
    if name == "demo":
        raw = yaml.safe_load((REPO / "config" / "experiments" / "demo.yaml").read_text())["model"]["config"]
        return resolve_model_config(None, raw)
    return resolve_model_config(name, None)


def write_folder(root: Path, n: int, side: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "images" / f"{i % 10:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"{i:05d}.jpg")
    stats = {"kind": "classification", "format": "imagefolder", "root": "images", "samples": n,
             "classes": [str(c) for c in range(10)]}
    (root / "stats.json").write_text(json.dumps(stats))
    return root / "stats.json"


@torch.no_grad()
def forward_rate(model, size: int, n: int, batch: int, device) -> float:
    x = torch.randn(batch, 3, size, size, device=device)
    model.encode_image(x[:2])  # warm-up
    start, done = time.perf_counter(), 0
    while done < n:
        model.encode_image(x, normalize=True)
        done += batch
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo", help="demo (config/experiments/demo.yaml) or an open_clip name")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cfg = model_config(args.model)
    size = image_size_of(cfg)
    model = create_model(cfg).to(device).eval()
    fwd = forward_rate(model, size, args.images, args.batch_size, device)
    with tempfile.TemporaryDirectory() as tmp:
        stats = write_folder(Path(tmp), args.images, max(size, 32))
        dataset, _ = classification_dataset(stats, size)
        start = time.perf_counter()
        image_features(model, dataset, args.batch_size, args.workers, device, desc="bench",
                       features="embedding")
        full = args.images / (time.perf_counter() - start)
    print(f"model {args.model} ({size}px) on {device}, batch {args.batch_size}, {args.images} images, "
          f"{torch.get_num_threads()} threads, workers {args.workers}")
    print(f"forward only        : {fwd:10.1f} images/s")
    print(f"ImageFolder + model : {full:10.1f} images/s")
    print(f"ratio full/forward  : {full / fwd:10.2f}")


if __name__ == "__main__":
    main()
