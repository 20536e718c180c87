"""DeFILIP (Cui et al. 2022, the CLIP-benchmark paper): DeCLIP plus a FILIP token-wise term.

Loss = DeCLIP's weighted terms + w.filip x FILIP (published 0.2). As in the DeCLIP code the FILIP term pairs
the first image view's patch tokens with the token states of DeCLIP's (MLM-masked) caption pass, so it costs no
extra tower forward, through FILIP's own token mappings, top-k selection and temperature (filip.TokenHead;
`filip_token_dim`, `filip_top_k`, `token_logit_scale_bounds`).
"""
from __future__ import annotations

import torch

from . import register
from .declip import DeCLIP
from .filip import TokenHead, token_features, token_loss


@register("defilip")
class DeFILIP(DeCLIP):
    def __init__(self, model: torch.nn.Module, options: dict | None = None):
        super().__init__(model, options)
        if self.weights["filip"] > 0:
            self.token_head = TokenHead(model, self.options["filip_token_dim"])

    def scale_bounds(self) -> list[tuple[torch.nn.Parameter, float, float]]:
        if self.weights["filip"] == 0:
            return []
        low, high = self.options["token_logit_scale_bounds"]
        return [(self.token_head.token_logit_scale, float(low), float(high))]

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out, parts = self.terms(model, batch)
        if self.weights["filip"] > 0:
            tokens = token_features(self.token_head, parts["image_hidden"], parts["text_states"],
                                    self.options["filip_top_k"])
            out.update(token_loss(tokens))
        loss = self.weighted(out)
        return {"loss": loss, **{k: v.detach() for k, v in out.items()}}
