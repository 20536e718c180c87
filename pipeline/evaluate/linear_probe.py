"""Linear probe: L2-regularised logistic regression on frozen, standardised image features (scikit-learn).

The regularisation strength C is chosen on a validation split carved from train, then the probe is refit
on train + val and scored once on test, as in the CLIP paper's protocol.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import UserError
from .metrics import classification_metrics


def _fit(x, y, c: float, max_iter: int, seed: int):
    """Standardised features (scaler fit on the same rows), so C means the same for every model's feature scale."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    return clf.fit(x, y)


def _full_logits(clf, x: np.ndarray, num_classes: int) -> torch.Tensor:
    """Decision scores in the dataset's label space (classes absent from train score -inf)."""
    scores = clf.decision_function(x)
    if scores.ndim == 1:  # binary: sklearn returns the positive class's margin only
        scores = np.stack([-scores, scores], axis=1)
    full = np.full((len(x), num_classes), -np.inf)
    full[:, clf.classes_] = scores
    return torch.from_numpy(full)


def split_train_val(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, val); stratified when every class has at least two samples."""
    idx = np.arange(len(y))
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    n_val = max(1, int(round(val_fraction * len(y))))
    if n_val >= len(y) or (stratify is not None and n_val < len(np.unique(y))):
        stratify = None
    if n_val >= len(y):
        raise UserError(f"linear probe: {len(y)} training samples are too few to carve a validation split")
    return train_test_split(idx, test_size=n_val, random_state=seed, stratify=stratify)


def linear_probe(*, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, c_values: list[float], val_fraction: float, max_iter: int,
                 seed: int) -> dict:
    """Metrics (CLIP_benchmark's lp_* keys) plus the chosen C and the validation accuracy per C."""
    xtr, ytr = train_x.double().numpy(), train_y.numpy()
    xte, yte = test_x.double().numpy(), test_y
    if len(np.unique(ytr)) < 2:
        raise UserError("linear probe: the training split holds fewer than two classes")
    tr, va = split_train_val(ytr, val_fraction, seed)
    val_acc = {}
    for c in c_values:
        clf = _fit(xtr[tr], ytr[tr], c, max_iter, seed)
        val_acc[c] = float((clf.predict(xtr[va]) == ytr[va]).mean())
        print(f"linear probe: C={c:g} val acc1={val_acc[c]:.4f}")
    best = max(c_values, key=lambda c: (val_acc[c], -c))  # ties: the stronger regularisation
    if len(c_values) > 1 and best in (min(c_values), max(c_values)):
        print(f"linear probe: warning: best C={best:g} lies at the edge of the sweep; widen it")
    clf = _fit(xtr, ytr, best, max_iter, seed)
    metrics = classification_metrics(_full_logits(clf, xte, num_classes), yte)
    return {"lp_acc1": metrics["acc1"], "lp_acc5": metrics["acc5"],
            "lp_mean_per_class_recall": metrics["mean_per_class_recall"], "C": float(best),
            "val_acc1": val_acc[best]}
