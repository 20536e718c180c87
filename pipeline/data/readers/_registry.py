"""Reader registry: a reader turns a dataset's source files into the url list or the labelled image folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...errors import UserError
from ..urls import UrlList  # noqa: F401  (re-exported: what image_text readers return)

READERS: dict[str, "ReaderSpec"] = {}


@dataclass(frozen=True)
class ReaderSpec:
    name: str
    kinds: tuple[str, ...]
    fn: Callable


def register(name: str, kinds: tuple[str, ...]):
    """Decorator: `fn(*, dataset, data_dir, base_dir)` returns UrlList (image_text) or a stats dict (classification)."""
    def wrap(fn: Callable) -> Callable:
        READERS[name] = ReaderSpec(name, tuple(kinds), fn)
        return fn
    return wrap


def source_path(source: str, base_dir: Path) -> Path:
    """Sources are relative to the repository root (base_dir); absolute paths and file:// URLs also work."""
    if source.startswith("file://"):
        return Path(source[len("file://"):])
    path = Path(source)
    return path if path.is_absolute() else Path(base_dir) / path


def require_sources(dataset, count: int | None = None) -> None:
    n = len(dataset.sources)
    if n == 0 or (count is not None and n != count):
        need = "at least one" if count is None else str(count)
        raise UserError(f"dataset {dataset.name}: sources: reader {dataset.reader} needs {need} source file(s), "
                        f"got {n}")


def existing_file(source: str, base_dir: Path, dataset) -> Path:
    path = source_path(source, base_dir)
    if not path.exists():
        raise UserError(f"{path}: file not found (dataset {dataset.name}, field sources)")
    return path
