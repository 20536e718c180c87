"""Supervised baseline of the fine-tuning comparison: torchvision ResNet-50 with a new head at head_lr_scale x
the lr, trained by the same loop as finetune_eval (DeepSpeed, warmup + cosine, optional EMA).

Weights come from a local file when given (e.g. torchvision's IMAGENET1K_V2 saved state_dict); otherwise
the network starts from random init, and the result and the table say so. It evaluates no CLIP
checkpoint: its results live at results/<experiment>/eval/supervised_baseline/<dataset>.json.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from . import Context, Evaluation, register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ROW = "resnet50"


def resnet50_classifier(*, num_classes: int, weights: str | None, seed: int) -> nn.Module:
    from torchvision.models import resnet50

    torch.manual_seed(seed)
    model = resnet50(weights=None)
    if weights:
        from ..utils.io import torch_load

        path = Path(weights)
        state = torch_load(path, "ResNet-50 weights (field weights)")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"{path}: not a torchvision resnet50 state_dict ({str(exc).splitlines()[0]})") from None
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.xavier_uniform_(model.fc.weight)
    nn.init.zeros_(model.fc.bias)
    return model


def head_lr_groups(model: nn.Module, *, weight_decay: float, head_lr_scale: float) -> list[dict]:
    """Backbone at lr_scale 1, the new fc head at head_lr_scale; no weight decay on 1-D params."""
    groups = {(h, d): [] for h in (False, True) for d in (False, True)}
    for name, p in model.named_parameters():
        groups[(name.startswith("fc."), p.ndim > 1)].append(p)
    return [{"params": ps, "lr_scale": head_lr_scale if head else 1.0, "weight_decay": weight_decay if decay else 0.0}
            for (head, decay), ps in groups.items() if ps]


def eval_transform_imagenet(image_size: int):
    """The ResNet's own preprocessing: resize to 256/224 of the size, center crop, ImageNet mean/std."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(int(round(image_size * 256 / 224)), interpolation=T.InterpolationMode.BILINEAR),
                      T.CenterCrop(image_size), T.Lambda(lambda im: im.convert("RGB")), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def run(ctx: Context) -> None:
    from ._datasets import classification_dataset
    from ._finetune.loop import train_classifier
    from ._records import write_result
    from .finetune_eval import summary_metrics, train_transform

    s = ctx.settings
    aug = dict(randaugment="rand-m9-mstd0.5-inc1-mmax9", reprob=0.25) if s.augment else dict(randaugment=None, reprob=0)
    train_set, classes = classification_dataset(ctx.inputs["train"], transform=train_transform(
        image_size=s.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, **aug))
    test_set, test_classes = classification_dataset(ctx.inputs["test"], transform=eval_transform_imagenet(s.image_size))
    if classes != test_classes:
        raise UserError(f"{ctx.inputs['test']}: classes: differ from {ctx.inputs['train']}'s (same label space needed)")
    model = resnet50_classifier(num_classes=len(classes), weights=s.weights, seed=s.seed)
    groups = head_lr_groups(model, weight_decay=s.weight_decay, head_lr_scale=s.head_lr_scale)
    out = train_classifier(model=model, param_groups=groups, train_set=train_set, test_set=test_set,
                           num_classes=len(classes), settings=s, eval_batch_size=ctx.experiment.evaluate.batch_size)
    if out["rank"] != 0:
        return
    write_result(ctx, task=EVALUATION.task, metrics=summary_metrics(out), model=ctx.experiment.name,
                 pretrained=s.weights or "random init", checkpoint=ROW, history=out["history"])
    print(f"supervised_baseline {ctx.dataset}: acc1={out['final']['acc1']:.4f} "
          f"({'weights ' + s.weights if s.weights else 'random init'})")


EVALUATION = register(Evaluation(
    name="supervised_baseline", order=30, task="finetune_classification", run=run,
    inputs=lambda pair: {"train": ("stats", pair.train), "test": ("stats", pair.test)},
    per_checkpoint=False, distributed=True,
    columns=(("fine-tuned", "acc1"), ("fine-tuned EMA", "ema_acc1")), published="finetune"))
