"""One epoch's order of all training samples, the same for every rank, worker and world size.

Position p (0 <= p < samples) of epoch e names one sample (shard, index in the shard's key order). The shards
are permuted from (seed, epoch) and cut into groups of `shuffle_shards` consecutive shards; the samples of a
group are permuted as one (from seed, epoch, group). A global batch is thus a random draw from one group
(or two at a boundary), whatever the shard sizes, and a rank reads from a handful of files at a time.

Only the shard sample counts (stats.json) enter, never the files, so the order of a whole epoch - and any
mid-epoch position - is known without reading data: that is what lets each reader fetch only its own rows
and a resumed run start at its batch directly. numpy is pinned (requirements.txt): its Generator streams
are stable for a given version.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


class EpochOrder:
    """position -> (shard, index); rows(start, stop) gives a run of positions as two int64 arrays."""

    def __init__(self, counts: list[int] | np.ndarray, *, seed: int, epoch: int, shuffle_shards: int):
        counts = np.asarray(counts, dtype=np.int64)
        self.seed, self.epoch = int(seed), int(epoch)
        self.shards = np.random.default_rng([self.seed, self.epoch, 1]).permutation(len(counts))
        self.groups = [self.shards[g:g + shuffle_shards] for g in range(0, len(counts), shuffle_shards)]
        sizes = np.array([counts[g].sum() for g in self.groups], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])  # group g holds positions [starts[g], starts[g+1])
        self.samples = int(self.starts[-1])
        self._counts = counts
        self._members = lru_cache(maxsize=4)(self._group_members)

    def _group_members(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        """Group g's permuted samples as (shard, index) arrays."""
        shards = self.groups[g]
        sizes = self._counts[shards]
        order = np.random.default_rng([self.seed, self.epoch, 2, g]).permutation(int(sizes.sum()))
        bounds = np.cumsum(sizes)
        which = np.searchsorted(bounds, order, side="right")
        index = order - (bounds[which] - sizes[which])
        return shards[which].astype(np.int64), index.astype(np.int64)

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard, index) of positions start .. stop-1."""
        if not 0 <= start <= stop <= self.samples:
            raise IndexError(f"positions {start}..{stop} outside the epoch's {self.samples} samples")
        shards, index = [], []
        g = int(np.searchsorted(self.starts, start, side="right")) - 1
        p = start
        while p < stop:
            begin, end = int(self.starts[g]), int(self.starts[g + 1])
            take = min(stop, end)
            s, i = self._members(g)
            shards.append(s[p - begin:take - begin])
            index.append(i[p - begin:take - begin])
            p, g = take, g + 1
        if not shards:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(shards), np.concatenate(index)
