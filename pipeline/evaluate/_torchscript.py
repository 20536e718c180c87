"""Tensors of a TorchScript archive (OpenAI's released CLIP `.pt` files) read without running any of its code.

torch.load(weights_only=True) refuses TorchScript archives and torch.jit.load compiles the archive's code, so
this reads the archive's pickled module tree with an unpickler that resolves no name except tensor rebuilding,
storage types and OrderedDict: every `__torch__.*` module class becomes an inert attribute holder, anything
else is refused with an error naming it. Tensor bytes come from the archive's `data/` entries.
"""
from __future__ import annotations

import collections
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import UserError

_ALLOWED = {("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")}


class _Module:
    """Stands in for a scripted module class: keeps the attributes it is built with, runs nothing."""

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: Path):
        super().__init__(file)
        self.archive, self.prefix, self.source = archive, prefix, source

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return _Module
        if module == "torch" and name.endswith("Storage") and isinstance(getattr(torch, name, None), type):
            return getattr(torch, name)
        if (module, name) in _ALLOWED:
            return getattr(collections, name) if module == "collections" else torch._utils._rebuild_tensor_v2
        raise UserError(f"{self.source}: refusing TorchScript entry {module}.{name} (only weights are read)")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage":
            raise UserError(f"{self.source}: unexpected persistent id {kind!r}")
        raw = self.archive.read(f"{self.prefix}data/{key}")
        dtype = storage_type.dtype
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def _flatten(obj, prefix: str, out: dict) -> None:
    for key, value in obj.state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + key] = value
        elif isinstance(value, _Module):
            _flatten(value, f"{prefix}{key}.", out)


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """{dotted attribute name: tensor} of every tensor attribute in the archive's module tree (parameters,
    buffers and plain tensor attributes such as OpenAI's attn_mask)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        data = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(data) != 1:
            raise UserError(f"{path}: not a TorchScript archive (no single data.pkl)")
        prefix = data[0][: -len("data.pkl")]
        with archive.open(data[0]) as file, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")  # what tensors rebuild from
            root = _Unpickler(file, archive, prefix, path).load()
    if not isinstance(root, _Module):
        raise UserError(f"{path}: TorchScript archive holds no module")
    out: dict[str, torch.Tensor] = {}
    _flatten(root, "", out)
    return out
