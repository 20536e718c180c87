"""FILIP (Yao et al. 2021): token-wise late interaction instead of one pooled vector per side.

Per-token features come from open_clip's own towers (pipeline/methods/_towers.py): image = the ViT's
patch tokens after ln_post, text = the transformer's token states after ln_final (padding excluded),
both mapped by the tower's own projection (visual.proj, text_projection) into the joint space. The
similarity of image i and caption j averages, over i's patches, the best cosine to j's tokens
(image->text), and over j's tokens the best cosine to i's patches (text->image); symmetric InfoNCE
over the global batch with a learnable temperature of its own (`token_logit_scale`, exp clamped at 100,
init 1/0.07 like the DeCLIP benchmark's `logit_scale_dense`).

Loss = FILIP + filip_clip_weight x global CLIP. The DeCLIP benchmark's FILIP used the token-wise loss
alone; we default the global term to 1 because the zero-shot evaluator scores pooled embeddings, which
only the global term trains (0 reproduces the published objective; model.logit_scale is then frozen).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import Method, register
from ._losses import clip_loss, filip_loss
from ._options import resolve_options
from ._towers import (encode_image_parts, encode_text_parts, project_image_tokens, project_text_tokens,
                      text_token_mask, unwrap)

MAX_LOG_SCALE = math.log(100.0)


class TokenScale(nn.Module):
    """FILIP's own learnable temperature (a parameter named *logit_scale: no weight decay)."""

    def __init__(self):
        super().__init__()
        self.token_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self) -> torch.Tensor:
        return self.token_logit_scale.clamp(max=MAX_LOG_SCALE).exp()


def filip_term(model: torch.nn.Module, scale: torch.Tensor, image_tokens: torch.Tensor,
               text_states: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(FILIP loss, accuracy) from tower token outputs (width-dim) projected to the joint space."""
    return filip_loss(project_image_tokens(model, image_tokens), project_text_tokens(model, text_states),
                      text_token_mask(text), scale)


@register("filip")
class FILIP(Method):
    def __init__(self, model: torch.nn.Module, options: dict | None = None):
        super().__init__(model, resolve_options(options))
        self.clip_weight = float(self.options["filip_clip_weight"])
        self.token_scale = TokenScale()
        if self.clip_weight == 0:
            unwrap(model).logit_scale.requires_grad_(False)

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = encode_image_parts(model, batch["image"])
        text_embed, states = encode_text_parts(model, batch["text"])
        scale = self.token_scale()
        loss, acc = filip_term(model, scale, image.tokens, states, batch["text"])
        out = {"filip_loss": loss.detach(), "acc_image_to_text": acc, "token_logit_scale": scale.detach()}
        if self.clip_weight > 0:
            logit_scale = unwrap(model).logit_scale.exp()
            clip, _ = clip_loss(F.normalize(image.embed, dim=-1), F.normalize(text_embed, dim=-1), logit_scale)
            loss = loss + self.clip_weight * clip
            out.update(clip_loss=clip.detach(), logit_scale=logit_scale.detach())
        return {"loss": loss, **out}
