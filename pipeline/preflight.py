"""Pre-flight: what would make a training job fail at its start is found when the experiment is read, by
`snakemake -n` (workflow/rules/common.smk) and `python -m pipeline check-config`, as one line naming the file and
the key.

A mechanism, not a list of rules: for every enabled stage the job's own builders run on torch's `meta` device
(shapes only: no memory, no arithmetic, well under a second for a ViT-L) -

1. the model at the stage's image size and context length (pipeline.train.loop.build_model: model config, patch
   grid, image token reduction with its check_image),
2. the caption tokenizer with its text reduction (check_text, then build_text_transform, which loads the tagger),
3. the method with its heads and the loader hooks it asks for (augmented views, augmented captions),
4. one forward and backward pass of model + method on a batch of the stage's per-rank shape, built from the
   hooks' own output shapes,
5. the optimizer's parameter groups,

and the finetune stage loads the pretrain stage's weights (position embeddings resampled) and method state. Every
builder validates its own values, so the job and the pre-flight call the same functions and cannot drift. An
operation that meta cannot execute (one whose result depends on tensor values, e.g. DeCLIP's MLM masks) ends that
stage's forward check where it stands; tests/test_preflight_mutations.py trains a real CPU step for every mutation the
pre-flight accepts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
from pathlib import Path
from typing import Callable, TypeVar

from .config import CONFIG_DIR, ConfigError, Experiment, load_experiment, to_dict
from .config.schema import load_schema
from .errors import UserError

T = TypeVar("T")
META_LIMITS = ("meta tensor", "meta device", "_local_scalar_dense", "data-dependent", "Cannot copy out of meta")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _stage_keys() -> set[str]:
    return set(load_schema("experiment")["$defs"]["stage"]["properties"])


def blamed(message: str, stage: str) -> str:
    """A builder's one-line message with its key made a full key path: builders name a stage key bare
    ('image_size: ...') or a top-level one ('model.name: ...'; 'pretrain.image_reduction.tokens: ...')."""
    head = message.split(": ", 1)[0]
    if head.split(".")[0] in _stage_keys():
        return f"{stage}.{message}"
    return message


def guard(source: str, stage: str, key: str, what: str, build: Callable[[], T]) -> T:
    """Run one concern's builder; its UserError keeps its own key, anything else names `key` and says `what` failed."""
    try:
        return build()
    except UserError as exc:  # ConfigError included; a message may already name the file
        raise ConfigError(str(exc) if str(exc).startswith(source) else f"{source}: {blamed(str(exc), stage)}") from None
    except Exception as exc:  # what torch / open_clip raise when a value cannot work
        raise ConfigError(f"{source}: {key}: {what} ({type(exc).__name__}: {_first_line(exc)})") from None


@contextlib.contextmanager
def _on_meta():
    """Build on the meta device with the global RNG untouched and open_clip's 'no pretrained weights' notes quiet."""
    import torch

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            yield
    finally:
        logging.disable(previous)


def micro_batch(stage) -> int:
    """Samples one process feeds one forward pass (the loader's per-rank batch)."""
    return stage.batch_size // (stage.processes * stage.resources.nodes * stage.grad_accum_steps)


def _meta_batch(hooks: dict, ids, size: int, rows: int) -> dict:
    """A batch in the loader's format (pipeline.methods.Method: image, text, views, text_aug), shapes from the
    real hooks' output for one sample, every tensor on meta."""
    import torch
    from PIL import Image

    text = ids.to("meta").expand(rows, -1)
    batch = {"image": torch.empty(rows, 3, size, size, device="meta"), "text": text}
    if "view_maker" in hooks:
        with torch.device("cpu"):
            views = hooks["view_maker"](Image.new("RGB", (size, size)))
        batch["views"] = torch.empty(rows, *views.shape, device="meta")
    if "caption_augmenter" in hooks:
        batch["text_aug"] = text
    return batch


def _forward_backward(module, batch: dict) -> None:
    """One training forward + backward on meta; stops quietly where meta cannot go (value-dependent ops)."""
    try:
        module(batch)["loss"].backward()
    except (NotImplementedError, RuntimeError) as exc:
        if not any(limit in str(exc) for limit in META_LIMITS):
            raise


def check_stage(experiment: Experiment, stage_name: str, source: str) -> dict:
    """Build what the `stage_name` job builds, on meta; returns {'model', 'method', 'config'} for the next stage."""
    import torch

    from .methods import create_method
    from .models import context_length_of, image_size_of
    from .reduction import check_text
    from .reduction.text import build_text_transform
    from .train.checks import check_training
    from .train.loop import TrainModule, build_model, method_hooks
    from .train.optim import build_optimizer

    stage = experiment.stage(stage_name)
    guard(source, stage_name, stage_name, "the training settings cannot work together",
          lambda: check_training(experiment, stage_name, where=source))
    at = f"{stage_name}.image_size / {stage_name}.text_length"
    with _on_meta():
        model, config = guard(source, stage_name, "model", f"open_clip cannot build it at {at}",
                              lambda: build_model(experiment, stage_name, None))
        size, length = image_size_of(config), context_length_of(config)
        guard(source, stage_name, f"{stage_name}.text_reduction", "the caption tokenizer cannot be built",
              lambda: check_text(stage.text_reduction, where=stage_name, context_length=length))
        with torch.device("cpu"):
            ids = guard(source, stage_name, f"{stage_name}.text_reduction", "the caption tokenizer cannot be built",
                        lambda: build_text_transform(stage.text_reduction, length)(["a photo of a cat on a mat"]))
        options = to_dict(experiment.method_options)
        method = guard(source, stage_name, "method", f"{experiment.method} cannot be built on this model",
                       lambda: create_method(experiment.method, model, options))
        hooks = guard(source, stage_name, "method", f"the loader cannot make what {experiment.method} needs",
                      lambda: method_hooks(experiment, method, size))
        batch = _meta_batch(hooks, ids, size, micro_batch(stage))
        guard(source, stage_name, "method", f"{experiment.method} cannot train this model at {stage_name}",
              lambda: _forward_backward(TrainModule(model, method).train(), batch))
        guard(source, stage_name, stage_name, "the optimizer cannot be built",
              lambda: build_optimizer({"": model, "method": method}, lr=stage.lr, weight_decay=stage.weight_decay,
                                      rule=stage.weight_decay_rule, betas=stage.betas, eps=stage.eps))
    return {"model": model, "method": method, "config": config}


def check_init(previous: dict, current: dict, source: str) -> None:
    """The finetune job loads the pretrain weights resampled to its sizes, and the pretrain method state."""
    from .models.resample import load_resampled

    def load() -> None:
        load_resampled(current["model"], previous["model"].state_dict(), source="pretrain weights")
        current["method"].load_state_dict(previous["method"].state_dict())

    with _on_meta():
        guard(source, "finetune", "finetune", "cannot start from the pretrain stage's weights", load)


def check_experiment(experiment: Experiment, source: str) -> None:
    """Every enabled stage, then the finetune stage's start from the pretrain weights, then what the evaluations
    need of each other (pipeline.evaluate.check_experiment); ConfigError on the first failure (one line: file,
    key, reason)."""
    from .evaluate import check_experiment as check_evaluations

    try:
        check_evaluations(experiment, source)
    except UserError as exc:
        raise ConfigError(str(exc)) from None
    built = {}
    for stage_name in ("pretrain", "finetune"):
        if experiment.stage(stage_name).enabled:
            built[stage_name] = check_stage(experiment, stage_name, source)
    if len(built) == 2:
        check_init(built["pretrain"], built["finetune"], source)


def load_checked(name_or_path: str | Path, config_dir: Path = CONFIG_DIR) -> Experiment:
    """load_experiment (schema, datasets, settings' own checks), then the pre-flight."""
    experiment = load_experiment(name_or_path, config_dir)
    path = Path(name_or_path)
    source = str(path) if path.suffix in (".yaml", ".yml") else str(Path(config_dir) / "experiments" / f"{path}.yaml")
    check_experiment(experiment, source)
    return experiment


def main(argv: list[str]) -> int:
    """`python -m pipeline check-config <experiment>`: validate, pre-flight, print the resolved config as JSON."""
    parser = argparse.ArgumentParser(prog="python -m pipeline check-config", description=main.__doc__)
    parser.add_argument("experiment", help="experiment name (config/experiments/<name>.yaml) or path")
    args = parser.parse_args(argv[1:])
    path = Path(args.experiment)
    config_dir = path.resolve().parents[1] if path.suffix in (".yaml", ".yml") else CONFIG_DIR
    print(json.dumps(to_dict(load_checked(args.experiment, config_dir)), indent=2))
    return 0
