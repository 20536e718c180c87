"""Labelled evaluation sets described by data/NAME/stats.json, and the eval-time image transform.

Contract: a classification stats.json names an ImageFolder under data/NAME/<root> whose folders are the
labels, written as `<label:03d>` (the exported sets) or as the class name itself at that label's position in
stats.json's `classes` (the imagefolder reader links an existing tree, e.g. ImageNet's wnid folders). Labels come
from the folder name, so a class with no images never shifts the others.
"""
from __future__ import annotations

from pathlib import Path

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader

from ..errors import UserError
from ..utils.io import read_json


def eval_transform(image_size: int):
    """Resize the short side (bicubic), center crop, grayscale/RGBA -> RGB, CLIP mean/std (open_clip's own)."""
    from open_clip.transform import image_transform

    return image_transform(image_size, is_train=False)


def read_stats(path: str | Path, kind: str = "classification") -> dict:
    """The stats.json of a prepared dataset, checked for the keys evaluation relies on."""
    path = Path(path)
    stats = read_json(path, "dataset stats", " (run the data stage for this dataset first)")
    if not isinstance(stats, dict):
        raise UserError(f"{path}: expected a JSON object")
    if stats.get("kind") != kind:
        raise UserError(f"{path}: kind: expected {kind!r}, got {stats.get('kind')!r}")
    return stats


def _checked_loader(path: str):
    """Open an image or fail with one line naming it (a corrupt evaluation image is a data error)."""
    try:
        return default_loader(path)
    except Exception as exc:  # PIL raises several types for truncated / non-image files
        raise UserError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None


class LabelFolder(ImageFolder):
    """ImageFolder whose label is read from the folder name (000, 001, ... or the class name), not its rank
    among the folders present."""

    def __init__(self, root: str, classes: list[str], transform=None):
        self._names = list(classes)
        super().__init__(root, transform=transform, loader=_checked_loader, allow_empty=True)

    def find_classes(self, directory):
        folders = sorted(p.name for p in Path(directory).iterdir() if p.is_dir() and not p.name.startswith("."))
        by_name = {name: i for i, name in enumerate(self._names)}
        mapping = {}
        for name in folders:
            if name in by_name:
                mapping[name] = by_name[name]
            elif name.isdigit() and int(name) < len(self._names):
                mapping[name] = int(name)
            else:
                raise UserError(f"{directory}/{name}: folder is neither a label 000..{len(self._names) - 1:03d} "
                                f"nor one of the {len(self._names)} class names of stats.json")
        return self._names, mapping


def classification_dataset(stats_path: str | Path, image_size: int | None = None, transform=None):
    """(dataset yielding (image tensor, label), class names from stats.json) for a prepared dataset.

    The transform is `transform` when given (training augmentation), else the eval transform at image_size.
    """
    stats_path = Path(stats_path)
    stats = read_stats(stats_path)
    fmt = stats.get("format")
    if fmt != "imagefolder":
        raise UserError(f"{stats_path}: format: {fmt!r} is not supported (imagefolder)")
    classes = stats.get("classes")
    if not isinstance(classes, list) or not classes:
        raise UserError(f"{stats_path}: classes: expected a non-empty list of class names")
    root = stats_path.parent / stats.get("root", "images")
    if not root.is_dir():
        raise UserError(f"{stats_path}: root: image folder {root} not found")
    if transform is None:
        transform = eval_transform(image_size)
    dataset = LabelFolder(str(root), classes, transform=transform)
    if len(dataset) == 0:
        raise UserError(f"{stats_path}: root: no images under {root}")
    if "samples" in stats and stats["samples"] != len(dataset):
        raise UserError(f"{stats_path}: samples: says {stats['samples']}, found {len(dataset)} images under {root}")
    return dataset, classes
