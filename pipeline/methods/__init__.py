"""Training objectives. A method = a loss + its heads + the views it needs + its config.

Each method is one module in this package that subclasses `Method` and registers itself with
`@register("name")`; the trainer only ever calls `create_method(...)` and `method(model, batch)`.
Adding a method touches nothing else (plus its name in the experiment schema's `method` enum).
"""
from __future__ import annotations

import abc
import importlib
import pkgutil
from typing import Callable, ClassVar

import torch

_REGISTRY: dict[str, type["Method"]] = {}


class Method(torch.nn.Module, metaclass=abc.ABCMeta):
    """Base class. Extra heads are submodules (optimised and checkpointed with the model);
    queues or other state are buffers (saved in state_dict, so they resume)."""

    name: ClassVar[str] = ""
    # Extra augmented image views per sample the loader must add as batch["views"] [B, V, C, H, W].
    image_views: ClassVar[int] = 0
    # Whether the loader must add an augmented caption as batch["text_aug"] [B, L].
    text_augment: ClassVar[bool] = False
    # Whether the loss is a function of per-sample features alone (no BatchNorm over the batch, no state
    # updated by the forward): such a method splits its forward into `features` and `loss`, and the trainer
    # accumulates gradients as open_clip's --accum-freq does (exactly the loss of one k-times larger batch).
    accumulates: ClassVar[bool] = False

    def __init__(self, model: torch.nn.Module, options: dict | None = None):
        super().__init__()
        self.options = dict(options or {})

    @abc.abstractmethod
    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return {'loss': scalar to backprop, ...other scalars to log}. batch has 'image', 'text'."""

    def features(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """(accumulating methods) The per-sample tensors the loss needs, rows = samples of `batch`; 0-d
        tensors (a temperature) are shared, not per sample. forward == loss(features(model, batch))."""
        raise NotImplementedError(f"method {self.name!r} does not split its forward (accumulates is False)")

    def loss(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """(accumulating methods) forward's output from `features` of any number of rows. It reads parameters
        only through `features` (a temperature as a 0-d entry), so each gets its gradient once per step."""
        raise NotImplementedError(f"method {self.name!r} does not split its forward (accumulates is False)")

    def scale_bounds(self) -> list[tuple[torch.nn.Parameter, float, float]]:
        """(parameter, low, high): the method's own raw (log) temperatures, which the trainer clamps in place
        before and after every optimizer step, as CLIP clamps logit_scale (a clamp inside the forward would
        zero the parameter's gradient at the bound)."""
        return []

    def rank_local_keys(self) -> list[str]:
        """state_dict keys of submodules whose state differs between ranks (`rank_local = True`, e.g. DeCLIP's
        per-rank feature queue): the trainer checkpoints them for every rank, not only rank 0's copy."""
        keys = []
        for prefix, module in self.named_modules():
            if getattr(module, "rank_local", False):
                keys += [f"{prefix}.{k}" if prefix else k for k in module.state_dict()]
        return keys


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    def wrap(cls: type[Method]) -> type[Method]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return wrap


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def available() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Method]:
    _import_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r} (methods: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def create_method(name: str, model: torch.nn.Module, options: dict | None = None) -> Method:
    return method_class(name)(model, options)
