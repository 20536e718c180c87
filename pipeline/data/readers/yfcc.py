"""`reader: yfcc15m`: OpenAI's YFCC15M subset joined with the YFCC100M metadata, captions from title + text.

sources[0] is OpenAI's yfcc100m_subset_data.tsv (line number, photo id, photo hash: the first three columns of
the metadata file); sources[1:] are the YFCC100M metadata tsv file(s) (.bz2/.gz fine), either the 25-column
release (line number, id, hash, ...) or Yahoo's 23-column original (id first). The join is on the photo id.

Caption cleaning follows SLIP's make_dataset.py in spirit: url-decode ('+' is a space), drop HTML markup
and links, squeeze whitespace. The caption is "title. description" (title alone or description alone when
the other is empty); both parts are also kept in each sample's json, so that the loader can draw one per
sample as SLIP does (the dataset's yfcc_caption). Input rows are the subset list's photo ids; those left out
are counted: videos (not_a_photo), ids the metadata lacks (not_in_metadata), repeated ids (duplicate_key),
broken lines (malformed_line), photos with neither title nor description (missing_caption).
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


def subset_ids(path: Path, dropped: dict[str, int]) -> np.ndarray:
    """Sorted photo ids of OpenAI's subset file (2nd column); its rows are the reader's input rows. A first
    line without a numeric id is a header; later ones are malformed_line, repeats duplicate_key."""
    ids, lines = [], 0
    for batch in stream_tsv(path, ["line", "photoid", "hash"], dropped):
        col = batch.column("photoid")
        numeric = pc.match_substring_regex(col, r"^\d+$")
        bad = len(col) - pc.sum(numeric).as_py() if len(col) else 0
        if bad and lines == 0 and not numeric[0].as_py():
            bad -= 1  # a header line
        if bad:
            dropped["malformed_line"] = dropped.get("malformed_line", 0) + bad
        lines += len(col)
        ids.append(pc.cast(col.filter(numeric), pa.int64()).to_numpy())
    every = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    out = np.unique(every)
    if out.size == 0:
        raise UserError(f"{path}: no photo ids found (expected line, photo id, hash columns) (field sources)")
    if every.size > out.size:
        dropped["duplicate_key"] = dropped.get("duplicate_key", 0) + int(every.size - out.size)
    return out


def _matching(batch: pa.RecordBatch, layout: dict, ids: np.ndarray, found: np.ndarray) -> pa.Table:
    """The batch's first sightings of subset ids (later ones are not input rows: the subset row is taken),
    with `drop` = not_a_photo for videos."""
    cols = {k: batch.column(f"f{v}") for k, v in layout.items()}
    numeric = pc.match_substring_regex(cols["id"], r"^\d+$")
    photo_ids = pc.cast(pc.if_else(numeric, cols["id"], "-1"), pa.int64()).to_numpy()
    where = np.searchsorted(ids, photo_ids).clip(max=len(ids) - 1)
    candidates = np.flatnonzero((ids[where] == photo_ids) & ~found[where])
    _, first = np.unique(where[candidates], return_index=True)
    rows = np.sort(candidates[first])
    found[where[rows]] = True
    take = pa.array(rows, pa.int64())
    table = pa.table({k: c.take(take) for k, c in cols.items() if k != "marker"})
    video = pc.not_equal(cols["marker"].take(take), "0")
    return table.append_column("drop", pc.if_else(video, pa.scalar("not_a_photo"), pa.scalar(None, pa.string())))


def _chunks(dataset, base_dir: Path) -> Iterator[pa.Table | dict[str, int]]:
    dropped: dict[str, int] = {}
    ids = subset_ids(existing_file(dataset.sources[0], base_dir, dataset), dropped)
    yield dropped
    print(f"yfcc15m: {ids.size} photo ids in the subset list", flush=True)
    found = np.zeros(ids.size, dtype=bool)
    for source in dataset.sources[1:]:
        path = existing_file(source, base_dir, dataset)
        fields = first_line_fields(path)
        if fields not in LAYOUTS:
            raise UserError(f"{path}: {fields} tab-separated fields per line; YFCC100M metadata has 25 or 23 "
                            f"(field sources)")
        for batch in stream_tsv(path, [f"f{i}" for i in range(fields)]):  # its broken lines: not input rows
            table = _matching(batch, LAYOUTS[fields], ids, found)
            titles = [clean_text(t) for t in table.column("title").to_pylist()]
            descs = [clean_text(d) for d in table.column("description").to_pylist()]
            captions = [join_caption(t, d) for t, d in zip(titles, descs)]
            yield pa.table({"url": table.column("url"), "caption": pa.array(captions, pa.string()),
                            "key": table.column("id"), "title": pa.array(titles, pa.string()),
                            "description": pa.array(descs, pa.string()), "drop": table.column("drop")})
    yield {"not_in_metadata": int((~found).sum())}


@register("yfcc15m", kinds=("image_text",))
def read_yfcc15m(*, dataset, data_dir: Path, base_dir: Path) -> UrlList:
    require_sources(dataset)
    if len(dataset.sources) < 2:
        raise UserError(f"dataset {dataset.name}: sources: yfcc15m needs the subset id list and at least one "
                        f"YFCC100M metadata file")
    return collect(_chunks(dataset, base_dir), data_dir=data_dir, dataset=dataset)
