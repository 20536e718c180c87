"""FT-CLIP: fine-tune CLIP's image tower as a timm ViT with layer-wise lr decay, EMA, label smoothing,
RandAugment and random erasing (Dong et al. 2022) through DeepSpeed, with the head initialised from zero-shot
text embeddings (WiSE-FT) or at random. Several processes: `processes` in its section (torchrun); rank 0
writes the outputs.
"""
from __future__ import annotations

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from ..errors import UserError
from . import Context, Evaluation, register


def build_classifier(*, clip_model, model_config: dict, classnames: list[str], templates: list[str],
                     head_init: str, seed: int, device: str = "cpu"):
    """The timm ViT classifier; the text tower is used once (zero-shot head) and then dropped."""
    from ..models import context_length_of, tokenizer
    from ._features import text_classifier
    from ._finetune.vit import clip_to_timm, random_head, zeroshot_head

    if head_init == "zeroshot":
        with torch.no_grad():
            weights = text_classifier(clip_model.to(device), tokenizer(context_length_of(model_config)),
                                      classnames, templates, device).cpu()
        head = zeroshot_head(clip_model.cpu(), weights)
    elif head_init == "random":
        head = random_head(len(classnames), model_config["embed_dim"],
                           float(clip_model.logit_scale.detach().exp()), seed)
    else:
        raise ValueError(f"head_init: {head_init!r} (zeroshot, random)")
    return clip_to_timm(clip_model.cpu(), model_config, head)


def layer_decay_groups(vit, *, weight_decay: float, layer_decay: float) -> list[dict]:
    """timm's BEiT-style groups: lr_scale = layer_decay ** (depth + 1 - layer); no decay on 1-D params/embeddings."""
    from timm.optim import param_groups_layer_decay

    return param_groups_layer_decay(vit, weight_decay=weight_decay, layer_decay=layer_decay,
                                    no_weight_decay_list=vit.no_weight_decay())


def train_transform(*, image_size: int, randaugment: str | None, reprob: float, scale=(0.08, 1.0),
                    mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD):
    """RandomResizedCrop + flip + RandAugment (timm policy string) + random erasing, normalised."""
    from timm.data import create_transform

    # color_jitter 0: FT-CLIP's timm setup ignores its 0.4 jitter whenever RandAugment is on; keep it off
    # with RandAugment off too (timm would otherwise switch jitter on)
    return create_transform(input_size=image_size, is_training=True, scale=scale, hflip=0.5, color_jitter=0.0,
                            auto_augment=randaugment or None, interpolation="bicubic", re_prob=reprob,
                            re_mode="pixel", re_count=1, mean=mean, std=std)


def summary_metrics(out: dict) -> dict:
    """Final-epoch metrics (CLIP_benchmark names), EMA's with an ema_ prefix, and the best epochs."""
    metrics = dict(out["final"])
    if out.get("final_ema"):
        metrics.update({f"ema_{k}": v for k, v in out["final_ema"].items()})
        metrics.update(best_ema_epoch=out["best_ema_epoch"], best_ema_acc1=out["best_ema_acc1"])
    metrics.update(best_epoch=out["best_epoch"], best_acc1=out["best_acc1"])
    return metrics


def run(ctx: Context) -> None:
    from ..models import image_size_of, load_model
    from ..utils.io import torch_save
    from ._assets import prompts_for
    from ._datasets import classification_dataset
    from ._finetune.loop import train_classifier
    from ._records import write_result

    s = ctx.settings
    loaded = load_model(ctx.checkpoint)
    size = image_size_of(loaded.model_config)
    train_set, classes = classification_dataset(ctx.inputs["train"], transform=train_transform(
        image_size=size, randaugment=s.randaugment, reprob=s.reprob, scale=(s.crop_min, 1.0)))
    test_set, test_classes = classification_dataset(ctx.inputs["test"], size)
    if classes != test_classes:
        raise UserError(f"{ctx.inputs['test']}: classes: differ from {ctx.inputs['train']}'s (same label space needed)")
    classnames, templates = prompts_for(ctx.dataset, ctx.config_dir, classes, ctx.inputs["test"])
    vit = build_classifier(clip_model=loaded.model, model_config=loaded.model_config, classnames=classnames,
                           templates=templates, head_init=s.head_init, seed=s.seed)
    groups = layer_decay_groups(vit, weight_decay=s.weight_decay, layer_decay=s.layer_decay)
    out = train_classifier(model=vit, param_groups=groups, train_set=train_set, test_set=test_set,
                           num_classes=len(classes), settings=s, eval_batch_size=ctx.experiment.evaluate.batch_size)
    if out["rank"] != 0:
        return
    torch_save({"kind": "ftclip_vit", "model": out["model"].state_dict(),
                "ema": None if out["ema"] is None else out["ema"].state_dict(),
                "model_config": loaded.model_config, "classes": classes, "head_init": s.head_init,
                "source_checkpoint": str(ctx.checkpoint)}, ctx.outputs["model"])
    write_result(ctx, task=EVALUATION.task, metrics=summary_metrics(out), model=loaded.experiment,
                 pretrained=ctx.checkpoint, checkpoint=loaded.stage, history=out["history"])
    print(f"finetune_eval {ctx.dataset}: acc1={out['final']['acc1']:.4f}, best epoch {out['best_epoch']}")


EVALUATION = register(Evaluation(
    name="finetune_eval", order=30, task="finetune_classification", run=run,
    inputs=lambda pair: {"train": ("stats", pair.train), "test": ("stats", pair.test)},
    outputs={"result": "json", "model": "pt"}, distributed=True,
    columns=(("fine-tuned", "acc1"), ("fine-tuned EMA", "ema_acc1")), published="finetune"))
