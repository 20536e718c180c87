"""WiSE-FT: accuracy of the weight-space interpolation (1 - alpha) * zero-shot + alpha * fine-tuned, per alpha.

The fine-tuned weights are finetune_eval's `model` output for the same checkpoint and dataset, fine-tuned
from the zero-shot head (head: zeroshot). Interpolation runs in fp32 whatever precision the fine-tune ran in
(a file with bf16 / fp16 tensors is upcast first). The best alpha is chosen on finetune_eval's validation part
(the training images it held out, named in its model file), never on test; the test split is scored for the
curve and at the chosen and the headline alpha.
"""
from __future__ import annotations

import torch

from ..errors import UserError
from . import Context, Evaluation, register


def interpolate(zeroshot: dict, finetuned: dict, alpha: float) -> dict:
    """Mix floating-point tensors in fp32 (either side may hold bf16 / fp16 tensors); integer buffers (counters)
    are taken from the fine-tuned model."""
    if zeroshot.keys() != finetuned.keys():
        raise ValueError("zero-shot and fine-tuned weights name different tensors")
    return {k: torch.lerp(zeroshot[k].float(), finetuned[k].float(), alpha) if zeroshot[k].is_floating_point()
            else finetuned[k] for k in zeroshot}


def wiseft_curve(*, model, zeroshot_state: dict, finetuned_state: dict, datasets: dict, alphas: list[float],
                 batch_size: int, workers: int, device="cpu") -> list[tuple[float, dict]]:
    """[(alpha, {split: metrics})] for each alpha over `datasets` ({"test": ..., "val": ...}); `model` is loaded
    in place with each mixture."""
    from ._finetune.loop import evaluate

    curve = []
    for alpha in alphas:
        model.load_state_dict(interpolate(zeroshot_state, finetuned_state, alpha))
        scores = {split: evaluate(model.to(device), ds, batch_size=batch_size, workers=workers, device=device,
                                  precision="fp32") for split, ds in datasets.items()}
        print(f"WiSE-FT alpha={alpha:g}: " + ", ".join(f"{k} acc1={m['acc1']:.4f}" for k, m in scores.items()),
              flush=True)
        curve.append((alpha, scores))
    return curve


def plot_curve(curve: list[tuple[float, dict]], path, title: str) -> None:
    """Test top-1 against alpha (0 = zero-shot, 1 = fine-tuned), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.io import atomic_path

    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    for split in curve[0][1]:
        ax.plot([a for a, _ in curve], [100 * m[split]["acc1"] for _, m in curve], marker="o", label=split)
    ax.legend()
    ax.set(xlabel="alpha (0 = zero-shot, 1 = fine-tuned)", ylabel="test top-1 (%)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _finetuned(path: str, use_ema: bool, model_config: dict) -> tuple[dict, list[int], int]:
    """(weights, validation indices, training-set size) of a finetune_eval model file."""
    from ..models import load_checkpoint

    blob = load_checkpoint(path)
    if blob.get("kind") != "ftclip_vit":
        raise UserError(f"{path}: kind: not a finetune_eval model file")
    if blob.get("head") != "zeroshot":
        raise UserError(f"{path}: head: WiSE-FT needs a fine-tuning started from the zero-shot head "
                        f"(evaluate.finetune_eval.head: zeroshot), got {blob.get('head')!r}")
    if blob.get("model_config") != model_config:
        raise UserError(f"{path}: model_config: differs from the evaluated checkpoint's; not the same starting point")
    if use_ema and blob.get("ema") is None:
        raise UserError(f"{path}: ema: this fine-tuning kept no EMA weights")
    return blob["ema"] if use_ema else blob["model"], blob["val_indices"].tolist(), blob["train_samples"]


def _splits(ctx: Context, image_size: int, val_indices: list[int], train_samples: int):
    """Test set, and the held-out validation images of the fine-tune (eval transform) when it kept some."""
    from torch.utils.data import Subset

    from ._datasets import classification_dataset

    test_set, classes = classification_dataset(ctx.inputs["test"], image_size)
    splits = {"test": test_set}
    if val_indices:
        train_set, _ = classification_dataset(ctx.inputs["train"], image_size)
        if len(train_set) != train_samples:
            raise UserError(f"{ctx.inputs['train']}: samples: {len(train_set)}, but the fine-tune held out its "
                            f"validation part from {train_samples} images")
        splits["val"] = Subset(train_set, val_indices)
    return splits, classes


def _metrics(curve, headline: float) -> dict:
    by_alpha = {a: m for a, m in curve}
    metrics = dict(by_alpha[headline]["test"])
    metrics.update({f"acc1@alpha={a:g}": m["test"]["acc1"] for a, m in curve})
    metrics["alpha"] = headline
    if "val" in curve[0][1]:
        best, scores = max(curve, key=lambda am: am[1]["val"]["acc1"])
        metrics.update(best_alpha=best, best_acc1=scores["test"]["acc1"], best_val_acc1=scores["val"]["acc1"])
    return metrics


def run(ctx: Context) -> None:
    from ..models import image_size_of
    from ._assets import prompts_for
    from ._external import load_evaluated
    from ._features import eval_device
    from ._records import write_result
    from .finetune_eval import build_classifier

    s = ctx.settings
    loaded = load_evaluated(ctx)
    finetuned, val_indices, train_samples = _finetuned(ctx.inputs["finetuned"], s.ema, loaded.model_config)
    splits, classes = _splits(ctx, image_size_of(loaded.model_config), val_indices, train_samples)
    classnames, templates = prompts_for(ctx.dataset, ctx.config_dir, classes, ctx.inputs["test"])
    vit = build_classifier(clip_model=loaded.model, model_config=loaded.model_config, classnames=classnames,
                           templates=templates, head="zeroshot", head_init_scale=1.0, drop_path=0.0, seed=0)
    zeroshot = {k: v.clone() for k, v in vit.state_dict().items()}
    ev = ctx.experiment.evaluate
    with torch.no_grad():
        curve = wiseft_curve(model=vit, zeroshot_state=zeroshot, finetuned_state=finetuned, datasets=splits,
                             alphas=list(s.alphas), batch_size=ev.batch_size, workers=ev.workers, device=eval_device())
    metrics = _metrics(curve, s.headline_alpha)
    write_result(ctx, task=EVALUATION.task, metrics=metrics, model=loaded.experiment, pretrained=ctx.checkpoint,
                 checkpoint=loaded.stage)
    plot_curve(curve, ctx.outputs["plot"], f"WiSE-FT {loaded.experiment} / {ctx.dataset}")
    print(f"wiseft {ctx.dataset}: acc1@{s.headline_alpha:g}={metrics['acc1']:.4f}"
          + (f", alpha {metrics['best_alpha']:g} chosen on val" if "best_alpha" in metrics else ""))


EVALUATION = register(Evaluation(
    name="wiseft", order=40, task="wiseft", run=run,
    inputs=lambda pair: {"train": ("stats", pair.train), "test": ("stats", pair.test),
                         "finetuned": ("output", "finetune_eval", "model")},
    outputs={"result": "json", "plot": "png"}, columns=(("WiSE-FT", "acc1"), ("WiSE-FT, alpha chosen on val", "best_acc1", "wiseft_best")),
    published="wiseft"))
