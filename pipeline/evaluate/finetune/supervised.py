"""Supervised baseline of the fine-tuning comparison: torchvision ResNet-50, a new head at 10x the lr.

Weights come from a local file when given (e.g. torchvision's IMAGENET1K_V2 saved state_dict); otherwise
the network starts from random init, and the result says so.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resnet50_classifier(*, num_classes: int, weights: str | None, seed: int) -> nn.Module:
    from torchvision.models import resnet50

    torch.manual_seed(seed)
    model = resnet50(weights=None)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"{path}: ResNet-50 weights not found (field weights)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"{path}: unreadable weights ({type(exc).__name__}: {exc})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"{path}: not a torchvision resnet50 state_dict ({str(exc).splitlines()[0]})") from None
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.xavier_uniform_(model.fc.weight)
    nn.init.zeros_(model.fc.bias)
    return model


def head_lr_groups(model: nn.Module, *, weight_decay: float, head_lr_scale: float) -> list[dict]:
    """Backbone at lr_scale 1, the new fc head at head_lr_scale; no weight decay on 1-D params."""
    groups = {(h, d): [] for h in (False, True) for d in (False, True)}
    for name, p in model.named_parameters():
        groups[(name.startswith("fc."), p.ndim > 1)].append(p)
    return [{"params": ps, "lr_scale": head_lr_scale if head else 1.0, "weight_decay": weight_decay if decay else 0.0}
            for (head, decay), ps in groups.items() if ps]


def eval_transform_imagenet(image_size: int):
    """The ResNet's own preprocessing: resize to 256/224 of the size, center crop, ImageNet mean/std."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(int(round(image_size * 256 / 224)), interpolation=T.InterpolationMode.BILINEAR),
                      T.CenterCrop(image_size), T.Lambda(lambda im: im.convert("RGB")), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
