"""A final checkpoint read once: the model plus the experiment name and stage it came from."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..models import create_model, load_checkpoint


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module
    model_config: dict
    experiment: str
    stage: str
    path: Path


def load_for_eval(path: str | Path) -> LoadedCheckpoint:
    """Read the checkpoint once (weights_only) and build its model in eval mode; metadata for the result JSON."""
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
