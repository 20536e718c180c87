"""Zero-shot classification: prompt-ensembled text classifier against normalised image embeddings."""
from __future__ import annotations

import sys
from functools import partial

import torch
from open_clip import build_zero_shot_classifier
from torch.utils.data import DataLoader
from tqdm import tqdm

from .metrics import classification_metrics


def _fill(template: str, c: str) -> str:
    return template.format(c=c)


def text_classifier(model, tokenizer, classnames: list[str], templates: list[str],
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """[embed_dim, classes]: per class, templates' normalised text embeddings averaged, then renormalised."""
    fills = [partial(_fill, t) for t in templates]
    # ~1,000 prompts per text forward pass keeps memory flat for ImageNet's 1,000 x 80
    per_batch = max(1, 1000 // len(templates))
    return build_zero_shot_classifier(model, tokenizer, classnames, fills, num_classes_per_batch=per_batch,
                                      device=device, use_tqdm=len(classnames) > per_batch)


@torch.no_grad()
def image_features(model, dataset, batch_size: int, workers: int, device: str | torch.device = "cpu",
                   desc: str = "images") -> tuple[torch.Tensor, torch.Tensor]:
    """(L2-normalised image embeddings [N, D], labels [N]) over a dataset of (image, label), in order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=torch.device(device).type == "cuda")
    feats, labels = [], []
    # a log file (not a terminal) gets a progress line every 30 s instead of a redrawn bar
    interval = 0.1 if sys.stderr.isatty() else 30.0
    for images, targets in tqdm(loader, desc=desc, unit="batch", file=sys.stderr, mininterval=interval):
        emb = model.encode_image(images.to(device), normalize=True)
        feats.append(emb.float().cpu())
        labels.append(torch.as_tensor(targets))
    return torch.cat(feats), torch.cat(labels)


def zeroshot_logits(features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Cosine similarities [N, classes] (CLIP's logit scale does not change any ranking)."""
    return features @ classifier.to(features.dtype).cpu()


def evaluate_zeroshot(*, model, tokenizer, dataset, classnames: list[str], templates: list[str],
                      batch_size: int, workers: int, device: str | torch.device = "cpu") -> dict[str, float]:
    """acc1, acc5 and mean per-class recall of zero-shot classification on `dataset`."""
    model = model.to(device).eval()
    classifier = text_classifier(model, tokenizer, classnames, templates, device)
    features, labels = image_features(model, dataset, batch_size, workers, device, desc="zero-shot")
    return classification_metrics(zeroshot_logits(features, classifier), labels)
