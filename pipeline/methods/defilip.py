"""DeFILIP (Cui et al. 2022, the CLIP-benchmark paper): DeCLIP plus a FILIP token-wise term.

Loss = DeCLIP's weighted terms + w.filip x FILIP (published 0.2). The FILIP term pairs the first image
view's patch tokens with the caption's token states from DeCLIP's (MLM-masked) caption pass, as the
reference does, so it costs no extra tower forward; it has its own temperature (filip.TokenScale).
"""
from __future__ import annotations

import torch

from . import register
from .declip import DeCLIP
from .filip import TokenScale, filip_term


@register("defilip")
class DeFILIP(DeCLIP):
    def __init__(self, model: torch.nn.Module, options: dict | None = None):
        super().__init__(model, options)
        if self.weights["filip"] > 0:
            self.token_scale = TokenScale()

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out, parts = self.terms(model, batch)
        if self.weights["filip"] > 0:
            scale = self.token_scale()
            out["filip_loss"], out["filip_acc"] = filip_term(model, scale, parts["image_tokens"],
                                                             parts["text_states"], batch["text"])
            out["token_logit_scale"] = scale.detach()
        loss = self.weighted(out)
        return {"loss": loss, **{k: v.detach() for k, v in out.items()}}
