"""The checkpoint an evaluation reads: one of the experiment's own stages (results/E/<stage>/final.pt), or a
file named in `evaluate.checkpoints` (a table row of its own): one of our checkpoints, an open_clip checkpoint
or state dict (.pt / .bin / .safetensors, read by open_clip.load_checkpoint with weights_only=True), or an OpenAI
CLIP `.pt` (a TorchScript archive, its tensors read by pipeline.evaluate._torchscript without running its code;
or a plain state dict). Files that are not ours are built with the experiment's `model` config (e.g.
ViT-B-16-quickgelu for OpenAI's ViT-B/16). Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..utils.io import torch_load

OPENAI_EXTRA = ("input_resolution", "context_length", "vocab_size")  # attributes of OpenAI's scripted model


def external_entry(experiment, checkpoint: Path | str | None):
    """The evaluate.checkpoints entry whose file is `checkpoint`, or None (an experiment stage's checkpoint)."""
    if checkpoint is None:
        return None
    target = Path(checkpoint).resolve()
    for entry in experiment.evaluate.checkpoints:
        if Path(entry.path).resolve() == target:
            return entry
    return None


def detect_format(path: Path) -> str:
    """clipforge (our {'model', 'model_config', 'stage'} file), openai (TorchScript archive) or open_clip."""
    from ._torchscript import is_torchscript

    if is_torchscript(path):
        return "openai"
    if path.suffix == ".safetensors":
        return "open_clip"
    blob = torch_load(path, "checkpoint", mmap=True)  # mmap: only the keys are looked at
    return "clipforge" if isinstance(blob, dict) and {"model", "model_config"} <= set(blob) else "open_clip"


def _model_config(experiment, where: str) -> dict:
    from ..models import resolve_model_config

    try:
        return resolve_model_config(experiment.model.name, experiment.model.config)
    except UserError as exc:
        raise UserError(f"{where}: needs the experiment's model config ({exc})") from None


def load_file(path: Path, fmt: str, model_config: dict):
    """An open_clip model with the weights of a non-clipforge file, in eval mode."""
    import open_clip

    from ..models import create_model
    from ._torchscript import read_tensors

    model = create_model(model_config)
    try:
        if fmt == "openai":
            state = {k: v for k, v in read_tensors(path).items()
                     if k not in OPENAI_EXTRA and k.rsplit(".", 1)[-1] != "attn_mask"}  # masks are not weights
            model.load_state_dict(state, strict=True)
        else:
            open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{path}: weights do not fit the experiment's model config ({first})") from None
    return model.eval()


def load_evaluated(ctx):
    """LoadedCheckpoint of ctx.checkpoint: model in eval mode, its config, experiment and row name."""
    from ..models import LoadedCheckpoint, load_model

    entry = external_entry(ctx.experiment, ctx.checkpoint)
    if entry is None:
        return load_model(ctx.checkpoint)
    path = Path(entry.path)
    where = f"evaluate.checkpoints: {entry.name}"
    if not path.is_file():
        raise UserError(f"{path}: checkpoint file not found ({where}.path)")
    fmt = detect_format(path) if entry.format == "auto" else entry.format
    if fmt == "clipforge":
        loaded = load_model(path)
        return LoadedCheckpoint(loaded.model, loaded.model_config, ctx.experiment.name, entry.name, path)
    model_config = _model_config(ctx.experiment, where)
    return LoadedCheckpoint(load_file(path, fmt, model_config), model_config, ctx.experiment.name, entry.name, path)
