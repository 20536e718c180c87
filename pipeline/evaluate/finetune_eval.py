"""FT-CLIP: fine-tune CLIP's image tower as a timm ViT with layer-wise lr decay, EMA, label smoothing,
RandAugment and random erasing (Dong et al. 2022) through DeepSpeed. Heads: FT-CLIP's own (mean-pooled patch
tokens, fc_norm, linear head x0.001), BEiT's class-token head (SLIP's fine-tuning recipe), or CLIP's projection
with a cosine classifier started from the zero-shot text embeddings (WiSE-FT) or at random.

The epoch reported as "best" is chosen on a validation part held out from train (`val_fraction`), never on
test. Several processes: `processes` in its section (torchrun); rank 0 writes the outputs. A killed run
resumes from its last finished epoch (<model output>.resume/).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from . import Context, Evaluation, register


def build_classifier(*, clip_model, model_config: dict, classnames: list[str], templates: list[str] | None,
                     head: str, head_init_scale: float, drop_path: float, seed: int, device: str = "cpu"):
    """The timm ViT classifier; the text tower is used once (zero-shot head) and then dropped."""
    from ..models import context_length_of, tokenizer
    from ._features import text_classifier
    from ._finetune.vit import clip_to_timm, random_head, zeroshot_head

    weights = None
    if head == "zeroshot":
        with torch.no_grad():
            text = text_classifier(clip_model.to(device), tokenizer(context_length_of(model_config)),
                                   classnames, templates, device).cpu()
        weights = zeroshot_head(clip_model.cpu(), text)
    elif head == "random":
        weights = random_head(len(classnames), model_config["embed_dim"],
                              float(clip_model.logit_scale.detach().exp()), seed)
    return clip_to_timm(clip_model.cpu(), model_config, head=head, head_weight=weights, num_classes=len(classnames),
                        head_init_scale=head_init_scale, drop_path=drop_path, seed=seed)


def layer_decay_groups(vit, *, weight_decay: float, layer_decay: float, weight_decay_all: bool) -> list[dict]:
    """timm's BEiT-style groups over ClipViT's depths: lr_scale = layer_decay ** (top - depth); no weight decay on
    1-D params and embeddings unless weight_decay_all (WiSE-FT decays every parameter). Frozen params are left out."""
    from timm.optim import param_groups_layer_decay

    return param_groups_layer_decay(vit, weight_decay=weight_decay, layer_decay=layer_decay,
                                    weight_decay_exclude_1d=not weight_decay_all,
                                    no_weight_decay_list=() if weight_decay_all else vit.no_weight_decay())


def summary_metrics(out: dict) -> dict:
    """Last-epoch test metrics (CLIP_benchmark names), EMA's with an ema_ prefix, and the test metrics of the
    epoch chosen on the validation part (best_*, best_ema_*), with that epoch and its validation top-1."""
    metrics = dict(out["final"])
    if out.get("final_ema"):
        metrics.update({f"ema_{k}": v for k, v in out["final_ema"].items()})
    for key in ("best", "best_ema"):
        if key in out:
            metrics.update({f"{key}_{k}": v for k, v in out[key].items()})
            metrics.update({f"{key}_epoch": out[f"{key}_epoch"], f"{key}_val_acc1": out[f"{key}_val_acc1"]})
    return metrics


def holdout(dataset, eval_transform, *, val_fraction: float, seed: int):
    """(training part, validation part with the eval transform, validation indices) of a LabelFolder; no
    validation part when val_fraction is 0."""
    import copy

    from torch.utils.data import Subset

    from ._split import split_train_val

    if not val_fraction:
        return dataset, None, []
    train_idx, val_idx = split_train_val(dataset.targets, val_fraction, seed)
    val_view = copy.copy(dataset)
    val_view.transform = eval_transform
    return Subset(dataset, train_idx.tolist()), Subset(val_view, val_idx.tolist()), val_idx.tolist()


def _datasets(ctx: Context, image_size: int):
    from ._datasets import classification_dataset
    from ._finetune.transforms import eval_transform, train_transform

    s = ctx.settings
    test_tf = eval_transform(image_size=image_size, crop_pct=s.crop_pct, mean_std=s.mean_std)
    full, classes = classification_dataset(ctx.inputs["train"], transform=train_transform(
        image_size=image_size, randaugment=s.randaugment, reprob=s.reprob, crop_min=s.crop_min, hflip=s.hflip,
        mean_std=s.mean_std))
    test_set, test_classes = classification_dataset(ctx.inputs["test"], transform=test_tf)
    if classes != test_classes:
        raise UserError(f"{ctx.inputs['test']}: classes: differ from {ctx.inputs['train']}'s (same label space needed)")
    train_set, val_set, val_idx = holdout(full, test_tf, val_fraction=s.val_fraction, seed=s.seed)
    return train_set, val_set, val_idx, test_set, classes, len(full)


def resume_dir(ctx: Context) -> Path:
    """Where a run keeps its per-epoch checkpoints: beside its model output, removed once the outputs exist."""
    model_out = ctx.outputs["model"] if "model" in ctx.outputs else ctx.outputs["result"]
    return model_out.with_name(model_out.name + ".resume")


def run(ctx: Context) -> None:
    from ..models import image_size_of
    from ..utils.io import torch_save
    from ._assets import prompts_for
    from ._external import load_evaluated
    from ._finetune import resume
    from ._finetune.engine import make_optimizer
    from ._finetune.loop import train_classifier
    from ._records import write_result

    s = ctx.settings
    loaded = load_evaluated(ctx)
    train_set, val_set, val_idx, test_set, classes, train_samples = _datasets(ctx, image_size_of(loaded.model_config))
    classnames, templates = (prompts_for(ctx.dataset, ctx.config_dir, classes, ctx.inputs["test"])
                             if s.head == "zeroshot" else (classes, None))
    vit = build_classifier(clip_model=loaded.model, model_config=loaded.model_config, classnames=classnames,
                           templates=templates, head=s.head, head_init_scale=s.head_init_scale,
                           drop_path=s.drop_path, seed=s.seed)
    if s.freeze_patch_embed:  # FT-CLIP freezes conv1 (models/finetune_clip.py, freeze_conv1)
        vit.patch_embed.requires_grad_(False)
    groups = layer_decay_groups(vit, weight_decay=s.weight_decay, layer_decay=s.layer_decay,
                                weight_decay_all=s.weight_decay_all)
    optimizer = make_optimizer("adamw", groups, lr=s.lr, betas=s.betas, eps=s.eps, momentum=0.0)
    out = train_classifier(model=vit, optimizer=optimizer, train_set=train_set, val_set=val_set, test_set=test_set,
                           num_classes=len(classes), settings=s, eval_batch_size=ctx.experiment.evaluate.batch_size,
                           resume_dir=resume_dir(ctx))
    if out["rank"] != 0:
        return
    torch_save({"kind": "ftclip_vit", "model": out["model"].state_dict(),
                "ema": None if out["ema"] is None else out["ema"].state_dict(),
                "model_config": loaded.model_config, "classes": classes, "head": s.head,
                "val_indices": torch.tensor(val_idx, dtype=torch.long), "train_samples": train_samples,
                "source_checkpoint": str(ctx.checkpoint)}, ctx.outputs["model"])
    write_result(ctx, task=EVALUATION.task, metrics=summary_metrics(out), model=loaded.experiment,
                 pretrained=ctx.checkpoint, checkpoint=loaded.stage, history=out["history"])
    resume.clear(resume_dir(ctx))
    print(f"finetune_eval {ctx.dataset}: acc1={out['final']['acc1']:.4f}"
          + (f", EMA epoch {out['best_ema_epoch']} chosen on val" if "best_ema_epoch" in out else ""))


EVALUATION = register(Evaluation(
    name="finetune_eval", order=30, task="finetune_classification", run=run,
    inputs=lambda pair: {"train": ("stats", pair.train), "test": ("stats", pair.test)},
    outputs={"result": "json", "model": "pt"}, distributed=True,
    columns=(("fine-tuned, last epoch", "acc1"), ("fine-tuned EMA, last epoch", "ema_acc1", "finetune_ema"),
             ("fine-tuned, best epoch†", "best_acc1", "finetune_best"),
             ("fine-tuned EMA, best epoch†", "best_ema_acc1", "finetune_ema_best")), published="finetune"))
