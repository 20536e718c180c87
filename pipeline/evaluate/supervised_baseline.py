"""Supervised baseline of the fine-tuning post: torchvision ResNet-50 with a new xavier head at head_lr_scale x
the lr, trained by the same loop as finetune_eval (DeepSpeed, warmup + cosine, optional EMA).

Weights come from a local file when given: torchvision's own files are recognised by the hash in their name
(resnet50-11ad3fa6.pth = IMAGENET1K_V2, resnet50-0676ba61.pth = IMAGENET1K_V1, checked against the file's
SHA-256 as torch.hub does) and the row says which; the preprocessing is always the weights' own
(`ResNet50_Weights.<name>.transforms()`: IMAGENET1K_V2 resizes to 232 and crops 224, bilinear, ImageNet
mean/std), also for training unless `augment` (the post trained on the pre-training preprocessing). Without a
file the network starts from random init, with V2's preprocessing, and the table says so. It evaluates no CLIP
checkpoint: its results live at results/<experiment>/eval/supervised_baseline/<dataset>.json.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from . import Context, Evaluation, register

ROW = "resnet50"


def torchvision_weights(path: Path | None, members=None):
    """The ResNet50_Weights member a local file is (its SHA-256 starts with the hash in that member's url, as
    torch.hub checks), or None for a file of another origin. Hashes the file once (100 MB)."""
    from torchvision.models import ResNet50_Weights

    if path is None:
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for member in members or ResNet50_Weights:
        if digest.startswith(member.url.rsplit("-", 1)[1].split(".")[0]):
            return member
    return None


def resnet50_classifier(*, num_classes: int, weights: str | None, seed: int) -> nn.Module:
    from torchvision.models import resnet50

    torch.manual_seed(seed)
    model = resnet50(weights=None)
    if weights:
        from ..utils.io import torch_load

        path = Path(weights)
        state = torch_load(path, "ResNet-50 weights (evaluate.supervised_baseline.weights)")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"{path}: not a torchvision resnet50 state_dict ({str(exc).splitlines()[0]})") from None
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.xavier_uniform_(model.fc.weight)  # the post's code; the bias keeps PyTorch's default init
    return model


def head_lr_groups(model: nn.Module, *, weight_decay: float, head_lr_scale: float) -> list[dict]:
    """Backbone at lr_scale 1, the new fc head at head_lr_scale; no weight decay on 1-D params."""
    groups = {(h, d): [] for h in (False, True) for d in (False, True)}
    for name, p in model.named_parameters():
        groups[(name.startswith("fc."), p.ndim > 1)].append(p)
    return [{"params": ps, "lr_scale": head_lr_scale if head else 1.0, "weight_decay": weight_decay if decay else 0.0}
            for (head, decay), ps in groups.items() if ps]


def preprocessing(member, image_size: int):
    """The weights' own eval transform at image_size (resize scaled like theirs: 232/224 for V2, 256/224 for V1)."""
    from torchvision.models import ResNet50_Weights

    member = member or ResNet50_Weights.IMAGENET1K_V2
    preset = member.transforms()
    resize = int(round(image_size * preset.resize_size[0] / preset.crop_size[0]))
    return member.transforms(crop_size=image_size, resize_size=resize)


def _datasets(ctx: Context, member):
    from ._datasets import classification_dataset
    from ._finetune.transforms import train_transform
    from .finetune_eval import holdout

    s = ctx.settings
    test_tf = preprocessing(member, s.image_size)
    train_tf = (train_transform(image_size=s.image_size, randaugment="rand-m9-mstd0.5-inc1-mmax9", reprob=0.25,
                                crop_min=0.08, hflip=0.5, mean_std="imagenet") if s.augment else test_tf)
    full, classes = classification_dataset(ctx.inputs["train"], transform=train_tf)
    test_set, test_classes = classification_dataset(ctx.inputs["test"], transform=test_tf)
    if classes != test_classes:
        raise UserError(f"{ctx.inputs['test']}: classes: differ from {ctx.inputs['train']}'s (same label space needed)")
    train_set, val_set, _ = holdout(full, test_tf, val_fraction=s.val_fraction, seed=s.seed)
    return train_set, val_set, test_set, classes


def run(ctx: Context) -> None:
    from ._finetune.engine import make_optimizer
    from ._finetune.loop import train_classifier
    from ._records import write_result
    from .finetune_eval import resume_dir, summary_metrics

    s = ctx.settings
    member = torchvision_weights(Path(s.weights)) if s.weights and Path(s.weights).is_file() else None
    train_set, val_set, test_set, classes = _datasets(ctx, member)
    model = resnet50_classifier(num_classes=len(classes), weights=s.weights, seed=s.seed)
    groups = head_lr_groups(model, weight_decay=s.weight_decay, head_lr_scale=s.head_lr_scale)
    optimizer = make_optimizer("adamw", groups, lr=s.lr, betas=s.betas, eps=s.eps, momentum=0.0)
    out = train_classifier(model=model, optimizer=optimizer, train_set=train_set, val_set=val_set, test_set=test_set,
                           num_classes=len(classes), settings=s, eval_batch_size=ctx.experiment.evaluate.batch_size,
                           resume_dir=resume_dir(ctx))
    if out["rank"] != 0:
        return
    origin = "random init" if not s.weights else f"{member.name if member else 'weights file'}: {s.weights}"
    write_result(ctx, task=EVALUATION.task, metrics=summary_metrics(out), model=ctx.experiment.name,
                 pretrained="random init" if not s.weights else s.weights, checkpoint=ROW, history=out["history"],
                 weights=origin)
    from ._finetune import resume

    resume.clear(resume_dir(ctx))
    print(f"supervised_baseline {ctx.dataset}: acc1={out['final']['acc1']:.4f} ({origin})")


EVALUATION = register(Evaluation(
    name="supervised_baseline", order=30, task="finetune_classification", run=run,
    inputs=lambda pair: {"train": ("stats", pair.train), "test": ("stats", pair.test)},
    per_checkpoint=False, distributed=True,
    columns=(("fine-tuned, last epoch", "acc1"), ("fine-tuned EMA, last epoch", "ema_acc1", "finetune_ema"),
             ("fine-tuned, best epoch†", "best_acc1", "finetune_best"),
             ("fine-tuned EMA, best epoch†", "best_ema_acc1", "finetune_ema_best")), published="finetune"))
