"""Typed, frozen views of validated configs.

Fields carry no defaults on purpose: defaults live only in workflow/schemas, and
tests/test_config.py checks that these classes and the schemas name the same keys.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Augment:
    scale: tuple[float, float]
    color_jitter: float


@dataclass(frozen=True)
class ImageReduction:
    strategy: str
    tokens: Optional[int]
    grid_window: int


@dataclass(frozen=True)
class Resources:
    nodes: int
    gpus_per_node: int
    cpus_per_task: int
    mem_mb: int
    runtime_min: int


@dataclass(frozen=True)
class Stage:
    enabled: bool
    image_size: Optional[int]
    text_length: Optional[int]
    batch_size: int
    grad_accum_steps: int
    lr: float
    warmup_steps: int
    epochs: Optional[float]
    samples: Optional[int]
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    precision: str
    seed: int
    logit_scale_max: float
    grad_clip: Optional[float]
    checkpoint_every: int
    keep_checkpoints: int
    log_every: int
    workers: int
    resampled_shards: bool
    processes: int
    augment: Augment
    image_reduction: ImageReduction
    text_reduction: str
    grad_checkpointing: bool
    compile: bool
    resources: Resources


@dataclass(frozen=True)
class Data:
    train: str


@dataclass(frozen=True)
class Model:
    name: Optional[str]
    config: Optional[dict]


@dataclass(frozen=True)
class TrainTest:
    train: str
    test: str


@dataclass(frozen=True)
class LinearProbe:
    datasets: tuple[TrainTest, ...]
    c_values: tuple[float, ...]
    val_fraction: float
    max_iter: int
    seed: int


@dataclass(frozen=True)
class FinetuneEval:
    datasets: tuple[TrainTest, ...]
    epochs: int
    batch_size: int
    grad_accum_steps: int
    lr: float
    min_lr: float
    warmup_epochs: float
    weight_decay: float
    layer_decay: float
    ema_decay: Optional[float]
    label_smoothing: float
    randaugment: str
    reprob: float
    crop_min: float
    mixup: float
    cutmix: float
    head_init: str
    zero_stage: int
    precision: str
    grad_clip: Optional[float]
    processes: int
    workers: int
    seed: int


@dataclass(frozen=True)
class WiseFT:
    datasets: tuple[TrainTest, ...]
    alphas: tuple[float, ...]
    headline_alpha: float
    ema: bool


@dataclass(frozen=True)
class SupervisedBaseline:
    datasets: tuple[TrainTest, ...]
    weights: Optional[str]
    epochs: int
    batch_size: int
    lr: float
    head_lr_scale: float
    weight_decay: float
    image_size: int
    augment: bool
    workers: int
    seed: int


@dataclass(frozen=True)
class RetrievalSet:
    name: str
    annotations: str
    images_root: str
    split: str


@dataclass(frozen=True)
class Retrieval:
    datasets: tuple[RetrievalSet, ...]


@dataclass(frozen=True)
class EvalResources:
    gpus: int
    cpus_per_task: int
    mem_mb: int
    runtime_min: int


@dataclass(frozen=True)
class Evaluate:
    zeroshot: tuple[str, ...]
    batch_size: int
    workers: int
    resources: EvalResources
    linear_probe: LinearProbe
    finetune_eval: FinetuneEval
    wiseft: WiseFT
    supervised_baseline: SupervisedBaseline
    retrieval: Retrieval


@dataclass(frozen=True)
class DeclipWeights:
    clip: float
    nn: float
    simsiam: float
    mlm: float
    filip: float


@dataclass(frozen=True)
class MethodOptions:
    ssl_scale: float
    ssl_temperature: float
    ssl_mlp_dim: int
    ssl_emb_dim: int
    simsiam_dim: int
    simsiam_pred_dim: int
    declip_weights: DeclipWeights
    nn_queue_size: int
    mlm_probability: float
    text_aug_alpha: float
    filip_clip_weight: float


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    groups: tuple[str, ...]
    method: str
    method_options: MethodOptions
    data: Data
    model: Model
    pretrain: Stage
    finetune: Stage
    evaluate: Evaluate
    published: dict

    def stage(self, name: str) -> Stage:
        if name not in ("pretrain", "finetune"):
            raise KeyError(f"unknown stage {name!r} (pretrain, finetune)")
        return getattr(self, name)


@dataclass(frozen=True)
class Img2DatasetSettings:
    image_size: int
    resize_mode: str
    encode_quality: int
    processes: int
    threads: int
    timeout: float
    retries: int
    samples_per_shard: int
    max_image_area: Optional[float]
    distributor: str


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    kind: str
    reader: str
    sources: tuple[str, ...]
    split: str
    subset: Optional[int]
    redcaps_caption: str
    image_root: Optional[str]
    dataset_class: Optional[str]
    classnames: Optional[str]
    templates: Optional[str]
    img2dataset: Img2DatasetSettings


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value)
    if origin is typing.Union:
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return _convert(inner, value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        return tuple(_convert(a, v) for a, v in zip(args, value))
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def build(cls, data: dict):
    """Build dataclass `cls` from a validated dict (every key present after default filling)."""
    hints = typing.get_type_hints(cls)
    kwargs = {f.name: _convert(hints[f.name], data[f.name]) for f in dataclasses.fields(cls)}
    return cls(**kwargs)


def to_dict(obj) -> dict:
    """Plain-JSON form of a config object (tuples become lists), for checkpoints and params."""
    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(obj))
