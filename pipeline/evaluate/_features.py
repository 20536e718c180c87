"""Frozen embeddings for evaluation: image features of a dataset (cached per checkpoint and dataset on disk),
prompt-ensembled text classifiers, and the evaluation device.

Two image features (`evaluate.linear_probe.features`): `embedding` = CLIP's L2-normalised image embedding
(CLIP_benchmark's probe), `pre_projection` = the image tower's pooled output before the projection into the joint
space (for a ViT the class token after the final LayerNorm: what SLIP's main_linear.py probes, and the only image
feature a SimCLR model trains; its projection stays at random init).

The cache key hashes the checkpoint's path, size and mtime, the dataset's stats.json and the feature kind, so a
retrained checkpoint or a rebuilt dataset never reuses stale features.
"""
from __future__ import annotations

import contextlib
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


FEATURES = ("embedding", "pre_projection")


@contextlib.contextmanager
def without_projection(model):
    """open_clip's own image tower forward (its pooling and final norm) with the projection switched off."""
    visual = model.visual
    proj = visual.proj
    visual.proj = None
    try:
        yield
    finally:
        visual.proj = proj


def encode(model, images: torch.Tensor, features: str) -> torch.Tensor:
    if features == "embedding":
        return model.encode_image(images, normalize=True)
    if features == "pre_projection":
        with without_projection(model):
            return model.visual(images)
    raise ValueError(f"features: {features!r} ({', '.join(FEATURES)})")


@torch.no_grad()
def image_features(model, dataset, batch_size: int, workers: int, device: str | torch.device = "cpu",
                   desc: str = "images", *, features: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(image features [N, D], labels [N]) over a dataset of (image, label), in order; L2-normalised CLIP
    embeddings unless `features` says pre_projection."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=torch.device(device).type == "cuda")
    feats, labels = [], []
    # a log file (not a terminal) gets a progress line every 30 s instead of a redrawn bar
    interval = 0.1 if sys.stderr.isatty() else 30.0
    for images, targets in tqdm(loader, desc=desc, unit="batch", file=sys.stderr, mininterval=interval):
        emb = encode(model, images.to(device), features)
        feats.append(emb.float().cpu())
        labels.append(torch.as_tensor(targets))
    return torch.cat(feats), torch.cat(labels)


def cache_key(checkpoint: str | Path, stats_path: str | Path, features: str) -> str:
    ck, st = Path(checkpoint).resolve(), Path(stats_path).resolve()
    info = os.stat(ck)
    blob = f"{ck}|{info.st_size}|{info.st_mtime_ns}|{st}|{features}|".encode() + st.read_bytes()
    return hashlib.sha1(blob).hexdigest()[:16]


def _extract_in_parts(model, dataset, *, path: Path | None, batch_size: int, workers: int, device, features: str,
                      part_images: int, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features in parts of whole batches, each part saved atomically beside `path` as it completes, so a killed
    extraction resumes at the first missing part; the batches are the uninterrupted run's, so are the numbers."""
    from torch.utils.data import Subset

    per_part = max(1, part_images // batch_size) * batch_size
    feats, labels = [], []
    for start in range(0, len(dataset), per_part):
        part = None if path is None else path.with_name(f"{path.stem}.part{start // per_part:05d}.pt")
        blob = torch_load(part, "feature cache part") if part is not None and part.is_file() else None
        if blob is None:
            subset = Subset(dataset, range(start, min(start + per_part, len(dataset))))
            f, y = image_features(model, subset, batch_size, workers, device, desc=desc, features=features)
            blob = {"features": f, "labels": y}
            if part is not None:
                torch_save(blob, part)
        feats.append(blob["features"])
        labels.append(blob["labels"])
    return torch.cat(feats), torch.cat(labels)


def cached_features(*, model, model_config: dict, checkpoint: str | Path, stats_path: str | Path,
                    cache_dir: str | Path | None, batch_size: int, workers: int, features: str, part_images: int,
                    device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(features [N, D], labels [N], class names); read from cache_dir when present, extracted (resumably, in
    parts of `part_images`) and cached otherwise."""
    dataset, classes = classification_dataset(stats_path, image_size_of(model_config))
    path = None
    if cache_dir is not None:
        key = cache_key(checkpoint, stats_path, features)
        path = Path(cache_dir) / f"{Path(stats_path).parent.name}-{key}.pt"
        if path.is_file():
            blob = torch_load(path, "feature cache")  # written atomically: a file here is whole, or refused
            print(f"features: reusing {path}")
            return blob["features"], blob["labels"], classes
    model = model.to(device).eval()
    feats, labels = _extract_in_parts(model, dataset, path=path, batch_size=batch_size, workers=workers,
                                      device=device, features=features, part_images=part_images,
                                      desc=f"features {Path(stats_path).parent.name}")
    if len(labels) == 0:
        raise UserError(f"{stats_path}: no images to extract features from")
    if path is not None:
        torch_save({"features": feats, "labels": labels}, path)
        for part in path.parent.glob(f"{path.stem}.part*.pt"):
            part.unlink(missing_ok=True)
    return feats, labels, classes
