"""The one validation of training settings that depend on each other or on the method, called by the
trainer before it builds anything (and meant for the config pre-flight, as pipeline.reduction.check_image is):
one-line UserErrors naming the file and the key."""
from __future__ import annotations

from ..errors import UserError


def _bounds(value, where: str) -> None:
    low, high = value
    if low > high:
        raise UserError(f"{where}: low bound {low:g} exceeds high bound {high:g}")


def check_training(experiment, stage_name: str, *, where: str) -> None:
    """`where` prefixes the key, e.g. 'config/experiments/E.yaml'."""
    from ..methods import available, method_class  # torch: imported only when a check runs

    stage = experiment.stage(stage_name)
    key = f"{where}: {stage_name}"
    for name in ("min_lr", "warmup_start_lr"):
        if getattr(stage, name) > stage.lr:
            raise UserError(f"{key}.{name}: {getattr(stage, name):g} exceeds lr {stage.lr:g}")
    _bounds(stage.logit_scale_bounds, f"{key}.logit_scale_bounds")
    _bounds(experiment.method_options.token_logit_scale_bounds, f"{where}: method_options.token_logit_scale_bounds")
    if stage.pos_embed_type == "sin_cos_2d":
        from open_clip.model import CLIPVisionCfg

        from ..models import resolve_model_config

        config = resolve_model_config(experiment.model.name, experiment.model.config)
        width = CLIPVisionCfg(**config["vision_cfg"]).width
        if width % 4:
            raise UserError(f"{key}.pos_embed_type: sin_cos_2d needs a vision width divisible by 4 (half the "
                            f"channels per axis, sin and cos), got {width}")
    if stage.grad_accum_steps > 1 and not method_class(experiment.method).accumulates:
        able = ", ".join(name for name in available() if method_class(name).accumulates)
        raise UserError(
            f"{key}.grad_accum_steps: method {experiment.method!r} cannot accumulate gradients exactly (BatchNorm "
            f"heads or a queue see each micro-batch alone); use 1 (more processes or a smaller batch_size), or a "
            f"method that splits features from its loss ({able})")
