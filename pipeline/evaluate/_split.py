"""The validation part every model selection uses (linear-probe C, fine-tuning epoch, WiSE-FT alpha): carved
from the training split, stratified and seeded, never the test split."""
from __future__ import annotations

import numpy as np

from ..errors import UserError


def split_train_val(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, val) over labels `y`; stratified when every class has at least two samples and the
    validation part can hold one of each."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    idx = np.arange(len(y))
    n_val = max(1, int(round(val_fraction * len(y))))
    if n_val >= len(y):
        raise UserError(f"val_fraction: {len(y)} training samples are too few to carve a validation part")
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 and n_val >= len(np.unique(y)) else None
    train, val = train_test_split(idx, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)
