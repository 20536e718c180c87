"""`reader: yfcc15m`: OpenAI's YFCC15M subset joined with the YFCC100M metadata, captions from title + text.

sources[0] is OpenAI's yfcc100m_subset_data.tsv (line number, photo id, photo hash: the first three columns of
the metadata file); sources[1:] are the YFCC100M metadata tsv file(s) (.bz2/.gz fine), either the 25-column
release (line number, id, hash, ...) or Yahoo's 23-column original (id first). The join is on the photo id.

Caption cleaning follows SLIP's make_dataset.py in spirit: url-decode ('+' is a space), drop HTML markup
and links, squeeze whitespace. The caption is "title. description" (title alone or description alone when
the other is empty; rows with neither are dropped); both parts are also kept in each sample's json so a
loader can pick one at random as SLIP does.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote_plus

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import UserError
from ..urls import UrlList, collect
from ._registry import existing_file, register, require_sources
from ._tabular import first_line_fields, stream_tsv

# metadata layouts by field count: where id, title, description, download url and the photo marker are
LAYOUTS = {25: {"id": 1, "title": 8, "description": 9, "url": 16, "marker": 24},
           23: {"id": 0, "title": 6, "description": 7, "url": 14, "marker": 22}}
_TAG = re.compile(r"<[^>]*>")
_LINK = re.compile(r"(?:https?://|www\.)\S+")


def clean_text(raw: str) -> str:
    """YFCC title/description field -> plain text."""
    text = html.unescape(unquote_plus(raw or ""))
    text = _LINK.sub(" ", _TAG.sub(" ", text))
    return " ".join(text.split())


def join_caption(title: str, description: str) -> str:
    if title and description:
        return f"{title.rstrip('.')}. {description}"
    return title or description


def subset_ids(path: Path) -> np.ndarray:
    """Sorted photo ids of OpenAI's subset file (2nd column; a header line, if any, is ignored)."""
    ids = []
    for batch in stream_tsv(path, ["line", "photoid", "hash"]):
        col = batch.column("photoid")
        ids.append(pc.cast(col.filter(pc.match_substring_regex(col, r"^\d+$")), pa.int64()).to_numpy())
    out = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
    if out.size == 0:
        raise UserError(f"{path}: no photo ids found (expected line, photo id, hash columns) (field sources)")
    return out


def _matching(batch: pa.RecordBatch, layout: dict, ids: np.ndarray) -> pa.Table:
    cols = {k: batch.column(f"f{v}") for k, v in layout.items()}
    numeric = pc.match_substring_regex(cols["id"], r"^\d+$")
    photo_ids = pc.cast(pc.if_else(numeric, cols["id"], "-1"), pa.int64()).to_numpy()
    keep = np.isin(photo_ids, ids) & (pc.equal(cols["marker"], "0").to_numpy(zero_copy_only=False))
    mask = pa.array(keep)
    return pa.table({k: c.filter(mask) for k, c in cols.items() if k != "marker"})


def _chunks(dataset, base_dir: Path) -> Iterator[pa.Table]:
    ids = subset_ids(existing_file(dataset.sources[0], base_dir, dataset))
    print(f"yfcc15m: {ids.size} photo ids in the subset list", flush=True)
    for source in dataset.sources[1:]:
        path = existing_file(source, base_dir, dataset)
        fields = first_line_fields(path)
        if fields not in LAYOUTS:
            raise UserError(f"{path}: {fields} tab-separated fields per line; YFCC100M metadata has 25 or 23 "
                            f"(field sources)")
        for batch in stream_tsv(path, [f"f{i}" for i in range(fields)]):
            table = _matching(batch, LAYOUTS[fields], ids)
            titles = [clean_text(t) for t in table.column("title").to_pylist()]
            descs = [clean_text(d) for d in table.column("description").to_pylist()]
            captions = [join_caption(t, d) for t, d in zip(titles, descs)]
            yield pa.table({"url": table.column("url"), "caption": pa.array(captions, pa.string()),
                            "key": table.column("id"), "title": pa.array(titles, pa.string()),
                            "description": pa.array(descs, pa.string())}).filter(
                pa.array([bool(c) for c in captions]))


@register("yfcc15m", kinds=("image_text",))
def read_yfcc15m(*, dataset, data_dir: Path, base_dir: Path) -> UrlList:
    require_sources(dataset)
    if len(dataset.sources) < 2:
        raise UserError(f"dataset {dataset.name}: sources: yfcc15m needs the subset id list and at least one "
                        f"YFCC100M metadata file")
    return collect(_chunks(dataset, base_dir), data_dir=data_dir, dataset=dataset)
