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

    def __init__(self, model: torch.nn.Module, options: dict | None = None):
        super().__init__()
        self.options = dict(options or {})

    @abc.abstractmethod
    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return {'loss': scalar to backprop, ...other scalars to log}. batch has 'image', 'text'."""


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
