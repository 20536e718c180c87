"""Data stage cost over bare img2dataset, and image decode + augment throughput per core, on CPU.

Part 1: the same 2,000-url list (Fashion-MNIST demo images upscaled to 128 px JPEGs) served from a loopback
HTTP server is sharded by bare `img2dataset.download` and by our data stage (reader + img2dataset +
tar verification + stats), alternately, `--rounds` times each. Ratio = bare time / our time (goal >= 0.95).
Part 2: over the shards just written, single-threaded images/s of PIL decode alone, decode + the training
augmentation (pipeline.data.loader.train_transform), and the full loader (build_train_loader, 0 workers).
Usage: NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/bench_data.py [--urls 2000] [--rounds 2] [--processes 2]
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devtools/ (test tooling, not installed)

from pipeline.config import dataset_from_dict  # noqa: E402
from pipeline.data.build import build_dataset  # noqa: E402
from pipeline.data.captions import caption_for  # noqa: E402
from pipeline.data.readers.fashion_mnist import DEMO_NPZ, load_split  # noqa: E402
from pipeline.data.shards import img2dataset_kwargs  # noqa: E402
from devtools.localserver import serve_directory  # noqa: E402


def make_site(root: Path, count: int) -> list[tuple[str, str]]:
    """`count` 128x128 RGB JPEGs of real product photos, and their captions."""
    images, labels = load_split(DEMO_NPZ, "train", count)
    rows = []
    for i, (img, label) in enumerate(zip(images, labels)):
        Image.fromarray(img).convert("RGB").resize((128, 128), Image.BICUBIC).save(root / f"{i:05d}.jpg", quality=90)
        rows.append((f"{i:05d}.jpg", caption_for(int(label), i)))
    return rows


def time_bare(url_list: Path, out: Path, settings) -> float:
    import img2dataset

    started = time.perf_counter()
    img2dataset.download(url_list=str(url_list), output_folder=str(out), **img2dataset_kwargs(settings))
    return time.perf_counter() - started


def time_ours(dataset, work: Path, out: Path) -> tuple[float, float]:
    """(total seconds, seconds inside img2dataset) of one data stage run; the difference is our own cost
    (reader, tar verification, stats), which loopback-server noise does not blur."""
    from pipeline.data import shards

    inner = []
    run = shards.run_img2dataset

    def timed(**kwargs):
        started = time.perf_counter()
        run(**kwargs)
        inner.append(time.perf_counter() - started)

    shards.run_img2dataset = timed
    try:
        started = time.perf_counter()
        build_dataset(dataset=dataset, data_dir=out, base_dir=work, stats_path=out / "stats.json")
        return time.perf_counter() - started, sum(inner)
    finally:
        shards.run_img2dataset = run


def jpeg_samples(shards: list[Path]) -> list[bytes]:
    data = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            data += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")]
    return data


def decode_rates(jpegs: list[bytes], stats_path: Path, image_size: int) -> dict[str, float]:
    import torch

    from types import SimpleNamespace

    from pipeline.data.loader import build_train_loader, train_transform

    torch.set_num_threads(1)
    rates = {}
    started = time.perf_counter()
    for b in jpegs:
        Image.open(io.BytesIO(b)).convert("RGB").load()
    rates["PIL decode"] = len(jpegs) / (time.perf_counter() - started)
    augment = SimpleNamespace(scale=(0.9, 1.0), color_jitter=None, color_jitter_prob=0.0, gray_scale_prob=0.0)
    transform = train_transform(image_size=image_size, augment=augment)
    started = time.perf_counter()
    for b in jpegs:
        transform(Image.open(io.BytesIO(b)).convert("RGB"))
    rates["decode + augment"] = len(jpegs) / (time.perf_counter() - started)
    loader = build_train_loader(stats_path=stats_path, image_size=image_size, augment=augment,
                                text_transform=lambda caps: torch.zeros(len(caps), 77, dtype=torch.long),
                                batch_size=100, rank=0, world_size=1, seed=0, workers=0, shuffle_shards=8)
    started, seen = time.perf_counter(), 0
    for batch in loader.epoch(0):
        seen += batch["image"].shape[0]
    rates["loader (0 workers)"] = seen / (time.perf_counter() - started)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--urls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=112)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_data."))
    (work / "site").mkdir()
    rows = make_site(work / "site", args.urls)
    dataset = dataset_from_dict({"kind": "image_text", "reader": "url_list", "sources": ["urls.parquet"],
                                 "img2dataset": {"image_size": args.image_size, "processes": args.processes,
                                                 "threads": args.threads, "samples_per_shard": 500}},
                                "bench", "bench_data.py")
    bare, ours, own = [], [], []
    with serve_directory(work / "site", max_seconds=1800) as base:
        pq.write_table(pa.table({"url": [f"{base}/{p}" for p, _ in rows], "caption": [c for _, c in rows]}),
                       work / "urls.parquet")
        for r in range(args.rounds):
            bare.append(time_bare(work / "urls.parquet", work / f"bare{r}", dataset.img2dataset))
            total, inner = time_ours(dataset, work, work / f"ours{r}")
            ours.append(total)
            own.append(total - inner)
    print(f"\n== data stage vs bare img2dataset: {args.urls} urls from 127.0.0.1, {args.processes} processes x "
          f"{args.threads} threads, {os.cpu_count()} cores (shared) ==")
    print(f"bare img2dataset  s: {' '.join(f'{t:.1f}' for t in bare)}  (best {min(bare):.1f}, "
          f"{args.urls / min(bare):.0f} img/s)")
    print(f"our data stage    s: {' '.join(f'{t:.1f}' for t in ours)}  (best {min(ours):.1f}, "
          f"{args.urls / min(ours):.0f} img/s)")
    print(f"throughput ratio ours/bare: best {min(bare) / min(ours):.3f}, "
          f"median {statistics.median(bare) / statistics.median(ours):.3f} (goal >= 0.95)")
    own_s = statistics.median(own)
    print(f"our own cost outside img2dataset (reader + verify + stats): median {own_s:.2f}s -> ratio if img2dataset "
          f"took the bare median: {statistics.median(bare) / (statistics.median(bare) + own_s):.3f}")
    out = work / f"ours{args.rounds - 1}"
    shards = sorted((out / "shards").glob("*.tar"))
    rates = decode_rates(jpeg_samples(shards), out / "stats.json", args.image_size)
    print(f"\n== image pipeline, 1 thread, {args.image_size} px JPEGs from the shards ==")
    for name, rate in rates.items():
        print(f"{name:<20} {rate:8.0f} img/s  ({rate / rates['PIL decode']:.2f} x PIL decode)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
