"""FT-CLIP: fine-tune CLIP's image tower as a timm ViT with layer-wise lr decay, EMA, label smoothing,
RandAugment and random erasing (Dong et al. 2022), with the head initialised from zero-shot text
embeddings (WiSE-FT) or at random.
"""
from __future__ import annotations

import torch

from ...models import tokenizer, context_length_of
from ..zeroshot import text_classifier
from .vit import clip_to_timm, random_head, zeroshot_head

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def build_classifier(*, clip_model, model_config: dict, classnames: list[str], templates: list[str],
                     head_init: str, seed: int, device: str = "cpu"):
    """The timm ViT classifier; the text tower is used once (zero-shot head) and then dropped."""
    if head_init == "zeroshot":
        with torch.no_grad():
            weights = text_classifier(clip_model.to(device), tokenizer(context_length_of(model_config)),
                                      classnames, templates, device).cpu()
        head = zeroshot_head(clip_model.cpu(), weights)
    elif head_init == "random":
        head = random_head(len(classnames), model_config["embed_dim"],
                           float(clip_model.logit_scale.detach().exp()), seed)
    else:
        raise ValueError(f"head_init: {head_init!r} (zeroshot, random)")
    return clip_to_timm(clip_model.cpu(), model_config, head)


def layer_decay_groups(vit, *, weight_decay: float, layer_decay: float) -> list[dict]:
    """timm's BEiT-style groups: lr_scale = layer_decay ** (depth + 1 - layer); no decay on 1-D params/embeddings."""
    from timm.optim import param_groups_layer_decay

    return param_groups_layer_decay(vit, weight_decay=weight_decay, layer_decay=layer_decay,
                                    no_weight_decay_list=vit.no_weight_decay())


def train_transform(*, image_size: int, randaugment: str | None, reprob: float, scale=(0.08, 1.0),
                    mean=CLIP_MEAN, std=CLIP_STD):
    """RandomResizedCrop + flip + RandAugment (timm policy string) + random erasing, normalised."""
    from timm.data import create_transform

    # color_jitter 0: FT-CLIP's timm setup ignores its 0.4 jitter whenever RandAugment is on; keep it off
    # with RandAugment off too (timm would otherwise switch jitter on)
    return create_transform(input_size=image_size, is_training=True, scale=scale, hflip=0.5, color_jitter=0.0,
                            auto_augment=randaugment or None, interpolation="bicubic", re_prob=reprob,
                            re_mode="pixel", re_count=1, mean=mean, std=std)
