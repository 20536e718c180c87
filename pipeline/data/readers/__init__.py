"""Readers by name (the `reader` key of a dataset config); importing this package registers them all."""
from __future__ import annotations

from ...errors import UserError
from ._registry import READERS, ReaderSpec, UrlList, register, source_path
from . import fashion_mnist, imagefolder, torchvision_sets, url_list  # noqa: F401  (register on import)
from . import coco, conceptual, laion, redcaps, yfcc  # noqa: F401  (published metadata formats)

__all__ = ["READERS", "ReaderSpec", "UrlList", "register", "source_path", "get_reader"]


def get_reader(name: str, kind: str) -> ReaderSpec:
    spec = READERS.get(name)
    if spec is None:
        raise UserError(f"reader: unknown reader {name!r} (readers: {', '.join(sorted(READERS))})")
    if kind not in spec.kinds:
        raise UserError(f"reader: {name} does not make {kind} datasets (it makes: {', '.join(spec.kinds)})")
    return spec
