"""An open_clip image tower as a timm VisionTransformer, plus a CLIP-style classification head.

timm's own OpenAI-CLIP converter maps the weights (conv1 -> patch_embed, class_embedding -> cls_token with
its position in pos_embed[0], ln_pre -> norm_pre, resblocks -> blocks, ln_post -> norm); the projection
becomes part of `ClipHead`, so layer-wise lr decay, EMA and DeepSpeed see a plain timm ViT.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer, _convert_openai_clip
from torch import nn

from ...errors import UserError

# open_clip vision options a plain timm ViT cannot express, with the value that keeps the two identical
_PLAIN = {"attentional_pool": False, "no_ln_pre": False, "final_ln_after_pool": False, "pool_type": "tok",
          "ls_init_value": None, "timm_model_name": None, "pos_embed_type": "learnable", "qk_norm": False,
          "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
          "scale_fc": False}


class ClipHead(nn.Module):
    """logits = classes(normalise(proj(pooled))): CLIP's projection and cosine classifier, trainable."""

    def __init__(self, width: int, embed_dim: int, num_classes: int):
        super().__init__()
        self.proj = nn.Linear(width, embed_dim, bias=False)
        self.classes = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classes(F.normalize(self.proj(x), dim=-1))


def _timm_vit(model_config: dict, num_classes: int) -> VisionTransformer:
    vc = model_config["vision_cfg"]
    for key, plain in _PLAIN.items():
        if vc.get(key, plain) != plain:
            raise UserError(f"model_config.vision_cfg.{key}: {vc[key]!r} has no timm ViT equivalent "
                            f"(fine-tuning needs a plain ViT image tower)")
    if isinstance(vc.get("layers"), (list, tuple)):
        raise UserError("model_config.vision_cfg.layers: a ResNet image tower cannot be fine-tuned as a ViT")
    width, size = vc["width"], vc["image_size"]
    vit = VisionTransformer(
        img_size=size, patch_size=vc["patch_size"], embed_dim=width, depth=vc["layers"],
        num_heads=width // vc.get("head_width", 64), mlp_ratio=vc.get("mlp_ratio", 4.0), qkv_bias=True,
        pre_norm=True, class_token=True, global_pool="token", num_classes=model_config["embed_dim"],
        norm_layer=partial(nn.LayerNorm, eps=1e-5),
        act_layer="quick_gelu" if model_config.get("quick_gelu", False) else "gelu")
    vit.head = ClipHead(width, model_config["embed_dim"], num_classes)
    return vit


def clip_to_timm(clip_model, model_config: dict, head_weight: torch.Tensor) -> VisionTransformer:
    """timm ViT with the CLIP image tower's weights; `head_weight` [classes, embed_dim] initialises the classifier."""
    vit = _timm_vit(model_config, head_weight.shape[0])
    sd = {"visual." + k: v for k, v in clip_model.visual.state_dict().items()}
    converted = _convert_openai_clip(sd, vit, prefix="visual.")
    converted["head.proj.weight"] = converted.pop("head.weight")
    converted.pop("head.bias")
    converted["head.classes.weight"] = head_weight.detach().clone()
    converted["head.classes.bias"] = torch.zeros(head_weight.shape[0])
    missing, unexpected = vit.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise UserError(f"model: CLIP image tower does not map onto a timm ViT (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    return vit


def zeroshot_head(clip_model, text_classifier: torch.Tensor) -> torch.Tensor:
    """WiSE-FT's head: the zero-shot class embeddings [classes, embed_dim] times CLIP's logit scale."""
    return clip_model.logit_scale.detach().exp() * text_classifier.T


def random_head(num_classes: int, embed_dim: int, scale: float, seed: int) -> torch.Tensor:
    """Random unit rows at the same logit scale as the zero-shot head, so both start equally sharp."""
    g = torch.Generator().manual_seed(seed)
    return scale * F.normalize(torch.randn(num_classes, embed_dim, generator=g), dim=-1)
