"""A final checkpoint in open_clip's own form, so open_clip (and tools built on it) load it directly.

The folder holds `open_clip_config.json` ({"model_cfg", "preprocess_cfg"}: open_clip's local-dir/HF
layout), `<name>.json` (the bare model config, for open_clip.add_model_config) and
`open_clip_pytorch_model.bin` (the state dict). Either of
    open_clip.create_model_and_transforms("local-dir:<folder>")
    open_clip.add_model_config("<folder>/<name>.json")
    open_clip.create_model_and_transforms("<name>", pretrained="<folder>/open_clip_pytorch_model.bin")
gives the same model as pipeline.models.load_model(final.pt).

`python -m pipeline.models.export --checkpoint results/E/finetune/final.pt --out results/E/finetune/open_clip`
"""
from __future__ import annotations

import argparse
from pathlib import Path

from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from ..utils.io import torch_save, write_json
from .factory import image_size_of, load_checkpoint

WEIGHTS = "open_clip_pytorch_model.bin"


def export_open_clip(*, model: dict, model_config: dict, folder: str | Path, name: str) -> Path:
    """Write the open_clip form of (state dict, model config) into `folder`; returns the weights path."""
    folder = Path(folder)
    preprocess = {"size": image_size_of(model_config), "mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD),
                  "interpolation": "bicubic", "resize_mode": "shortest"}
    write_json(folder / f"{name}.json", model_config)
    write_json(folder / "open_clip_config.json", {"model_cfg": model_config, "preprocess_cfg": preprocess})
    torch_save(model, folder / WEIGHTS)
    return folder / WEIGHTS


def export_checkpoint(checkpoint: str | Path, folder: str | Path, name: str | None = None) -> Path:
    """Export a final.pt ({"model", "model_config", ...}) as above; name defaults to clipforge-<E>-<stage>."""
    ckpt = load_checkpoint(checkpoint)
    if name is None:
        name = f"clipforge-{ckpt.get('experiment', {}).get('name', 'model')}-{ckpt.get('stage', 'final')}"
    return export_open_clip(model=ckpt["model"], model_config=ckpt["model_config"], folder=folder, name=name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.models.export", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="a final.pt of pretrain or finetune")
    p.add_argument("--out", required=True, type=Path, help="folder to write the open_clip files into")
    p.add_argument("--name", default=None, help="model config name (default clipforge-<experiment>-<stage>)")
    args = p.parse_args(argv)
    print(export_checkpoint(args.checkpoint, args.out, args.name))
    return 0


if __name__ == "__main__":
    import sys

    from ..errors import run_main

    sys.exit(run_main(main))
