"""FILIP (Yao et al. 2021) as the DeCLIP benchmark (Cui et al. 2022) trained it: token-wise late interaction.

Tokens: the ViT's patch tokens before ln_post (transformer output without the class token) and the text
tower's states after ln_final at every position (padding included, as the DeCLIP code has no padding
mask), each mapped by a new linear layer into a `filip_token_dim`-wide space (256) and L2-normalised
(`TokenHead`). Image i scores caption j by the mean over i's tokens of the best cosine to j's chosen tokens,
and the other way round; each sample offers the other samples only its `filip_top_k` (16) tokens most
similar to its own pair, the only tokens gathered across ranks (`_losses.select_tokens`, `filip_loss`).
Symmetric InfoNCE over the global batch with FILIP's own temperature `token_logit_scale` (init 1/0.07), whose
raw value the trainer clamps to `token_logit_scale_bounds` ([3, 6]) before and after each optimizer step.

The image is the first of the loader's augmented views (DeCLIP's MoCo-v2 view 1, crop area 0.2-1) and the
caption is MLM-corrupted without an MLM loss (`filip_mask_captions`), as the benchmark's config ran.
Loss = FILIP + filip_clip_weight x global CLIP (0, the published objective: the pooled path is then frozen,
`freeze_global_heads`).
The forward splits into per-sample `features` and a `loss` over them, so gradient accumulation enlarges the
contrastive batch exactly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from . import Method, register
from ._losses import cap_scale, clip_loss, filip_loss, late_interaction, select_tokens, wide
from ._options import resolve_options
from ._towers import encode_image_parts, encode_text_parts, hidden_width, masked_caption, text_width, unwrap


class TokenHead(nn.Module):
    """FILIP's token mappings and temperature (DeCLIP benchmark: image_mapping, text_mapping,
    logit_scale_dense). The temperature is named *logit_scale: no weight decay."""

    def __init__(self, model: torch.nn.Module, token_dim: int):
        super().__init__()
        self.image_mapping = nn.Linear(hidden_width(model), token_dim)
        self.text_mapping = nn.Linear(text_width(model), token_dim)
        self.token_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def image_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Mapped, L2-normalised patch tokens from the ViT's transformer output (class token first)."""
        return F.normalize(wide(self.image_mapping(hidden[:, 1:])), dim=-1)

    def text_tokens(self, states: torch.Tensor) -> torch.Tensor:
        """Mapped, L2-normalised tokens from the text tower's token states (every position)."""
        return F.normalize(wide(self.text_mapping(states)), dim=-1)


def token_features(head: TokenHead, hidden: torch.Tensor, states: torch.Tensor, top_k: int | None) -> dict:
    """The tensors of the FILIP loss: per sample all tokens and the tokens each sample offers the others,
    and the temperature (0-d: shared by the micro-batches of an accumulated step)."""
    image, text = head.image_tokens(hidden), head.text_tokens(states)
    image_chosen, text_chosen = select_tokens(image, text, top_k)
    return {"image_tokens": image, "text_tokens": text, "image_chosen": image_chosen, "text_chosen": text_chosen,
            "token_scale": head.token_logit_scale.exp()}


def token_loss(features: dict) -> dict[str, torch.Tensor]:
    scale = features["token_scale"]
    loss, acc = filip_loss(features["image_tokens"], features["text_tokens"], features["image_chosen"],
                           features["text_chosen"], scale)
    return {"filip_loss": loss, "filip_acc": acc, "token_logit_scale": scale.detach()}


def first_view(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    views = batch.get("views")
    if views is None or views.dim() != 5:
        shape = None if views is None else tuple(views.shape)
        raise UserError(f"batch.views: expected [B, V, 3, H, W] augmented views, got {shape}")
    return views[:, 0]


def freeze_global_heads(model: torch.nn.Module) -> None:
    """The token-wise loss alone never reaches the pooled path (ln_post, the projections, the temperature):
    requires_grad=False, so the optimizer and DDP expect no gradient for them (the DeCLIP code computed
    the global logits with weight 0, which only let AdamW's weight decay shrink them)."""
    m = unwrap(model)
    frozen = [m.logit_scale, m.visual.proj, *m.visual.ln_post.parameters()]
    text = m if hasattr(m, "text_projection") else m.text
    proj = text.text_projection
    frozen += list(proj.parameters()) if isinstance(proj, nn.Module) else [proj]
    for param in frozen:
        if param is not None:
            param.requires_grad_(False)


@register("filip")
class FILIP(Method):
    accumulates = True
    image_views = 1
    view_crop_scale = (0.2, 1.0)  # DeCLIP's MoCo-v2 view

    def __init__(self, model: torch.nn.Module, options: dict | None = None):
        super().__init__(model, resolve_options(options))
        o = self.options
        self.clip_weight, self.top_k, self.cap = float(o["filip_clip_weight"]), o["filip_top_k"], o["logit_scale_cap"]
        self.token_head = TokenHead(model, o["filip_token_dim"])
        if o["filip_mask_captions"]:
            self.mask_embedding = nn.Parameter(torch.randn(text_width(model)) * 0.02)
        if self.clip_weight == 0:
            freeze_global_heads(model)

    def scale_bounds(self) -> list[tuple[torch.nn.Parameter, float, float]]:
        low, high = self.options["token_logit_scale_bounds"]
        return [(self.token_head.token_logit_scale, float(low), float(high))]

    def features(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = encode_image_parts(model, first_view(batch))
        if hasattr(self, "mask_embedding"):
            text_embed, states, _ = masked_caption(model, batch["text"], probability=self.options["mlm_probability"],
                                                   mask_embedding=self.mask_embedding)
        else:
            text_embed, states = encode_text_parts(model, batch["text"])
        out = token_features(self.token_head, image.hidden, states, self.top_k)
        if self.clip_weight > 0:
            out.update(image_embed=F.normalize(image.embed, dim=-1), text_embed=F.normalize(text_embed, dim=-1),
                       logit_scale=unwrap(model).logit_scale.exp())
        return out

    def loss(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = token_loss(features)
        loss = out["filip_loss"]
        if self.clip_weight > 0:
            scale = cap_scale(features["logit_scale"], self.cap)
            clip, _ = clip_loss(features["image_embed"], features["text_embed"], scale, column_grad=True)
            loss = loss + self.clip_weight * clip
            out.update(clip_loss=clip.detach(), logit_scale=scale.detach())
        return {"loss": loss, **{k: v.detach() for k, v in out.items()}}

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.loss(self.features(model, batch))


@torch.no_grad()
def token_classifier(model: torch.nn.Module, head: TokenHead, prompts: torch.Tensor) -> torch.Tensor:
    """FILIP's token-wise zero-shot classifier as the DeCLIP code builds it (solver/filip_solver.py evaluate):
    each class's prompts [C, P, L] (token ids) -> mapped, L2-normalised token embeddings, averaged over the
    prompts position by position, divided by the Frobenius norm of that [L, D] matrix. Returns [C, L, D]."""
    classes, per_class, length = prompts.shape
    _, states = encode_text_parts(model, prompts.reshape(-1, length))
    tokens = head.text_tokens(states).reshape(classes, per_class, length, -1).mean(1)
    return tokens / tokens.flatten(1).norm(dim=1)[:, None, None]


@torch.no_grad()
def token_zeroshot_logits(model: torch.nn.Module, head: TokenHead, images: torch.Tensor,
                          classifier: torch.Tensor) -> torch.Tensor:
    """[B, C] scores: the mean over an image's mapped patch tokens of the best class token (no top-k at test
    time, as the DeCLIP code's FILIP evaluation; the published FILIP 39.5 is this score)."""
    image = head.image_tokens(encode_image_parts(model, images).hidden)
    return late_interaction(image, classifier.to(image.dtype))
