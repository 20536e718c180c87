"""Single samples read from the shards by byte range, with what that cost counted.

A reader asks for (shard, index in key order) and gets that sample's members with one positioned read.
The open files and indexes of the last `keep_open` shards are kept (a rank reads from one group of shards at
a time, two at a group boundary).
Counted, per reader: bytes read (sample data, plus index files or the header walk of a tar without one),
shard files opened, samples read, and samples lost - in a shard that is missing, cut short or damaged
since the data stage verified it. A lost sample is reported as None; the batch replaces it.
"""
from __future__ import annotations

import os
import tarfile
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .tarindex import build_index, read_index, sample_members

@dataclass
class ReadCounts:
    bytes_read: int = 0
    shards_opened: int = 0
    samples_read: int = 0
    samples_lost: int = 0

    def take(self) -> "ReadCounts":
        """The counts so far, then zero."""
        out = ReadCounts(self.bytes_read, self.shards_opened, self.samples_read, self.samples_lost)
        self.bytes_read = self.shards_opened = self.samples_read = self.samples_lost = 0
        return out


@dataclass
class _Open:
    fd: int | None
    ranges: np.ndarray
    warned: set = field(default_factory=set)


class SampleReader:
    """Reads samples of the listed shards; close() (or garbage collection) closes the files."""

    def __init__(self, shards: list[Path], *, keep_open: int):
        self.shards = [Path(s) for s in shards]
        self.keep_open = keep_open
        self.counts = ReadCounts()
        self._open: OrderedDict[int, _Open] = OrderedDict()

    def _shard(self, s: int) -> _Open:
        entry = self._open.get(s)
        if entry is not None:
            self._open.move_to_end(s)
            return entry
        path = self.shards[s]
        self.counts.shards_opened += 1
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            warnings.warn(f"{path}: cannot be opened, its samples are lost this epoch ({exc})")
            entry = _Open(None, np.zeros((0, 2), np.int64))
        else:
            entry = _Open(fd, self._ranges(path))
        self._open[s] = entry
        while len(self._open) > self.keep_open:
            _, old = self._open.popitem(last=False)
            if old.fd is not None:
                os.close(old.fd)
        return entry

    def _ranges(self, path: Path) -> np.ndarray:
        found = read_index(path)
        if found is not None:
            self.counts.bytes_read += found[1]
            return found[0]
        try:  # no index beside the tar (data from before indexes, or written by hand): walk its headers
            ranges = build_index(path, strict=False)
        except OSError:
            return np.zeros((0, 2), np.int64)
        self.counts.bytes_read += 512 * 3 * len(ranges)  # about: one header per member, three members per sample
        return ranges

    def read(self, s: int, index: int) -> tuple[bytes, dict[str, memoryview]] | None:
        """(key, extension -> data) of sample `index` of shard `s`; None if it cannot be read (counted lost)."""
        entry = self._shard(s)
        if index < len(entry.ranges) and entry.fd is not None:
            start, end = (int(v) for v in entry.ranges[index])
            try:
                data = bytearray(end - start)  # writable: tensors are made straight from it
                got = os.preadv(entry.fd, [data], start)
                self.counts.bytes_read += got
                if got == end - start:
                    key, members = sample_members(data, start)
                    self.counts.samples_read += 1
                    return key, members
                problem = "cut short"
            except (OSError, tarfile.TarError) as exc:
                problem = str(exc)
        else:
            problem = "fewer samples than stats.json lists" if entry.fd is not None else "not readable"
        self.counts.samples_lost += 1
        if problem not in entry.warned:
            entry.warned.add(problem)
            warnings.warn(f"{self.shards[s]}: sample {index} unreadable ({problem}); such samples are replaced "
                          f"and counted as lost")
        return None

    def close(self) -> None:
        for entry in self._open.values():
            if entry.fd is not None:
                os.close(entry.fd)
        self._open.clear()

    def __del__(self):
        self.close()
