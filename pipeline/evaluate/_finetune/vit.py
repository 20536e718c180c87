"""An open_clip image tower as a timm VisionTransformer with one of four classification heads.

timm's own OpenAI-CLIP converter maps the weights (conv1 -> patch_embed, class_embedding -> cls_token with
its position in pos_embed[0], ln_pre -> norm_pre, resblocks -> blocks, ln_post -> norm, proj -> head), so
layer-wise lr decay, EMA and DeepSpeed see a plain timm ViT. Heads (`evaluate.finetune_eval.head`):

- zeroshot / random: CLIP's ln_post + projection + a cosine classifier (WiSE-FT's `ClassificationHead`), its rows
  the zero-shot text embeddings x logit scale, or random unit rows at the same scale.
- ftclip: FT-CLIP's `models/finetune_clip.py`: ln_post and proj dropped, a new LayerNorm `fc_norm` applied to
  every patch token (class token excluded) and then averaged, a new linear head initialised x head_init_scale.
- cls_linear: BEiT's `--use_cls` (SLIP's fine-tuning recipe): the class token after the final norm, proj dropped,
  a new linear head initialised x head_init_scale.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer, _convert_openai_clip
from torch import nn

from ...errors import UserError

HEADS = ("zeroshot", "random", "ftclip", "cls_linear")
CLIP_HEADS = ("zeroshot", "random")   # the heads WiSE-FT can interpolate against the zero-shot classifier

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


class ClipViT(VisionTransformer):
    """timm's ViT with the FT-CLIP / BEiT layer-decay depths and FT-CLIP's norm-then-average pooling.

    Depths (BEiT optim_factory.get_num_layer_for_vit, FT-CLIP's copy of it): patch embedding, class token,
    position embedding and the pre-transformer norm at 0; block i at i + 1; everything else (final norm,
    fc_norm, head) at the top. timm's own matcher merges the final `norm` into the last block (x0.6 instead of
    x1.0 at layer decay 0.6), so this class states the rule itself and timm's param_groups_layer_decay applies it.
    """

    def __init__(self, *, token_norm_mean: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.token_norm_mean = token_norm_mean

    def group_matcher(self, coarse: bool = False) -> dict:
        # unmatched names go to the top group (timm's group_parameters gives them the highest id)
        return dict(stem=r"^cls_token|reg_token|pos_embed|patch_embed|norm_pre", blocks=[(r"^blocks\.(\d+)", None)])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if not self.token_norm_mean:
            return super().forward_head(x, pre_logits)
        # FT-CLIP: head(fc_norm(x[:, 1:]).mean(1)); timm's avg pool would average first, then normalise
        x = self.head_drop(self.fc_norm(x[:, self.num_prefix_tokens:]).mean(dim=1))
        return x if pre_logits else self.head(x)


def _check_plain(model_config: dict) -> dict:
    vc = model_config["vision_cfg"]
    for key, plain in _PLAIN.items():
        if vc.get(key, plain) != plain:
            raise UserError(f"model_config.vision_cfg.{key}: {vc[key]!r} has no timm ViT equivalent "
                            f"(fine-tuning needs a plain ViT image tower)")
    if isinstance(vc.get("layers"), (list, tuple)):
        raise UserError("model_config.vision_cfg.layers: a ResNet image tower cannot be fine-tuned as a ViT")
    return vc


def _timm_vit(model_config: dict, head: str, num_classes: int, drop_path: float) -> ClipViT:
    vc = _check_plain(model_config)
    width = vc["width"]
    ftclip = head == "ftclip"
    vit = ClipViT(
        img_size=vc["image_size"], patch_size=vc["patch_size"], embed_dim=width, depth=vc["layers"],
        num_heads=width // vc.get("head_width", 64), mlp_ratio=vc.get("mlp_ratio", 4.0), qkv_bias=True,
        pre_norm=True, class_token=True, global_pool="avg" if ftclip else "token", fc_norm=ftclip,
        num_classes=num_classes, drop_path_rate=drop_path, norm_layer=partial(nn.LayerNorm, eps=1e-5),
        act_layer="quick_gelu" if model_config.get("quick_gelu", False) else "gelu", token_norm_mean=ftclip)
    if head in CLIP_HEADS:
        vit.head = ClipHead(width, model_config["embed_dim"], num_classes)
    return vit


def _linear_head(linear: nn.Linear, *, scale: float, keep_bias_init: bool, seed: int) -> dict:
    """FT-CLIP / BEiT head init: weight trunc_normal(std .02) x scale; bias x scale (FT-CLIP keeps PyTorch's
    default Linear bias init before scaling, BEiT zeroes it). Drawn from `seed`, the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = nn.Linear(linear.in_features, linear.out_features)   # PyTorch's default init
        trunc_normal_(fresh.weight, std=0.02)
    bias = fresh.bias.detach() if keep_bias_init else torch.zeros(linear.out_features)
    return {"head.weight": fresh.weight.detach() * scale, "head.bias": bias * scale}


def clip_to_timm(clip_model, model_config: dict, *, head: str, head_weight: torch.Tensor | None = None,
                 num_classes: int | None = None, head_init_scale: float, drop_path: float, seed: int) -> ClipViT:
    """timm ViT with the CLIP image tower's weights and the given head. zeroshot / random take `head_weight`
    [classes, embed_dim] as the classifier rows; ftclip / cls_linear draw a new linear head from `seed`."""
    if head not in HEADS:
        raise ValueError(f"head: {head!r} ({', '.join(HEADS)})")
    num_classes = head_weight.shape[0] if head in CLIP_HEADS else num_classes
    vit = _timm_vit(model_config, head, num_classes, drop_path)
    sd = {"visual." + k: v for k, v in clip_model.visual.state_dict().items()}
    converted = _convert_openai_clip(sd, vit, prefix="visual.")
    proj = converted.pop("head.weight")
    converted.pop("head.bias")
    if head in CLIP_HEADS:
        converted.update({"head.proj.weight": proj, "head.classes.weight": head_weight.detach().clone(),
                          "head.classes.bias": torch.zeros(head_weight.shape[0])})
    else:
        if head == "ftclip":   # ln_post is not part of FT-CLIP's model
            converted.pop("norm.weight")
            converted.pop("norm.bias")
            converted.update({"fc_norm.weight": torch.ones(vit.embed_dim), "fc_norm.bias": torch.zeros(vit.embed_dim)})
        converted.update(_linear_head(vit.head, scale=head_init_scale, keep_bias_init=head == "ftclip", seed=seed))
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
