"""Model configs and construction through open_clip's own factory.

A model config is open_clip's JSON form ({embed_dim, vision_cfg, text_cfg, ...}). Project configs
(e.g. the CLIPA L/16 variants open_clip no longer ships) live in pipeline/models/configs and are
registered with open_clip.add_model_config, so `create_model` always goes through
open_clip.create_model.
"""
from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from ..errors import UserError
from ..utils.io import torch_load, write_text

PROJECT_CONFIGS = Path(__file__).with_name("configs")
if PROJECT_CONFIGS.is_dir():
    open_clip.add_model_config(PROJECT_CONFIGS)

_REGISTERED_INLINE: set[str] = set()


def resolve_model_config(name: str | None, inline: dict | None, image_size: int | None = None,
                         context_length: int | None = None, pos_embed_type: str | None = None) -> dict:
    """The full open_clip config for an experiment's model, at a stage's image size / text length (and
    image position embedding, open_clip's vision_cfg.pos_embed_type; None keeps the config's)."""
    if name is not None:
        cfg = open_clip.get_model_config(name)
        if cfg is None:
            raise UserError(f"model.name: unknown model config {name!r} (see open_clip.list_models())")
    else:
        cfg = inline
    cfg = copy.deepcopy(cfg)
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in cfg:
            raise UserError(f"model.config.{key}: required in an open_clip model config")
    if image_size is not None:
        cfg["vision_cfg"]["image_size"] = image_size
    if context_length is not None:
        cfg["text_cfg"]["context_length"] = context_length
    if pos_embed_type is not None and (pos_embed_type != "learnable" or "pos_embed_type" in cfg["vision_cfg"]):
        cfg["vision_cfg"]["pos_embed_type"] = pos_embed_type  # open_clip's default stays implicit
    patch = cfg["vision_cfg"].get("patch_size")
    if isinstance(patch, int) and image_size_of(cfg) < patch:  # the patch embedding would have no input to slide on
        key = "image_size" if image_size is not None else "model.config.vision_cfg.image_size"
        raise UserError(f"{key}: {image_size_of(cfg)} px is smaller than one patch of the model "
                        f"(vision_cfg.patch_size {patch})")
    return cfg


def _register(cfg: dict) -> str:
    """Register a config with open_clip under a content-derived name and return that name."""
    blob = json.dumps(cfg, sort_keys=True)
    name = "clipforge-" + hashlib.sha1(blob.encode()).hexdigest()[:12]
    if name not in _REGISTERED_INLINE:
        folder = Path(tempfile.gettempdir()) / "clipforge-model-configs"
        folder.mkdir(exist_ok=True)
        path = folder / f"{name}.json"
        write_text(path, blob)  # atomic: torchrun ranks register the same config at the same time
        open_clip.add_model_config(path)
        _REGISTERED_INLINE.add(name)
    return name


def create_model(model_config: dict) -> torch.nn.Module:
    """A freshly initialised open_clip model (fp32) for a full model config, on torch's default device: the CPU,
    or the `meta` device inside `with torch.device("meta")` (the pre-flight builds the job's model there)."""
    return open_clip.create_model(_register(model_config), pretrained=None, load_weights=False,
                                  device=torch.get_default_device())


def image_size_of(model_config: dict) -> int:
    size = model_config["vision_cfg"]["image_size"]
    return size[0] if isinstance(size, (list, tuple)) else int(size)


def context_length_of(model_config: dict) -> int:
    return int(model_config["text_cfg"].get("context_length", 77))


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint with weights_only=True: no pickled code from a file ever runs (a file that carries
    some is refused with one line naming it). Every checkpoint reader of the package goes through here."""
    return torch_load(path, "checkpoint")


@dataclass
class LoadedCheckpoint:
    """A final checkpoint's model (eval mode) with the experiment name and stage it came from."""
    model: torch.nn.Module
    model_config: dict
    experiment: str
    stage: str
    path: Path


def load_model(path: str | Path) -> LoadedCheckpoint:
    """Read a final checkpoint ({'model', 'model_config', 'stage', ...}) once and build its model in eval mode."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    for key in ("model", "model_config", "stage"):
        if key not in ckpt:
            raise UserError(f"{path}: checkpoint has no {key!r} entry")
    model = create_model(ckpt["model_config"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{path}: model: weights do not fit model_config ({first})") from None
    experiment = (ckpt.get("experiment") or {}).get("name") or path.parent.parent.name
    return LoadedCheckpoint(model.eval(), ckpt["model_config"], experiment, ckpt["stage"], path)


def tokenizer(context_length: int):
    """open_clip's default BPE tokenizer (ships its vocabulary; no download)."""
    return open_clip.get_tokenizer("ViT-B-32", context_length=context_length)
