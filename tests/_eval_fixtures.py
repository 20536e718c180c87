"""Shared helpers of the evaluation tests: a tiny CLIP checkpoint and a tiny labelled ImageFolder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def save_tiny_checkpoint(path: Path, stage: str = "finetune", experiment: str = "tiny", seed: int = 0) -> Path:
    from pipeline.models import create_model

    torch.manual_seed(seed)
    model = create_model(TINY_CONFIG)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "model_config": TINY_CONFIG, "experiment": {"name": experiment},
                "stage": stage, "step": 3, "samples_seen": 12}, path)
    return path


def write_imagefolder(data_dir: Path, classes: list[str], per_class: int = 3, size: int = 20,
                      empty: tuple[int, ...] = ()) -> Path:
    """data_dir/images/<label:03d>/*.png (grayscale, as Fashion-MNIST) and data_dir/stats.json per the contract."""
    rng = np.random.default_rng(0)
    n = 0
    for label in range(len(classes)):
        folder = data_dir / "images" / f"{label:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        if label in empty:
            continue
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), mode="L").save(folder / f"{i:05d}.png")
            n += 1
    stats = {"dataset": data_dir.name, "kind": "classification", "samples": n, "format": "imagefolder",
             "root": "images", "classes": list(classes)}
    (data_dir / "stats.json").write_text(json.dumps(stats))
    return data_dir / "stats.json"


def write_digits_imagefolder(data_dir: Path, indices) -> Path:
    """scikit-learn's 8x8 digits (bundled, no download) as a contract ImageFolder + stats.json."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in indices:
        folder = data_dir / "images" / f"{int(digits.target[i]):03d}"
        folder.mkdir(parents=True, exist_ok=True)
        img = (digits.images[i] * (255 / 16)).astype(np.uint8)
        Image.fromarray(img, mode="L").save(folder / f"{i:05d}.png")
    for label in range(10):
        (data_dir / "images" / f"{label:03d}").mkdir(parents=True, exist_ok=True)
    stats = {"dataset": data_dir.name, "kind": "classification", "samples": len(indices), "format": "imagefolder",
             "root": "images", "classes": [str(d) for d in range(10)]}
    (data_dir / "stats.json").write_text(json.dumps(stats))
    return data_dir / "stats.json"


def write_eval_experiment(config_dir: Path, evaluate: dict, *, name: str = "tiny",
                          datasets: dict[str, str] | None = None) -> Path:
    """config/experiments/<name>.yaml with `evaluate` (and the tiny model), plus config/datasets/*.yaml: an
    image_text training set and one classification set per `datasets` entry {name: class-name/template list}."""
    import yaml

    (config_dir / "datasets").mkdir(parents=True, exist_ok=True)
    (config_dir / "experiments").mkdir(parents=True, exist_ok=True)
    (config_dir / "datasets" / "tiny_pairs.yaml").write_text("kind: image_text\nreader: url_list\n")
    for ds, lists in (datasets or {}).items():
        (config_dir / "datasets" / f"{ds}.yaml").write_text(
            f"kind: classification\nreader: imagefolder\nclassnames: {lists}\ntemplates: {lists}\n")
    exp = {"data": {"train": "tiny_pairs"}, "model": {"config": TINY_CONFIG}, "evaluate": evaluate}
    path = config_dir / "experiments" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def eval_argv(evaluation: str, experiment: Path, dataset: str, *, checkpoint: Path | None = None,
              inputs: dict | None = None, outputs: dict | None = None, cache_dir: Path | None = None) -> list[str]:
    """`python -m pipeline <evaluation> ...` arguments, as the generated Snakemake rule passes them."""
    argv = [evaluation, "--experiment", str(experiment), "--dataset", dataset]
    if checkpoint is not None:
        argv += ["--checkpoint", str(checkpoint)]
    argv += [a for k, v in (inputs or {}).items() for a in ("--input", f"{k}={v}")]
    argv += [a for k, v in (outputs or {}).items() for a in ("--output", f"{k}={v}")]
    return argv + (["--cache-dir", str(cache_dir)] if cache_dir is not None else [])
