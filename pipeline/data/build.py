"""One dataset config -> data/NAME: reader, then (image_text) img2dataset shards, then stats.json last."""
from __future__ import annotations

import time
from pathlib import Path

from ..config import to_dict
from ..errors import UserError
from ..utils.io import write_json
from .readers import UrlList, get_reader
from .shards import aggregate, build_shards


def summary_line(stats: dict) -> str:
    failed = stats.get("failed", {})
    parts = ", ".join(f"{k} {v}" for k, v in failed.items()) or "none"
    shards = f", {len(stats['shards'])} shards" if "shards" in stats else ""
    return f"{stats['dataset']}: {stats['samples']} ok, {sum(failed.values())} failed ({parts}){shards}"


def caption_rule(dataset) -> str:
    """stats.json `caption`, how the loader forms a sample's caption: its .txt, or (yfcc15m with yfcc_caption
    title_or_description) the title or the description from its .json."""
    if dataset.reader == "yfcc15m" and dataset.yfcc_caption == "title_or_description":
        return "title_or_description"
    return "txt"


def build_dataset(*, dataset, data_dir: str | Path, base_dir: str | Path, stats_path: str | Path) -> dict:
    """Make data_dir's content for `dataset` and write stats_path (atomically, after everything else)."""
    data_dir, stats_path = Path(data_dir), Path(stats_path)
    stats_path.unlink(missing_ok=True)  # never leave an old stats.json beside half-rebuilt data
    data_dir.mkdir(parents=True, exist_ok=True)
    reader = get_reader(dataset.reader, dataset.kind)
    started = time.time()
    result = reader.fn(dataset=dataset, data_dir=data_dir, base_dir=Path(base_dir))
    print(f"reader {dataset.reader}: done in {time.time() - started:.1f}s", flush=True)
    if dataset.kind == "classification":
        stats = {"dataset": dataset.name, "kind": "classification", "samples": result["samples"],
                 "format": "imagefolder", "root": "images", "classes": result["classes"]}
    else:
        assert isinstance(result, UrlList)
        if result.rows == 0:
            raise UserError(f"dataset {dataset.name}: sources: no rows with a url to fetch (reader {dataset.reader})")
        shards_dir = data_dir / "shards"
        checks = build_shards(url_list=result, shards_dir=shards_dir, settings=dataset.img2dataset)
        stats = {"dataset": dataset.name, "kind": "image_text",
                 **aggregate(shards_dir=shards_dir, checks=checks, rows=result.rows, dropped=result.dropped),
                 "caption": caption_rule(dataset), "img2dataset": to_dict(dataset.img2dataset)}
        if stats["samples"] == 0:  # nothing to train on: fail here, not in the trainer
            raise UserError(f"dataset {dataset.name}: no image could be stored ({summary_line(stats)}); "
                            f"see {shards_dir}/*.parquet, column error_message")
    write_json(stats_path, stats)
    print(summary_line(stats), flush=True)
    return stats
