"""Linear classification as SLIP's main_linear.py runs it (MoCo v3's protocol): a linear head trained with SGD
on the frozen image tower's pre-projection feature (a ViT's class token after its final LayerNorm), with
augmented crops every epoch, beside CLIP_benchmark's scikit-learn probe on cached features (linear_probe).

Fixed by the protocol (main_linear.py): the backbone stays frozen and in eval mode; head Linear(width, classes)
with weight N(0, 0.01), bias 0; cross-entropy; cosine lr stepped per epoch, no warmup; train RandomResizedCrop
(scale 0.08-1, bilinear) + horizontal flip, eval Resize(256) + CenterCrop(224) (bilinear), ImageNet mean/std.
Settings (epochs, batch, lr, momentum, weight decay, ...) come from `evaluate.linear_sgd`. The epoch reported as
best is chosen on a validation part held out from train. Runs through the same DeepSpeed loop as finetune_eval.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from . import Context, Evaluation, register

CROP_PCT = 224 / 256       # Resize(256) + CenterCrop(224)
INTERPOLATION = "bilinear"  # torchvision's default in main_linear.py's transforms


class FrozenTowerProbe(nn.Module):
    """The CLIP image tower (frozen, always in eval mode, no projection) under a trainable linear head."""

    def __init__(self, clip_model, num_classes: int, seed: int):
        super().__init__()
        self.visual = clip_model.visual
        self.visual.requires_grad_(False)
        width = self._width()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = nn.Linear(width, num_classes)
            nn.init.normal_(self.head.weight, mean=0.0, std=0.01)
            nn.init.zeros_(self.head.bias)

    def _width(self) -> int:
        if not hasattr(self.visual, "proj"):
            raise UserError("linear_sgd: the image tower has no projection to read before (ViT towers only)")
        proj = self.visual.proj
        return proj.shape[0] if proj is not None else self.visual.output_dim

    def train(self, mode: bool = True):
        super().train(mode)
        self.visual.eval()  # MoCo v3 / SLIP: the frozen backbone runs in eval mode while the head trains
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        proj, self.visual.proj = self.visual.proj, None
        try:
            with torch.no_grad():
                features = self.visual(images)
        finally:
            self.visual.proj = proj
        return self.head(features.float())


def _transforms(image_size: int):
    from timm.data import create_transform

    from ._finetune.transforms import MEAN_STD

    mean, std = MEAN_STD["imagenet"]
    train = create_transform(input_size=image_size, is_training=True, scale=(0.08, 1.0), hflip=0.5, color_jitter=0.0,
                             auto_augment=None, interpolation=INTERPOLATION, re_prob=0.0, mean=mean, std=std)
    test = create_transform(input_size=image_size, is_training=False, crop_pct=CROP_PCT,
                            interpolation=INTERPOLATION, mean=mean, std=std)
    return train, test


def run(ctx: Context) -> None:
    from ..models import image_size_of
    from ._datasets import classification_dataset
    from ._external import load_evaluated
    from ._finetune import resume
    from ._finetune.engine import make_optimizer
    from ._finetune.loop import train_classifier
    from ._records import write_result
    from .finetune_eval import holdout, resume_dir, summary_metrics

    s = ctx.settings
    loaded = load_evaluated(ctx)
    train_tf, test_tf = _transforms(image_size_of(loaded.model_config))
    full, classes = classification_dataset(ctx.inputs["train"], transform=train_tf)
    test_set, test_classes = classification_dataset(ctx.inputs["test"], transform=test_tf)
    if classes != test_classes:
        raise UserError(f"{ctx.inputs['test']}: classes: differ from {ctx.inputs['train']}'s (same label space needed)")
    train_set, val_set, _ = holdout(full, test_tf, val_fraction=s.val_fraction, seed=s.seed)
    model = FrozenTowerProbe(loaded.model, len(classes), s.seed)
    groups = [{"params": list(model.head.parameters()), "weight_decay": s.weight_decay}]
    optimizer = make_optimizer("sgd", groups, lr=s.lr, betas=(0.9, 0.999), eps=1e-8, momentum=s.momentum)
    out = train_classifier(model=model, optimizer=optimizer, train_set=train_set, val_set=val_set, test_set=test_set,
                           num_classes=len(classes), settings=s, eval_batch_size=ctx.experiment.evaluate.batch_size,
                           resume_dir=resume_dir(ctx), per_epoch_schedule=True)
    if out["rank"] != 0:
        return
    write_result(ctx, task=EVALUATION.task, metrics=summary_metrics(out), model=loaded.experiment,
                 pretrained=ctx.checkpoint, checkpoint=loaded.stage, history=out["history"])
    resume.clear(resume_dir(ctx))
    print(f"linear_sgd {ctx.dataset}: acc1={out['final']['acc1']:.4f}")


EVALUATION = register(Evaluation(
    name="linear_sgd", order=25, task="linear_classification_sgd", run=run,
    inputs=lambda pair: {"train": ("stats", pair.train), "test": ("stats", pair.test)}, distributed=True,
    columns=(("linear (SGD), last epoch", "acc1"), ("linear (SGD), best epoch†", "best_acc1", None)),
    published="linear_sgd"))
