"""Frozen embeddings for evaluation: image features of a dataset (cached per checkpoint and dataset on disk),
prompt-ensembled text classifiers, and the evaluation device.

The cache key hashes the checkpoint's path, size and mtime and the dataset's stats.json, so a retrained
checkpoint or a rebuilt dataset never reuses stale features.
"""
from __future__ import annotations

import hashlib
import os
import sys
from functools import partial
from pathlib import Path

import torch
from open_clip import build_zero_shot_classifier
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..errors import UserError
from ..models import image_size_of
from ..utils.io import torch_load, torch_save
from ._datasets import classification_dataset


def eval_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _fill(template: str, c: str) -> str:
    return template.format(c=c)


def text_classifier(model, tokenizer, classnames: list[str], templates: list[str],
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """[embed_dim, classes]: per class, templates' normalised text embeddings averaged, then renormalised."""
    fills = [partial(_fill, t) for t in templates]
    # ~1,000 prompts per text forward pass keeps memory flat for ImageNet's 1,000 x 80
    per_batch = max(1, 1000 // len(templates))
    return build_zero_shot_classifier(model, tokenizer, classnames, fills, num_classes_per_batch=per_batch,
                                      device=device, use_tqdm=len(classnames) > per_batch)


@torch.no_grad()
def image_features(model, dataset, batch_size: int, workers: int, device: str | torch.device = "cpu",
                   desc: str = "images") -> tuple[torch.Tensor, torch.Tensor]:
    """(L2-normalised image embeddings [N, D], labels [N]) over a dataset of (image, label), in order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=torch.device(device).type == "cuda")
    feats, labels = [], []
    # a log file (not a terminal) gets a progress line every 30 s instead of a redrawn bar
    interval = 0.1 if sys.stderr.isatty() else 30.0
    for images, targets in tqdm(loader, desc=desc, unit="batch", file=sys.stderr, mininterval=interval):
        emb = model.encode_image(images.to(device), normalize=True)
        feats.append(emb.float().cpu())
        labels.append(torch.as_tensor(targets))
    return torch.cat(feats), torch.cat(labels)


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
            blob = torch_load(path, "feature cache")  # written atomically: a file here is whole, or refused
            print(f"features: reusing {path}")
            return blob["features"], blob["labels"], classes
    model = model.to(device).eval()
    feats, labels = image_features(model, dataset, batch_size, workers, device,
                                   desc=f"features {Path(stats_path).parent.name}")
    if len(labels) == 0:
        raise UserError(f"{stats_path}: no images to extract features from")
    if path is not None:
        torch_save({"features": feats, "labels": labels}, path)
    return feats, labels, classes
