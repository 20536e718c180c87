"""Linear probe: L2-regularised logistic regression on frozen, standardised image features (scikit-learn).

The regularisation strength C is chosen on a validation split carved from train, then the probe is refit
on train + val and scored once on test, as in the CLIP paper's protocol. Features are cached per checkpoint
and dataset (pipeline.evaluate._features), so probing again after a settings change costs no forward pass.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..errors import UserError
from . import Context, Evaluation, register
from ._split import split_train_val


def _fit(x, y, c: float, max_iter: int, seed: int):
    """Standardised features (scaler fit on the same rows), so C means the same for every model's feature scale."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

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
    from ._metrics import classification_metrics

    metrics = classification_metrics(_full_logits(clf, xte, num_classes), yte)
    return {"lp_acc1": metrics["acc1"], "lp_acc5": metrics["acc5"],
            "lp_mean_per_class_recall": metrics["mean_per_class_recall"], "C": float(best),
            "val_acc1": val_acc[best]}


def run(ctx: Context) -> None:
    from ._external import load_evaluated
    from ._features import cached_features, eval_device
    from ._records import write_result

    s, ev = ctx.settings, ctx.experiment.evaluate
    loaded = load_evaluated(ctx)
    start = time.time()
    common = dict(model=loaded.model, model_config=loaded.model_config, checkpoint=ctx.checkpoint,
                  cache_dir=ctx.cache_dir, batch_size=ev.batch_size, workers=ev.workers, features=s.features,
                  part_images=ev.feature_part_images, device=eval_device())
    train_x, train_y, train_classes = cached_features(stats_path=ctx.inputs["train"], **common)
    test_x, test_y, test_classes = cached_features(stats_path=ctx.inputs["test"], **common)
    if train_classes != test_classes:
        raise UserError(f"{ctx.inputs['test']}: classes: differ from {ctx.inputs['train']}'s (same label space needed)")
    metrics = linear_probe(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                           num_classes=len(train_classes), c_values=s.c_values, val_fraction=s.val_fraction,
                           max_iter=s.max_iter, seed=s.seed)
    write_result(ctx, task=EVALUATION.task, metrics=metrics, model=loaded.experiment, pretrained=ctx.checkpoint,
                 checkpoint=loaded.stage)
    print(f"linear probe {ctx.dataset} ({len(train_y)} train / {len(test_y)} test, {time.time() - start:.1f} s): "
          f"lp_acc1={metrics['lp_acc1']:.4f} (C={metrics['C']:g})")


EVALUATION = register(Evaluation(
    name="linear_probe", order=20, task="linear_probe", run=run,
    inputs=lambda pair: {"train": ("stats", pair.train), "test": ("stats", pair.test)},
    columns=(("linear", "lp_acc1"),), published="linear_probe"))
