"""The url list every image_text reader produces for img2dataset: url, caption, key (+ reader extras).

Small lists land in data/NAME/source/urls.parquet; long ones are split into data/NAME/source/urls/
part-NNNNN.parquet (img2dataset reads a folder of parquet files in name order and loads one file at a
time, so the parts bound its memory). A part holds a whole number of shards, so only the last shard of
the last part is partial and shard ids match img2dataset's numbering across parts.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

URL_FILE = Path("source") / "urls.parquet"
URL_DIR = Path("source") / "urls"
TARGET_PART_ROWS = 1_000_000


@dataclass(frozen=True)
class UrlList:
    """What an image_text reader hands to img2dataset: a parquet file or a folder of parts."""
    path: Path
    parts: tuple[int, ...]  # rows per part file, in name order
    extra_columns: tuple[str, ...] = ()  # saved by img2dataset into each sample's .json

    @property
    def rows(self) -> int:
        return sum(self.parts)


def url_table(urls: Sequence[str], captions: Sequence[str], keys: Sequence[str] | None = None,
              subset: int | None = None) -> pa.Table:
    """One table in the url-list layout; `subset` keeps the first N rows (the dataset's subset key)."""
    if keys is None:
        keys = [f"{i:09d}" for i in range(len(urls))]
    table = pa.table({"url": pa.array(list(urls), pa.string()),
                      "caption": pa.array(list(captions), pa.string()),
                      "key": pa.array(list(keys), pa.string())})
    return table.slice(0, subset) if subset is not None else table


class UrlListWriter:
    """Collect reader output chunk by chunk, cut it into parts, stop at `subset`, place it atomically."""

    def __init__(self, data_dir: str | Path, *, samples_per_shard: int, subset: int | None = None,
                 target_part_rows: int | None = None):
        self.data_dir = Path(data_dir)
        (self.data_dir / "source").mkdir(parents=True, exist_ok=True)
        target = TARGET_PART_ROWS if target_part_rows is None else target_part_rows
        self.part_rows = samples_per_shard * max(1, target // samples_per_shard)
        self.subset = subset
        self.tmp = Path(tempfile.mkdtemp(prefix=".urls.", dir=self.data_dir / "source"))
        self.tmp.chmod(0o755)  # mkdtemp makes it private; it becomes source/urls when there are parts
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.parts: list[int] = []
        self.schema: pa.Schema | None = None

    @property
    def rows(self) -> int:
        return sum(self.parts) + self.pending_rows

    @property
    def full(self) -> bool:
        return self.subset is not None and self.rows >= self.subset

    def add(self, table: pa.Table) -> bool:
        """Append rows (url, caption, key [, extras]); returns False once `subset` rows are in (stop reading)."""
        if self.full:
            return False
        table = table.filter(pc.not_equal(pc.fill_null(table["url"], ""), ""))  # nothing to fetch: drop
        if self.subset is not None:
            table = table.slice(0, self.subset - self.rows)
        if self.schema is None:
            self.schema = table.schema
        self.pending.append(table.cast(self.schema))
        self.pending_rows += table.num_rows
        while self.pending_rows >= self.part_rows:
            self._flush(self.part_rows)
        return not self.full

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self.pending)
        pq.write_table(table.slice(0, rows), self.tmp / f"part-{len(self.parts):05d}.parquet")
        self.parts.append(rows)
        if rows == self.part_rows:  # progress for long lists: one line per full part
            print(f"url list: {sum(self.parts)} rows in {len(self.parts)} parts so far", flush=True)
        rest = table.slice(rows)
        self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> UrlList:
        """Write what is left and move the list into place (replacing any earlier one)."""
        if self.pending_rows or not self.parts:
            if self.schema is None:
                self.pending, self.schema = [url_table([], [])], url_table([], []).schema
            self._flush(self.pending_rows)
        for old in (self.data_dir / URL_FILE, self.data_dir / URL_DIR):
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
        if len(self.parts) == 1:
            final = self.data_dir / URL_FILE
            (self.tmp / "part-00000.parquet").replace(final)
            self.tmp.rmdir()
        else:
            final = self.data_dir / URL_DIR
            self.tmp.replace(final)
        extras = tuple(c for c in self.schema.names if c not in ("url", "caption", "key"))
        return UrlList(final, tuple(self.parts), extras)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def collect(chunks: Iterable[pa.Table], *, data_dir: str | Path, dataset) -> UrlList:
    """Drain a reader's chunks into the url list, honouring the dataset's subset (stops reading early)."""
    writer = UrlListWriter(data_dir, samples_per_shard=dataset.img2dataset.samples_per_shard,
                           subset=dataset.subset)
    try:
        for table in chunks:
            if not writer.add(table):
                break
        return writer.close()
    except BaseException:
        writer.abort()
        raise
