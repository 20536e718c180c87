"""`reader: laion400m`: LAION-400M metadata parquet files (URL, TEXT, SAMPLE_ID, ... columns), streamed.

Column names are matched without case, and url / caption are accepted too, so re-exported copies work.
The key is LAION's SAMPLE_ID when present.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa

from ..urls import UrlList, collect
from ._registry import register, require_sources
from ._tabular import expand_sources, parquet_batches

COLUMNS = {"url": ("URL", "url"), "caption": ("TEXT", "caption"), "key": ("SAMPLE_ID", "key")}


def _chunks(dataset, base_dir: Path) -> Iterator[pa.Table]:
    row = 0
    for path in expand_sources(dataset, base_dir, ".parquet"):
        for table in parquet_batches(path, COLUMNS):
            if "key" not in table.column_names:
                table = table.append_column("key", pa.array([f"{i:09d}" for i in range(row, row + table.num_rows)]))
            row += table.num_rows
            yield table.select(["url", "caption", "key"])


@register("laion400m", kinds=("image_text",))
def read_laion400m(*, dataset, data_dir: Path, base_dir: Path) -> UrlList:
    require_sources(dataset)
    return collect(_chunks(dataset, base_dir), data_dir=data_dir, dataset=dataset)
