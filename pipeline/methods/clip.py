"""CLIP: symmetric InfoNCE between image and text embeddings (Radford et al. 2021).

The loss is open_clip's ClipLoss in its "local loss + gather with grad" form (pipeline.methods._losses.clip_loss):
every rank gathers the normalised features of all ranks with torch.distributed.nn's differentiable all_gather,
then scores only its own m rows against all N = world x m columns. Rank r's loss is the mean over its rows; DDP
averages gradients over ranks, and the gather's backward routes each column's gradient to the rank that produced
it, so the update equals the one of the full N x N loss in a single process while each rank holds an m x N logit
matrix instead of N x N.
"""
from __future__ import annotations

import torch

from . import Method, register
from ._losses import cap_scale, clip_loss
from ._options import resolve_options


def model_features(model: torch.nn.Module, image: torch.Tensor, text: torch.Tensor):
    """(normalised image features, normalised text features, logit scale) from open_clip's own forward."""
    out = model(image, text)
    if isinstance(out, dict):  # a model built with output_dict=True
        out = (out["image_features"], out["text_features"], out["logit_scale"])
    return out[:3]


@register("clip")
class Clip(Method):
    """The plain CLIP objective; no extra heads, no extra views. Its loss is a function of per-sample
    features, so gradient accumulation enlarges the contrastive batch exactly (open_clip's --accum-freq)."""

    accumulates = True

    def __init__(self, model: torch.nn.Module, options: dict | None = None):
        super().__init__(model, resolve_options(options))
        self.cap, self.column_grad = self.options["logit_scale_cap"], self.options["clip_column_grad"]

    def features(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image, text, logit_scale = model_features(model, batch["image"], batch["text"])
        return {"image": image, "text": text, "logit_scale": logit_scale}

    def loss(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        scale = cap_scale(features["logit_scale"], self.cap)
        loss, acc = clip_loss(features["image"], features["text"], scale, column_grad=self.column_grad)
        return {"loss": loss, "acc_image_to_text": acc, "logit_scale": scale.detach()}

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.loss(self.features(model, batch))
