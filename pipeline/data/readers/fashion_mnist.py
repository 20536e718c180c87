"""`reader: fashion_mnist_demo`: the shipped Fashion-MNIST subset as PNG files.

image_text: data/NAME/source/images/NNNNN.png + source/urls.parquet (file:// urls, one varied caption each).
classification: data/NAME/images/<label:03d>/NNNNN.png (ImageFolder, folder order = label order).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import UserError
from ..captions import CLASSNAMES, caption_for
from ..urls import UrlList, collect, url_table
from ._registry import register, source_path

DEMO_NPZ = Path(__file__).resolve().parents[1] / "demo" / "fashion_mnist_subset.npz"


def load_split(npz: Path, split: str, subset: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Images [N,28,28] uint8 and labels [N] of one split ("val" reads the test arrays)."""
    prefix = "train" if split == "train" else "test"
    try:
        with np.load(npz) as arrays:
            images, labels = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{npz}: not a Fashion-MNIST subset npz ({exc}) (field sources)") from None
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(labels):
        raise UserError(f"{npz}: {prefix}_images must be uint8 [N,H,W] matching {prefix}_labels (field sources)")
    return images[:subset], labels[:subset]


def _write_pngs(images: np.ndarray, paths: list[Path]) -> None:
    """Grayscale stored as RGB so every later consumer (img2dataset, loaders, ImageFolder) sees 3 channels."""
    for i, (img, path) in enumerate(zip(images, paths)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").convert("RGB").save(path, format="PNG")
        if (i + 1) % 2000 == 0:
            print(f"  wrote {i + 1}/{len(paths)} images", flush=True)


def _replace_dir(tmp: Path, final: Path) -> None:
    tmp.chmod(0o755)  # mkdtemp makes it private; the data folder is shared with other users and jobs
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def _npz_path(dataset, base_dir: Path) -> Path:
    npz = source_path(dataset.sources[0], base_dir) if dataset.sources else DEMO_NPZ
    if not npz.is_file():
        raise UserError(f"{npz}: file not found (dataset {dataset.name}, field sources)")
    return npz


@register("fashion_mnist_demo", kinds=("image_text", "classification"))
def read_fashion_mnist(*, dataset, data_dir: Path, base_dir: Path) -> UrlList | dict:
    images, labels = load_split(_npz_path(dataset, base_dir), dataset.split, dataset.subset)
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    names = [f"{i:05d}.png" for i in range(len(images))]
    if dataset.kind == "classification":
        tmp = Path(tempfile.mkdtemp(prefix=".images.", dir=data_dir))
        _write_pngs(images, [tmp / f"{int(lab):03d}" / n for lab, n in zip(labels, names)])
        for label in range(len(CLASSNAMES)):  # empty classes still get a folder so labels stay aligned
            (tmp / f"{label:03d}").mkdir(exist_ok=True)
        _replace_dir(tmp, data_dir / "images")
        return {"samples": int(len(images)), "classes": list(CLASSNAMES)}
    source = data_dir / "source"
    tmp = Path(tempfile.mkdtemp(prefix=".images.", dir=data_dir))
    _write_pngs(images, [tmp / n for n in names])
    source.mkdir(exist_ok=True)
    _replace_dir(tmp, source / "images")
    urls = [(source / "images" / n).as_uri() for n in names]
    captions = [caption_for(int(lab), i) for i, lab in enumerate(labels)]
    return collect([url_table(urls, captions, keys=[n[:-4] for n in names])], data_dir=data_dir, dataset=dataset)
