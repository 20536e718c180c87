"""The loader's counts in metrics.jsonl, summed over all ranks.

Each batch carries batch["loader"] (int64, one entry per COUNTERS name) for the reads and replacements that
built it. The trainer hands every micro-batch to LoaderCounters.take (which removes the entry, so it never
reaches the model) and adds LoaderCounters.flush() to each metrics record: the counts of the micro-batches
since the previous record, and, for each epoch that ended since then, its totals in `data_epochs` (with
the samples the epoch could not use). After a mid-epoch resume an epoch's totals cover the resumed part.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

COUNTERS = ("skipped", "lost", "read_bytes", "read_shards", "read_samples")


class LoaderCounters:
    """Collects batch["loader"] counts; flush() is collective (every rank calls it at the same step)."""

    def __init__(self, *, unused_per_epoch: int):
        self.unused = unused_per_epoch
        self.interval = torch.zeros(len(COUNTERS), dtype=torch.int64)
        self.epoch: int | None = None
        self.epoch_total = torch.zeros(len(COUNTERS), dtype=torch.int64)
        self.finished: list[tuple[int, torch.Tensor]] = []

    def take(self, batch: dict, epoch: int) -> None:
        """Count one micro-batch of data epoch `epoch` and drop its counts from the batch."""
        counts = batch.pop("loader")
        if self.epoch is not None and epoch != self.epoch:
            self.finished.append((self.epoch, self.epoch_total))
            self.epoch_total = torch.zeros(len(COUNTERS), dtype=torch.int64)
        self.epoch = epoch
        self.interval += counts
        self.epoch_total += counts

    def flush(self, device: torch.device | str = "cpu") -> dict:
        """The counts since the last flush (+ finished epochs' totals), over all ranks; then zero."""
        values = torch.cat([self.interval, *(t for _, t in self.finished)]).to(device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(values)
        values = values.cpu().view(-1, len(COUNTERS)).tolist()
        record = dict(zip(COUNTERS, values[0]))
        if self.finished:
            record["data_epochs"] = [{"epoch": e, **dict(zip(COUNTERS, v)), "unused": self.unused}
                                     for (e, _), v in zip(self.finished, values[1:])]
        self.interval = torch.zeros(len(COUNTERS), dtype=torch.int64)
        self.finished = []
        return record
