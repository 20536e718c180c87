"""WiSE-FT: accuracy of the weight-space interpolation (1 - alpha) * zero-shot + alpha * fine-tuned, per alpha.

The fine-tuned weights are finetune_eval's `model` output for the same checkpoint and dataset, fine-tuned
from the zero-shot head (head_init: zeroshot).
"""
from __future__ import annotations

import torch

from ..errors import UserError
from . import Context, Evaluation, register


def interpolate(zeroshot: dict, finetuned: dict, alpha: float) -> dict:
    """Mix floating-point tensors; integer buffers (counters) are taken from the fine-tuned model."""
    if zeroshot.keys() != finetuned.keys():
        raise ValueError("zero-shot and fine-tuned weights name different tensors")
    return {k: torch.lerp(zeroshot[k], finetuned[k], alpha) if zeroshot[k].is_floating_point() else finetuned[k]
            for k in zeroshot}


def wiseft_curve(*, model, zeroshot_state: dict, finetuned_state: dict, test_set, alphas: list[float],
                 batch_size: int, workers: int, device="cpu") -> list[tuple[float, dict]]:
    """[(alpha, test metrics)] for each alpha; `model` is loaded in place with each mixture."""
    from ._finetune.loop import evaluate

    curve = []
    for alpha in alphas:
        model.load_state_dict(interpolate(zeroshot_state, finetuned_state, alpha))
        metrics = evaluate(model.to(device), test_set, batch_size=batch_size, workers=workers, device=device)
        print(f"WiSE-FT alpha={alpha:g}: acc1={metrics['acc1']:.4f}", flush=True)
        curve.append((alpha, metrics))
    return curve


def plot_curve(curve: list[tuple[float, dict]], path, title: str) -> None:
    """Test top-1 against alpha (0 = zero-shot, 1 = fine-tuned), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.io import atomic_path

    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    ax.plot([a for a, _ in curve], [100 * m["acc1"] for _, m in curve], marker="o")
    ax.set(xlabel="alpha (0 = zero-shot, 1 = fine-tuned)", ylabel="test top-1 (%)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _finetuned_state(path: str, use_ema: bool, model_config: dict) -> dict:
    from ..models import load_checkpoint

    blob = load_checkpoint(path)
    if blob.get("kind") != "ftclip_vit":
        raise UserError(f"{path}: kind: not a finetune_eval model file")
    if blob.get("head_init") != "zeroshot":
        raise UserError(f"{path}: head_init: WiSE-FT needs a fine-tuning started from the zero-shot head")
    if blob.get("model_config") != model_config:
        raise UserError(f"{path}: model_config: differs from the evaluated checkpoint's; not the same starting point")
    if use_ema and blob.get("ema") is None:
        raise UserError(f"{path}: ema: this fine-tuning kept no EMA weights")
    return blob["ema"] if use_ema else blob["model"]


def run(ctx: Context) -> None:
    from ..models import image_size_of, load_model
    from ._assets import prompts_for
    from ._datasets import classification_dataset
    from ._features import eval_device
    from ._records import write_result
    from .finetune_eval import build_classifier

    s = ctx.settings
    if s.headline_alpha not in s.alphas:
        raise UserError(f"{ctx.experiment.name}: evaluate.wiseft.headline_alpha: {s.headline_alpha} is not one of alphas")
    loaded = load_model(ctx.checkpoint)
    finetuned = _finetuned_state(ctx.inputs["finetuned"], s.ema, loaded.model_config)
    test_set, classes = classification_dataset(ctx.inputs["test"], image_size_of(loaded.model_config))
    classnames, templates = prompts_for(ctx.dataset, ctx.config_dir, classes, ctx.inputs["test"])
    vit = build_classifier(clip_model=loaded.model, model_config=loaded.model_config, classnames=classnames,
                           templates=templates, head_init="zeroshot", seed=0)
    zeroshot = {k: v.clone() for k, v in vit.state_dict().items()}
    ev = ctx.experiment.evaluate
    with torch.no_grad():
        curve = wiseft_curve(model=vit, zeroshot_state=zeroshot, finetuned_state=finetuned, test_set=test_set,
                             alphas=list(s.alphas), batch_size=ev.batch_size, workers=ev.workers, device=eval_device())
    by_alpha = {a: m for a, m in curve}
    best = max(curve, key=lambda am: am[1]["acc1"])
    metrics = dict(by_alpha[s.headline_alpha])
    metrics.update({f"acc1@alpha={a:g}": m["acc1"] for a, m in curve})
    metrics.update(alpha=s.headline_alpha, best_alpha=best[0], best_acc1=best[1]["acc1"])
    write_result(ctx, task=EVALUATION.task, metrics=metrics, model=loaded.experiment, pretrained=ctx.checkpoint,
                 checkpoint=loaded.stage)
    plot_curve(curve, ctx.outputs["plot"], f"WiSE-FT {loaded.experiment} / {ctx.dataset}")
    print(f"wiseft {ctx.dataset}: acc1@{s.headline_alpha:g}={metrics['acc1']:.4f}, best alpha {best[0]:g}")


EVALUATION = register(Evaluation(
    name="wiseft", order=40, task="wiseft", run=run,
    inputs=lambda pair: {"test": ("stats", pair.test), "finetuned": ("output", "finetune_eval", "model")},
    outputs={"result": "json", "plot": "png"}, columns=(("WiSE-FT", "acc1"),), published="wiseft"))
