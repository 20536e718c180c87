"""Augmented image views and augmented captions for the self-supervised methods.

Image views (SimCLR, SLIP, DeCLIP): SimCLR's recipe as SLIP trains it - random resized crop (area
0.08-1; DeCLIP's MoCo-v2 views use 0.2-1), colour jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale p 0.2,
Gaussian blur (sigma 0.1-2) p 0.5, horizontal flip - then the same normalisation as batch["image"].
Caption augmentation (DeCLIP's "augmented caption"): DeCLIP draws one EDA operation per caption from
{synonym replacement, random swap, random deletion}. Synonyms need WordNet, which cannot be fetched
offline, so we draw between the other two: delete each word with probability alpha (keeping at least
one), or swap max(1, alpha x words) random pairs of words.

All randomness comes from torch's global RNG, which the loader seeds per sample, so a batch's views
and captions are a pure function of (seed, epoch, index) and resume exactly.
"""
from __future__ import annotations

from typing import Callable

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torchvision import transforms


def blur_kernel(image_size: int) -> int:
    """SimCLR's blur kernel: about 10% of the image side, odd, at least 3."""
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


def view_transform(*, image_size: int, crop_scale: tuple[float, float] = (0.08, 1.0),
                   mean: tuple[float, ...] = OPENAI_DATASET_MEAN,
                   std: tuple[float, ...] = OPENAI_DATASET_STD) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> one augmented view [3, image_size, image_size]."""
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=tuple(crop_scale),
                                     interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.RandomApply([transforms.GaussianBlur(blur_kernel(image_size), sigma=(0.1, 2.0))], p=0.5),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def make_views(image: Image.Image, transform: Callable[[Image.Image], torch.Tensor], views: int) -> torch.Tensor:
    """`views` independent augmentations of one image, [V, 3, H, W]; stacking B of them gives the
    batch["views"] [B, V, 3, H, W] the methods read."""
    return torch.stack([transform(image) for _ in range(views)])


def augment_caption(text: str, *, alpha: float = 0.1) -> str:
    """One EDA-style edit of a caption: random deletion or random swap (coin flip)."""
    words = text.split()
    if len(words) < 2 or alpha <= 0:
        return text
    if bool(torch.rand(()) < 0.5):
        keep = torch.rand(len(words)) >= alpha
        if not bool(keep.any()):
            keep[int(torch.randint(len(words), ()))] = True
        return " ".join(w for w, k in zip(words, keep.tolist()) if k)
    for _ in range(max(1, int(alpha * len(words)))):
        i, j = torch.randint(len(words), (2,)).tolist()
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


def augment_captions(captions: list[str], *, alpha: float = 0.1) -> list[str]:
    """The loader's hook for batch["text_aug"]: tokenise the result with the caption transform."""
    return [augment_caption(c, alpha=alpha) for c in captions]


class ViewMaker:
    """The loader's hook for batch["views"]: PIL image -> [views, 3, H, W] (picklable for workers).
    crop_scale comes from the method (`Method.view_crop_scale`: SimCLR 0.08-1, DeCLIP 0.2-1)."""

    def __init__(self, *, views: int, image_size: int, crop_scale: tuple[float, float] = (0.08, 1.0),
                 mean: tuple[float, ...] = OPENAI_DATASET_MEAN, std: tuple[float, ...] = OPENAI_DATASET_STD):
        self.views = views
        self.transform = view_transform(image_size=image_size, crop_scale=crop_scale, mean=mean, std=std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return make_views(image, self.transform, self.views)


class CaptionAugmenter:
    """The loader's hook for batch["text_aug"]: captions -> augmented captions (picklable for workers);
    tokenise the result with the caption transform. alpha = method_options.text_aug_alpha."""

    def __init__(self, *, alpha: float):
        self.alpha = alpha

    def __call__(self, captions: list[str]) -> list[str]:
        return augment_captions(captions, alpha=self.alpha)
