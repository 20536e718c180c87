"""The url list every image_text reader produces: data/NAME/source/urls.parquet with url, caption, key."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..utils.io import atomic_path

URL_LIST = Path("source") / "urls.parquet"


def url_table(urls: Sequence[str], captions: Sequence[str], keys: Sequence[str] | None = None,
              subset: int | None = None) -> pa.Table:
    """One table in the url-list layout; `subset` keeps the first N rows (the dataset's subset key)."""
    if keys is None:
        keys = [f"{i:09d}" for i in range(len(urls))]
    table = pa.table({"url": pa.array(list(urls), pa.string()),
                      "caption": pa.array(list(captions), pa.string()),
                      "key": pa.array(list(keys), pa.string())})
    return table.slice(0, subset) if subset is not None else table


def write_url_list(table: pa.Table, path: str | Path) -> int:
    """Write the url list atomically; returns its row count."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return table.num_rows
