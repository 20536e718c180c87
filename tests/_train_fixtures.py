"""Tiny synthetic webdataset shards + a tiny experiment for the training tests (no download, < 1 s)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
import yaml
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 230, 20)}
TINY_MODEL = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 4},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _jpeg(colour, rng, size: int = 16, gray: bool = False) -> bytes:
    pixels = np.clip(np.array(colour)[None, None] + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    if gray:
        img = img.convert("L")
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def write_shards(folder: Path, *, shards: int = 3, per_shard: int = 16, corrupt: tuple[str, ...] = ()) -> Path:
    """data/<tiny>/ with shards/0000N.tar and stats.json in the data stage's format; returns stats.json.
    Keys listed in `corrupt` get bytes that are not an image."""
    rng = np.random.default_rng(0)
    names = list(COLOURS)
    entries = []
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        rel = f"shards/{s:05d}.tar"
        with wds.TarWriter(str(folder / rel)) as sink:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                name = names[(s * per_shard + i) % len(names)]
                image = b"not a jpeg" if key in corrupt else _jpeg(COLOURS[name], rng, gray=i % 5 == 0)
                sink.write({"__key__": key, "jpg": image, "txt": f"a photo of something {name}",
                            "json": json.dumps({"key": key}).encode()})
        entries.append({"path": rel, "samples": per_shard})
    stats = {"dataset": folder.name, "kind": "image_text", "samples": shards * per_shard,
             "input_rows": shards * per_shard, "failed": {}, "shards": entries, "img2dataset": {}}
    path = folder / "stats.json"
    path.write_text(json.dumps(stats))
    return path


def write_experiment(config_dir: Path, name: str = "tiny", **stage) -> Path:
    """config/experiments/<name>.yaml (+ the dataset yaml it names) for a few-second CPU training."""
    (config_dir / "datasets").mkdir(parents=True, exist_ok=True)
    (config_dir / "experiments").mkdir(parents=True, exist_ok=True)
    (config_dir / "datasets" / "tiny.yaml").write_text(yaml.safe_dump({"kind": "image_text", "reader": "url_list"}))
    pretrain = {"batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "epochs": 2, "checkpoint_every": 2,
                "keep_checkpoints": 2, "log_every": 1, "workers": 0, "weight_decay": 0.1}
    pretrain.update(stage)
    finetune = dict(pretrain, image_size=24, text_length=16, epochs=1)
    exp = {"data": {"train": "tiny"}, "model": {"config": TINY_MODEL}, "pretrain": pretrain, "finetune": finetune}
    path = config_dir / "experiments" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def augment(**settings):
    """A stage's validated `augment` section (schema defaults for the keys not given)."""
    from pipeline.config import experiment_from_dict

    raw = {"data": {"train": "tiny"}, "model": {"config": TINY_MODEL}, "pretrain": {"augment": settings}}
    return experiment_from_dict(raw, "tiny", "test").pretrain.augment
