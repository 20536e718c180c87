"""`python -m pipeline supervised-baseline --dataset NAME --train-data TR/stats.json --test-data TE/stats.json
--out R.json [--weights resnet50.pth] [--experiment E]`: ResNet-50 fine-tuned with a new head (head lr 10x).

Defaults follow the comparison post: 20 epochs, lr 1e-3 (head 1e-2), batch 256. Without --weights the
ResNet starts from random init and the result's `pretrained` says "random init".
"""
from __future__ import annotations

import argparse

from ..errors import UserError
from .cli_finetune import add_train_args, settings_from
from .datasets import classification_dataset
from .finetune.ftclip import train_transform
from .finetune.loop import train_classifier
from .finetune.supervised import (IMAGENET_MEAN, IMAGENET_STD, eval_transform_imagenet, head_lr_groups,
                                  resnet50_classifier)
from .results import result_record, write_result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline supervised-baseline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p, epochs=20, batch_size=256, lr=1e-3, warmup=0, ema=0.0, label_smoothing=0.0)
    p.add_argument("--weights", help="local torchvision resnet50 state_dict; absent = random init")
    p.add_argument("--head-lr-scale", type=float, default=10.0, help="head lr relative to the backbone's")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--augment", action="store_true", help="RandAugment + random erasing (off: crop + flip only)")
    p.add_argument("--experiment", default="baseline", help="experiment name written as the result's model")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv[1:])
    settings = settings_from(args)
    aug = dict(randaugment="rand-m9-mstd0.5-inc1-mmax9", reprob=0.25) if args.augment else dict(randaugment=None, reprob=0)
    train_set, classes = classification_dataset(args.train_data, transform=train_transform(
        image_size=args.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, **aug))
    test_set, test_classes = classification_dataset(args.test_data, transform=eval_transform_imagenet(args.image_size))
    if classes != test_classes:
        raise UserError(f"{args.test_data}: classes: differ from {args.train_data}'s (same label space needed)")
    model = resnet50_classifier(num_classes=len(classes), weights=args.weights, seed=args.seed)
    groups = head_lr_groups(model, weight_decay=args.weight_decay, head_lr_scale=args.head_lr_scale)
    out = train_classifier(model=model, param_groups=groups, train_set=train_set, test_set=test_set,
                           num_classes=len(classes), settings=settings, eval_batch_size=args.eval_batch_size)
    if out["rank"] != 0:
        return 0
    from ..utils.io import torch_save
    from .cli_finetune import summary_metrics

    if args.save_model:
        torch_save({"kind": "resnet50", "model": out["model"].state_dict(), "classes": classes,
                    "weights": args.weights}, args.save_model)

    record = result_record(dataset=args.dataset, model=args.experiment,
                           pretrained=args.weights or "random init", task="finetune_classification",
                           metrics=summary_metrics(out), checkpoint="resnet50")
    record["history"] = out["history"]
    write_result(args.out, record)
    print(f"supervised-baseline {args.dataset}: acc1={out['final']['acc1']:.4f} "
          f"({'weights ' + args.weights if args.weights else 'random init'})")
    return 0
