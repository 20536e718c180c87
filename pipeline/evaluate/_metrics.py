"""Classification metrics with CLIP_benchmark's meanings (acc@k over samples; recall averaged over classes).

acc@k is undefined with fewer than k classes (every sample would count as a hit): it is then reported as
absent (None in Python, null in the result JSON), never capped at 1.
"""
from __future__ import annotations

import torch


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int) -> float | None:
    """Fraction of samples whose target is among the k highest logits; None with fewer than k classes."""
    if logits.shape[1] < k:
        return None
    top = logits.topk(k, dim=1).indices
    return (top == targets[:, None]).any(dim=1).double().mean().item()


def mean_per_class_recall(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Recall per class, averaged over the classes present in `targets`: scikit-learn's balanced accuracy."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # predictions of a class absent from targets are fine (they are misses)
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(targets.numpy(), logits.argmax(dim=1).numpy()))


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    if logits.shape[0] == 0:
        raise ValueError("no samples to score")
    return {"acc1": topk_accuracy(logits, targets, 1), "acc5": topk_accuracy(logits, targets, 5),
            "mean_per_class_recall": mean_per_class_recall(logits, targets)}
