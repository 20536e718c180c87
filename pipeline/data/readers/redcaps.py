"""`reader: redcaps`: RedCaps annotation files (one json per subreddit and year), merged in name order.

Each file is {"info": {...}, "annotations": [{"image_id", "url", "raw_caption", "caption", "subreddit",
...}]}; `redcaps_caption` picks the processed or the raw caption. The subreddit travels into each sample's
json (SLIP's RedCaps loader uses it to find images), the key is RedCaps' image_id.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa

from ...errors import UserError
from ..urls import UrlList, collect
from ._registry import register, require_sources
from ._tabular import expand_sources, load_json


def _chunks(dataset, base_dir: Path) -> Iterator[pa.Table]:
    field = "caption" if dataset.redcaps_caption == "processed" else "raw_caption"
    for path in expand_sources(dataset, base_dir, ".json"):
        data = load_json(path)
        annotations = data.get("annotations") if isinstance(data, dict) else data  # SLIP's merged file: a list
        if not isinstance(annotations, list):
            raise UserError(f"{path}: no annotations list (field sources)")
        try:
            yield pa.table({
                "url": pa.array([a.get("url") or "" for a in annotations], pa.string()),  # none: empty_url
                "caption": pa.array([a.get(field) or "" for a in annotations], pa.string()),
                "key": pa.array([str(a["image_id"]) for a in annotations], pa.string()),
                "subreddit": pa.array([a.get("subreddit") or "" for a in annotations], pa.string()),
            })
        except (KeyError, TypeError) as exc:
            raise UserError(f"{path}: annotation without {exc} (field sources)") from None


@register("redcaps", kinds=("image_text",))
def read_redcaps(*, dataset, data_dir: Path, base_dir: Path) -> UrlList:
    require_sources(dataset)
    return collect(_chunks(dataset, base_dir), data_dir=data_dir, dataset=dataset)
