"""`reader: cc3m` and `reader: cc12m`: Google's Conceptual Captions releases (headerless tsv files).

CC3M (Train_GCC-training.tsv, Validation_GCC-1.1.0-Validation.tsv): caption <TAB> url.
CC12M (cc12m.tsv): url <TAB> caption. Keys are "<file index>_<line index>" so a sample traces back to its line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa

from ..urls import UrlList, collect
from ._registry import register, require_sources
from ._tabular import expand_sources, stream_tsv


def _tsv_chunks(dataset, base_dir: Path, columns: list[str]) -> Iterator[pa.Table | dict[str, int]]:
    for file_index, path in enumerate(expand_sources(dataset, base_dir, ".tsv")):
        line, dropped = 0, {}
        for batch in stream_tsv(path, columns, dropped):
            n = batch.num_rows
            keys = pa.array([f"{file_index}_{i}" for i in range(line, line + n)], pa.string())
            line += n
            yield pa.table({"url": batch.column("url"), "caption": batch.column("caption"), "key": keys})
        yield dropped  # its malformed lines, counted in stats.json


@register("cc3m", kinds=("image_text",))
def read_cc3m(*, dataset, data_dir: Path, base_dir: Path) -> UrlList:
    require_sources(dataset)
    return collect(_tsv_chunks(dataset, base_dir, ["caption", "url"]), data_dir=data_dir, dataset=dataset)


@register("cc12m", kinds=("image_text",))
def read_cc12m(*, dataset, data_dir: Path, base_dir: Path) -> UrlList:
    require_sources(dataset)
    return collect(_tsv_chunks(dataset, base_dir, ["url", "caption"]), data_dir=data_dir, dataset=dataset)
