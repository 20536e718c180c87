"""`reader: coco`: COCO captions (captions_train2017.json): one sample per image, all its captions kept.

The sample's .txt is the image's first caption (by annotation id); every caption is saved in the json as
`captions` (a JSON list), so a loader can draw one at random as SLIP does. An image without a caption is
counted (missing_caption) and left out. Images come from coco_url,
or from `image_root`/file_name when the images are already on disk.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from ...errors import UserError
from ..urls import UrlList, collect
from ._registry import register, require_sources, source_path
from ._tabular import expand_sources, load_json


def coco_table(data: dict, path: Path, image_root: Path | None) -> pa.Table:
    try:
        captions: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for ann in data["annotations"]:
            captions[ann["image_id"]].append((ann.get("id", 0), " ".join(str(ann["caption"]).split())))
        rows = []
        for image in sorted(data["images"], key=lambda im: im["id"]):
            texts = [c for _, c in sorted(captions.get(image["id"], []))]
            url = (image_root / image["file_name"]).as_uri() if image_root else image["coco_url"]
            rows.append((url, texts[0] if texts else "", str(image["id"]), json.dumps(texts)))  # "": counted
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a COCO captions file (missing {exc}) (field sources)") from None
    cols = list(zip(*rows)) if rows else [[], [], [], []]
    return pa.table({name: pa.array(list(col), pa.string())
                     for name, col in zip(("url", "caption", "key", "captions"), cols)})


@register("coco", kinds=("image_text",))
def read_coco(*, dataset, data_dir: Path, base_dir: Path) -> UrlList:
    require_sources(dataset)
    root = source_path(dataset.image_root, base_dir).resolve() if dataset.image_root else None
    if root is not None and not root.is_dir():
        raise UserError(f"{root}: image_root is not a folder (dataset {dataset.name}, field image_root)")
    paths = expand_sources(dataset, base_dir, ".json")
    return collect((coco_table(load_json(p), p, root) for p in paths), data_dir=data_dir, dataset=dataset)
