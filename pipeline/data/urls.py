"""The url list every image_text reader produces for img2dataset: url, caption, key (+ reader extras).

Small lists land in data/NAME/source/urls.parquet; long ones are split into data/NAME/source/urls/
part-NNNNN.parquet (img2dataset reads a folder of parquet files in name order and loads one file at a
time, so the parts bound its memory). A part holds a whole number of shards, so only the last shard of
the last part is partial and shard ids match img2dataset's numbering across parts.

Every input row is accounted for: a row left out (by the reader, or here for an empty url or caption or a
repeated key) is counted by reason, and stats.json reports samples + failed = input rows.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

URL_FILE = Path("source") / "urls.parquet"
URL_DIR = Path("source") / "urls"
TARGET_PART_ROWS = 1_000_000


@dataclass(frozen=True)
class UrlList:
    """What an image_text reader hands to img2dataset: a parquet file or a folder of parts, and the input rows
    the reader left out, by reason (they enter stats.json's `failed`: samples + failed = input rows)."""
    path: Path
    parts: tuple[int, ...]  # rows per part file, in name order
    extra_columns: tuple[str, ...] = ()  # saved by img2dataset into each sample's .json
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.parts)

    @property
    def input_rows(self) -> int:
        return self.rows + sum(self.dropped.values())


class KeySet:
    """Keys seen so far, as sorted int64 runs (an all-digit key is its number, others a stable 64-bit
    blake2b digest): about 8 bytes a key, so LAION-400M's 400M SAMPLE_IDs fit in ~3 GB. Runs of similar
    size are merged (log-structured), so adding n keys costs O(n log n)."""

    def __init__(self):
        self.runs: list[np.ndarray] = []

    @staticmethod
    def codes(keys: list[str]) -> np.ndarray:
        if all(k.isdigit() and len(k) < 19 for k in keys):
            return np.array([int(k) for k in keys], dtype=np.int64)
        return np.array([int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little", signed=True)
                         for k in keys], dtype=np.int64)

    def first_time(self, keys: list[str]) -> np.ndarray:
        """Mask of the keys not seen before (the first of repeats within `keys` counts as new); adds them."""
        codes = self.codes(keys)
        new = np.zeros(len(codes), dtype=bool)
        new[np.unique(codes, return_index=True)[1]] = True
        for run in self.runs:
            found = np.searchsorted(run, codes).clip(max=len(run) - 1)
            new &= run[found] != codes
        if new.any():
            self.runs.append(np.sort(codes[new]))
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            self.runs[-2:] = [np.sort(np.concatenate(self.runs[-2:]))]
        return new


def url_table(urls: Sequence[str], captions: Sequence[str], keys: Sequence[str] | None = None,
              subset: int | None = None, first_row: int = 0) -> pa.Table:
    """One table in the url-list layout; without keys, a row's key is its position in the whole list
    (first_row = this table's first position); `subset` keeps the first N rows (the dataset's subset key)."""
    if keys is None:
        keys = [f"{i:09d}" for i in range(first_row, first_row + len(urls))]
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
        self.dropped: dict[str, int] = {}
        self.keys = KeySet()

    @property
    def rows(self) -> int:
        return sum(self.parts) + self.pending_rows

    @property
    def full(self) -> bool:
        return self.subset is not None and self.rows >= self.subset

    def add(self, chunk: pa.Table | dict[str, int]) -> bool:
        """Append rows (url, caption, key [, extras] [, drop]); returns False once `subset` rows are in (stop
        reading). Left out and counted by reason: rows whose `drop` column (a reader's) names a reason, then
        rows with an empty url (empty_url), an empty caption (missing_caption), a key seen before
        (duplicate_key). A dict chunk counts rows a reader left out without passing them (reason -> count)."""
        if self.full:
            return False
        if isinstance(chunk, dict):
            for reason, count in chunk.items():
                self.dropped[reason] = self.dropped.get(reason, 0) + int(count)
            return True
        table = chunk
        reasons = self._reasons(table)
        kept = np.array([r is None for r in reasons], dtype=bool)
        if self.subset is not None and kept.sum() > self.subset - self.rows:  # stop after the last row wanted
            cut = int(np.flatnonzero(kept)[self.subset - self.rows - 1]) + 1
            table, reasons, kept = table.slice(0, cut), reasons[:cut], kept[:cut]
        for reason in reasons:
            if reason is not None:
                self.dropped[reason] = self.dropped.get(reason, 0) + 1
        table = table.filter(pa.array(kept))
        if "drop" in table.column_names:
            table = table.drop_columns(["drop"])
        if self.schema is None:
            self.schema = table.schema
        self.pending.append(table.cast(self.schema))
        self.pending_rows += table.num_rows
        while self.pending_rows >= self.part_rows:
            self._flush(self.part_rows)
        return not self.full

    def _reasons(self, table: pa.Table) -> list[str | None]:
        """Per row: why it is left out, or None."""
        reasons = table["drop"].to_pylist() if "drop" in table.column_names else [None] * table.num_rows
        for column, reason in (("url", "empty_url"), ("caption", "missing_caption")):
            blank = pc.equal(pc.utf8_trim_whitespace(pc.fill_null(table[column], "")), "").to_numpy(False)
            for i in np.flatnonzero(blank):
                reasons[i] = reasons[i] or reason
        open_rows = [i for i, r in enumerate(reasons) if r is None]
        keys = table["key"].to_pylist()
        for i, new in zip(open_rows, self.keys.first_time([str(keys[i]) for i in open_rows])):
            if not new:
                reasons[i] = "duplicate_key"
        return reasons

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
        return UrlList(final, tuple(self.parts), extras, dict(sorted(self.dropped.items())))

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def collect(chunks: Iterable[pa.Table | dict[str, int]], *, data_dir: str | Path, dataset) -> UrlList:
    """Drain a reader's chunks (tables, or reason -> count of rows left out) into the url list, honouring
    the dataset's subset (stops reading early)."""
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
