"""CLIP: symmetric InfoNCE between image and text embeddings (Radford et al. 2021).

Distributed form ("local loss + gather with grad", as open_clip's ClipLoss(local_loss=True,
gather_with_grad=True)): every rank gathers the normalised features of all ranks with
torch.distributed.nn's differentiable all_gather, then scores only its own m rows against all
N = world x m columns. Rank r's loss is the mean over its rows; DDP averages gradients over ranks,
and the gather's backward routes each column's gradient to the rank that produced it, so the
update equals the one of the full N x N loss in a single process while each rank holds an
m x N logit matrix instead of N x N.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distributed import gather_with_grad, world
from . import Method, register


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image->text logits [m, N], text->image logits [m, N], target column of each local row)."""
    all_image = gather_with_grad(image_features)
    all_text = gather_with_grad(text_features)
    rank, world_size = world()
    rows = image_features.shape[0]
    labels = torch.arange(rows, device=image_features.device) + rank * rows
    logits_image = logit_scale * image_features @ all_text.T
    if world_size == 1:  # the full square matrix: text->image logits are its transpose
        return logits_image, logits_image.T, labels
    logits_text = logit_scale * text_features @ all_image.T
    return logits_image, logits_text, labels


@register("clip")
class Clip(Method):
    """The plain CLIP objective; no extra heads, no extra views."""

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = model(batch["image"], batch["text"])
        if isinstance(out, dict):  # a model built with output_dict=True
            out = (out["image_features"], out["text_features"], out["logit_scale"])
        image_features, text_features, logit_scale = out[:3]
        logits_image, logits_text, labels = clip_logits(image_features, text_features, logit_scale)
        loss = (F.cross_entropy(logits_image.float(), labels) + F.cross_entropy(logits_text.float(), labels)) / 2
        with torch.no_grad():
            acc = (logits_image.argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "acc_image_to_text": acc, "logit_scale": logit_scale.detach()}
