"""`reader: imagefolder`: an existing ImageFolder (sources[0]) used as a classification set in place.

data/NAME/images becomes a symlink to it, so the stats contract (root "images") holds without copying.
Labels are the sorted class-folder names, as torchvision's ImageFolder assigns them.
"""
from __future__ import annotations

import os
from pathlib import Path

from ...errors import UserError
from ._registry import existing_file, register, require_sources

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}


def index_imagefolder(root: Path) -> tuple[list[str], int]:
    """Class names (sorted folder names) and the number of image files under them."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{root}: no class folders in this ImageFolder (field sources)")
    count = sum(1 for c in classes for f in (root / c).rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
    if count == 0:
        raise UserError(f"{root}: no image files under the class folders (field sources)")
    return classes, count


@register("imagefolder", kinds=("classification",))
def read_imagefolder(*, dataset, data_dir: Path, base_dir: Path) -> dict:
    require_sources(dataset, 1)
    if dataset.subset is not None:
        raise UserError(f"dataset {dataset.name}: subset: the imagefolder reader uses the folder as it is "
                        f"(remove subset)")
    root = existing_file(dataset.sources[0], base_dir, dataset).resolve()
    if not root.is_dir():
        raise UserError(f"{root}: not a folder (dataset {dataset.name}, field sources)")
    classes, count = index_imagefolder(root)
    link = Path(data_dir) / "images"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        raise UserError(f"{link}: a folder is in the way of the link to {root}; remove it")
    tmp = link.with_name(".images.link")
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(root, tmp)
    os.replace(tmp, link)
    return {"samples": count, "classes": classes}
