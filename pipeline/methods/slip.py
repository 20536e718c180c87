"""SLIP (Mu et al. 2021): CLIP loss + ssl_scale x SimCLR loss, sharing the image tower.

batch["image"] (the loader's CLIP transform; SLIP crops it with area 0.5-1) feeds the CLIP term,
batch["views"] (two SimCLR views) the SimCLR term, so the image tower runs on 3 x B images per step.
"""
from __future__ import annotations

import torch

from . import register
from ._losses import clip_loss
from .clip import model_features
from .simclr import SimCLRTerm


@register("slip")
class SLIP(SimCLRTerm):
    def __init__(self, model: torch.nn.Module, options: dict | None = None):
        super().__init__(model, options)
        self.ssl_scale = float(self.options["ssl_scale"])

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image_features, text_features, logit_scale = model_features(model, batch["image"], batch["text"])
        clip, clip_acc = clip_loss(image_features, text_features, logit_scale,
                                   column_grad=self.options["clip_column_grad"])
        ssl, ssl_acc = self.ssl_term(model, batch)
        return {"loss": clip + self.ssl_scale * ssl, "clip_loss": clip.detach(), "ssl_loss": ssl.detach(),
                "acc_image_to_text": clip_acc, "ssl_acc": ssl_acc, "logit_scale": logit_scale.detach()}
