"""Train and eval transforms of the fine-tuning recipes, built by timm's create_transform (what FT-CLIP and BEiT
call): RandomResizedCrop (bicubic) + flip + RandAugment + random erasing for training; resize to size / crop_pct
(bicubic) + center crop for evaluation; CLIP or ImageNet mean/std."""
from __future__ import annotations

from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

MEAN_STD = {"clip": (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD), "imagenet": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)}


def train_transform(*, image_size: int, randaugment: str | None, reprob: float, crop_min: float, hflip: float,
                    mean_std: str):
    """RandomResizedCrop(scale (crop_min, 1)) + flip + RandAugment (timm policy string) + random erasing."""
    from timm.data import create_transform

    mean, std = MEAN_STD[mean_std]
    # color_jitter 0: FT-CLIP's timm setup ignores its 0.4 jitter whenever RandAugment is on; keep it off
    # with RandAugment off too (timm would otherwise switch jitter on)
    return create_transform(input_size=image_size, is_training=True, scale=(crop_min, 1.0), hflip=hflip,
                            color_jitter=0.0, auto_augment=randaugment or None, interpolation="bicubic",
                            re_prob=reprob, re_mode="pixel", re_count=1, mean=mean, std=std)


def eval_transform(*, image_size: int, crop_pct: float, mean_std: str):
    """Resize the short side to image_size / crop_pct (bicubic), center crop, normalise (FT-CLIP: crop_pct 1;
    BEiT: 0.875, i.e. 256 -> 224)."""
    from timm.data import create_transform

    mean, std = MEAN_STD[mean_std]
    return create_transform(input_size=image_size, is_training=False, crop_pct=crop_pct, interpolation="bicubic",
                            mean=mean, std=std)
