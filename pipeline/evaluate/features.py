"""Image embeddings of a prepared dataset, extracted once per (checkpoint, dataset) and cached on disk.

The cache key hashes the checkpoint's path, size and mtime and the dataset's stats.json, so a retrained
checkpoint or a rebuilt dataset never reuses stale features.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..errors import UserError
from ..models import image_size_of
from ..utils.io import torch_save
from .datasets import classification_dataset
from .zeroshot import image_features


def cache_key(checkpoint: str | Path, stats_path: str | Path) -> str:
    ck, st = Path(checkpoint).resolve(), Path(stats_path).resolve()
    info = os.stat(ck)
    blob = f"{ck}|{info.st_size}|{info.st_mtime_ns}|{st}|".encode() + st.read_bytes()
    return hashlib.sha1(blob).hexdigest()[:16]


def cached_features(*, model, model_config: dict, checkpoint: str | Path, stats_path: str | Path,
                    cache_dir: str | Path | None, batch_size: int, workers: int,
                    device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(normalised features [N, D], labels [N], class names); read from cache_dir when present."""
    dataset, classes = classification_dataset(stats_path, image_size_of(model_config))
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{Path(stats_path).parent.name}-{cache_key(checkpoint, stats_path)}.pt"
        if path.is_file():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                print(f"features: reusing {path}")
                return blob["features"], blob["labels"], classes
            except Exception as exc:  # a truncated cache is rebuilt, not trusted
                print(f"features: ignoring unreadable cache {path} ({type(exc).__name__})")
    model = model.to(device).eval()
    feats, labels = image_features(model, dataset, batch_size, workers, device,
                                   desc=f"features {Path(stats_path).parent.name}")
    if len(labels) == 0:
        raise UserError(f"{stats_path}: no images to extract features from")
    if path is not None:
        torch_save({"features": feats, "labels": labels}, path)
    return feats, labels, classes
