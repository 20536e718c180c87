"""`reader: torchvision`: a torchvision dataset class read from files the user placed (never downloaded),
exported as the contract's ImageFolder data/NAME/images/<label:03d>/<index>.png (lossless PNG).

Config: `dataset_class` (e.g. CIFAR10), `sources: [root folder]`, `split`. Exporting keeps one evaluation
path (ImageFolder) for every dataset; the cost is a PNG copy of the split on disk.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ...errors import UserError
from ._registry import existing_file, register, require_sources

# class -> how the split is passed: "train_flag" (train=bool) or {our split: torchvision split}
SPLITS: dict[str, object] = {
    "CIFAR10": "train_flag", "CIFAR100": "train_flag", "MNIST": "train_flag", "FashionMNIST": "train_flag",
    "KMNIST": "train_flag",
    "Food101": {"train": "train", "test": "test"},
    "StanfordCars": {"train": "train", "test": "test"},
    "FGVCAircraft": {"train": "train", "val": "val", "test": "test"},
    "DTD": {"train": "train", "val": "val", "test": "test"},
    "OxfordIIITPet": {"train": "trainval", "test": "test"},
    "Flowers102": {"train": "train", "val": "val", "test": "test"},
    "FER2013": {"train": "train", "test": "test"},
    "STL10": {"train": "train", "test": "test"},
    "GTSRB": {"train": "train", "test": "test"},
    "Country211": {"train": "train", "val": "valid", "test": "test"},
    "PCAM": {"train": "train", "val": "val", "test": "test"},
    "CLEVRClassification": {"train": "train", "val": "val"},
    "RenderedSST2": {"train": "train", "val": "val", "test": "test"},
    "SVHN": {"train": "train", "test": "test"},
}


def open_torchvision(class_name: str, root: Path, split: str):
    """The torchvision dataset of one split, download=False; a missing file set is a one-line UserError."""
    import torchvision.datasets as tvd

    if class_name not in SPLITS:
        raise UserError(f"dataset_class: {class_name!r} is not supported (supported: {', '.join(sorted(SPLITS))})")
    how = SPLITS[class_name]
    if how == "train_flag":
        if split == "val":
            raise UserError(f"split: torchvision {class_name} has no val split (use train or test)")
        kwargs = {"train": split == "train"}
    else:
        if split not in how:
            raise UserError(f"split: torchvision {class_name} has no {split} split (has: {', '.join(how)})")
        kwargs = {"split": how[split]}
    try:
        return getattr(tvd, class_name)(root=str(root), download=False, **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        raise UserError(f"{root}: torchvision.datasets.{class_name} files not found or incomplete (download is off; "
                        f"put the extracted files where {class_name}(root={str(root)!r}) expects them, see "
                        f"docs/evaluation.md): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _class_names(dataset, ds, n_labels: int) -> list[str]:
    """The config's shipped list, or (classnames: from_data) the dataset's own names, '_' read as a space."""
    if dataset.classnames and dataset.classnames != "from_data":
        from ...evaluate._assets import load_classnames

        return load_classnames(dataset.classnames)
    names = getattr(ds, "classes", None)
    return [str(c).replace("_", " ") for c in names] if names else [str(i) for i in range(n_labels)]


def _export(ds, out: Path, count: int) -> list[int]:
    labels = []
    for i in range(count):
        image, label = ds[i]
        label = int(label)
        folder = out / f"{label:03d}"
        folder.mkdir(exist_ok=True)
        image.convert("RGB").save(folder / f"{i:06d}.png", format="PNG")
        labels.append(label)
        if (i + 1) % 5000 == 0:
            print(f"  exported {i + 1}/{count} images", flush=True)
    return labels


@register("torchvision", kinds=("classification",))
def read_torchvision(*, dataset, data_dir: Path, base_dir: Path) -> dict:
    require_sources(dataset, 1)
    if not dataset.dataset_class:
        raise UserError(f"dataset {dataset.name}: dataset_class: required by reader torchvision (e.g. CIFAR10)")
    root = existing_file(dataset.sources[0], base_dir, dataset).resolve()
    ds = open_torchvision(dataset.dataset_class, root, dataset.split)
    count = len(ds) if dataset.subset is None else min(dataset.subset, len(ds))
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".images.", dir=data_dir))
    try:
        labels = _export(ds, tmp, count)
        classes = _class_names(dataset, ds, max(labels) + 1 if labels else 0)
        if labels and max(labels) >= len(classes):
            raise UserError(f"dataset {dataset.name}: classnames: {len(classes)} names but label {max(labels)} occurs")
        for label in range(len(classes)):  # empty classes keep a folder so labels stay aligned
            (tmp / f"{label:03d}").mkdir(exist_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = data_dir / "images"
    if final.is_symlink() or final.is_file():
        final.unlink()
    elif final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return {"samples": count, "classes": classes}
