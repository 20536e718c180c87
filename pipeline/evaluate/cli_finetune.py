"""`python -m pipeline finetune-eval --checkpoint C --dataset NAME --train-data TR/stats.json
--test-data TE/stats.json --out R.json [--save-model M.pt] [recipe options]`: FT-CLIP fine-tuning.

Defaults are FT-CLIP's ViT-B/16 ImageNet recipe (lr 6e-4, layer decay 0.6, EMA 0.9998, wd 0.05, label
smoothing 0.1, RandAugment m9, random erasing 0.25, mixup/cutmix off, warmup then cosine). Several
processes: run under `torchrun --nproc_per_node=N -m pipeline finetune-eval ...`; rank 0 writes outputs.
"""
from __future__ import annotations

import argparse

from ..errors import UserError
from ..models import image_size_of
from ..utils.io import torch_save
from .checkpoint import load_for_eval
from .cli import prompt_lists
from .datasets import classification_dataset
from .finetune.ftclip import build_classifier, layer_decay_groups, train_transform
from .finetune.loop import TrainSettings, train_classifier
from .results import result_record, write_result


def add_train_args(p: argparse.ArgumentParser, *, epochs: int, batch_size: int, lr: float, warmup: float,
                   ema: float | None, label_smoothing: float) -> None:
    """Options shared by finetune-eval and supervised-baseline (their recipe defaults differ)."""
    p.add_argument("--dataset", required=True, help="dataset name written into the result (the test set)")
    p.add_argument("--train-data", required=True, help="stats.json of the training split")
    p.add_argument("--test-data", required=True, help="stats.json of the test split")
    p.add_argument("--out", required=True, help="result JSON (written by rank 0, atomically)")
    p.add_argument("--save-model", help="where to save the fine-tuned weights (and EMA) for WiSE-FT")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size, help="global batch size")
    p.add_argument("--grad-accum-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    p.add_argument("--min-lr", type=float, default=1e-6, help="end of the cosine decay")
    p.add_argument("--warmup-epochs", type=float, default=warmup)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--label-smoothing", type=float, default=label_smoothing)
    p.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0 = off)")
    p.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0 = off)")
    p.add_argument("--ema-decay", type=float, default=ema, help="EMA decay (0 = no EMA)")
    p.add_argument("--zero-stage", type=int, default=0, choices=[0, 1, 2], help="DeepSpeed ZeRO stage")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="bf16/fp16 on GPU only")
    p.add_argument("--grad-clip", type=float, default=None)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batch-size", type=int, default=256)


def settings_from(args) -> TrainSettings:
    """Adapter: parsed command line -> explicit settings (library code never sees argparse)."""
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        raise UserError("--epochs, --batch-size and --lr must be positive")
    return TrainSettings(epochs=args.epochs, batch_size=args.batch_size, grad_accum_steps=args.grad_accum_steps,
                         lr=args.lr, min_lr=args.min_lr, warmup_epochs=args.warmup_epochs,
                         label_smoothing=args.label_smoothing, mixup=args.mixup, cutmix=args.cutmix,
                         ema_decay=args.ema_decay or None, zero_stage=args.zero_stage, precision=args.precision,
                         grad_clip=args.grad_clip, workers=args.workers, seed=args.seed)


def summary_metrics(out: dict) -> dict:
    """Final-epoch metrics (CLIP_benchmark names), EMA's with an ema_ prefix, and the best epochs."""
    metrics = dict(out["final"])
    if out.get("final_ema"):
        metrics.update({f"ema_{k}": v for k, v in out["final_ema"].items()})
        metrics.update(best_ema_epoch=out["best_ema_epoch"], best_ema_acc1=out["best_ema_acc1"])
    metrics.update(best_epoch=out["best_epoch"], best_acc1=out["best_acc1"])
    return metrics


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline finetune-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="final CLIP checkpoint (results/E/<stage>/final.pt)")
    add_train_args(p, epochs=50, batch_size=2048, lr=6e-4, warmup=10, ema=0.9998, label_smoothing=0.1)
    p.add_argument("--layer-decay", type=float, default=0.6, help="lr factor per layer from the top (0.6 for B/16)")
    p.add_argument("--head-init", default="zeroshot", choices=["zeroshot", "random"])
    # FT-CLIP's rand-m9-mstd0.5-inc1, magnitude capped at 9: at 10 timm's increasing posterize keeps 0 bits,
    # which Pillow >= 10 rejects (ValueError) -- the cap changes only the rare draws above 9
    p.add_argument("--randaugment", default="rand-m9-mstd0.5-inc1-mmax9", help="timm RandAugment policy ('' = off)")
    p.add_argument("--reprob", type=float, default=0.25, help="random erasing probability")
    p.add_argument("--crop-min", type=float, default=0.08, help="smallest RandomResizedCrop area fraction")
    p.add_argument("--config-dir", default=None, help="folder holding datasets/NAME.yaml (class names, templates)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv[1:])
    settings = settings_from(args)
    loaded = load_for_eval(args.checkpoint)
    size = image_size_of(loaded.model_config)
    train_set, classes = classification_dataset(args.train_data, transform=train_transform(
        image_size=size, randaugment=args.randaugment, reprob=args.reprob, scale=(args.crop_min, 1.0)))
    test_set, test_classes = classification_dataset(args.test_data, size)
    if classes != test_classes:
        raise UserError(f"{args.test_data}: classes: differ from {args.train_data}'s (same label space needed)")
    from ..config import CONFIG_DIR

    classnames, templates = prompt_lists(args.dataset, args.config_dir or str(CONFIG_DIR), classes,
                                         args.test_data)
    vit = build_classifier(clip_model=loaded.model, model_config=loaded.model_config, classnames=classnames,
                           templates=templates, head_init=args.head_init, seed=args.seed)
    groups = layer_decay_groups(vit, weight_decay=args.weight_decay, layer_decay=args.layer_decay)
    out = train_classifier(model=vit, param_groups=groups, train_set=train_set, test_set=test_set,
                           num_classes=len(classes), settings=settings, eval_batch_size=args.eval_batch_size)
    if out["rank"] != 0:
        return 0
    if args.save_model:
        torch_save({"kind": "ftclip_vit", "model": out["model"].state_dict(),
                    "ema": None if out["ema"] is None else out["ema"].state_dict(),
                    "model_config": loaded.model_config, "classes": classes, "head_init": args.head_init,
                    "source_checkpoint": str(args.checkpoint)}, args.save_model)
    record = result_record(dataset=args.dataset, model=loaded.experiment, pretrained=args.checkpoint,
                           task="finetune_classification", metrics=summary_metrics(out), checkpoint=loaded.stage)
    record["history"] = out["history"]
    write_result(args.out, record)
    print(f"finetune-eval {args.dataset}: acc1={out['final']['acc1']:.4f}, best epoch {out['best_epoch']}")
    return 0
