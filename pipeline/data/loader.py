"""Training batches from the webdataset shards a data stage listed in data/NAME/stats.json.

Why it is built this way:
- One epoch is one deterministic stream of raw samples: shard order permuted and a shuffle buffer,
  both from (seed, epoch). Global batch b is stream items [b*N, (b+1)*N) with N = per-rank batch x
  ranks; rank r takes rows [r*m, (r+1)*m) of it. Reading a raw sample costs only tar I/O, so every
  reader walks the whole stream and decodes just its own rows: any number of ranks and workers works
  with any number of shards (6 demo shards, 8 workers: no idle worker holds a rank back).
- Worker w of a rank builds batches start+w, start+w+W, ...; the DataLoader takes them round-robin,
  so batches arrive in order whatever W is.
- Augmentation randomness is seeded per sample from (seed, epoch, stream index), so a batch is a pure
  function of (seed, epoch, batch index): resuming at a checkpoint's (epoch, batch) gives the very
  batches an uninterrupted run would have seen, with any worker count. The caller's torch/python RNG
  states are restored after each batch, so the loader never disturbs the training RNG.
- A sample whose image does not decode is replaced by a copy of a good sample of the same local batch
  and counted (batch["skipped"]), which keeps batch shapes equal on every rank (gathers need that).
  Samples without an image or caption and unreadable shards are skipped by every reader alike.
At cluster scale each reader reading every shard multiplies I/O by ranks x workers: there, `resampled`
(stage.resampled_shards) gives every rank and worker its own stream of whole shards drawn with
replacement (as open_clip's --dataset-resampled), still a pure function of (seed, epoch, batch index)
for a fixed number of ranks and workers.
"""
from __future__ import annotations

import io
import itertools
import json
import random
import tarfile
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset import tariterators

from ..errors import UserError

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def read_stats(path: str | Path) -> tuple[list[Path], int]:
    """(shard paths, sample count) from an image_text stats.json; the count is the loader's truth."""
    shards, samples, _ = read_stats_counts(path)
    return shards, samples


def read_stats_counts(path: str | Path) -> tuple[list[Path], int, list[int]]:
    """(shard paths, sample count, samples per shard) from an image_text stats.json."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: training data stats not found (run the data stage first)")
    try:
        stats = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if stats.get("kind") != "image_text":
        raise UserError(f"{path}: kind: expected 'image_text', got {stats.get('kind')!r}")
    samples = stats.get("samples")
    if not isinstance(samples, int) or samples < 1:
        raise UserError(f"{path}: samples: expected a positive integer, got {samples!r}")
    shards, counts = [], []
    for i, shard in enumerate(stats.get("shards") or []):
        shard_path = path.parent / shard["path"]
        if not shard_path.is_file():
            raise UserError(f"{path}: shards.{i}.path: {shard_path} does not exist")
        shards.append(shard_path)
        counts.append(int(shard.get("samples", 0)))
    if not shards:
        raise UserError(f"{path}: shards: no shards listed")
    return shards, samples, counts


def train_transform(*, image_size: int, augment) -> Callable:
    """open_clip's own train transform (image_transform + AugmentationCfg) for a stage's `augment` settings:
    RandomResizedCrop (bicubic), colour jitter with a probability, grayscale with a probability, CLIP mean/std."""
    from open_clip.transform import AugmentationCfg, image_transform

    cfg = AugmentationCfg(scale=tuple(augment.scale),
                          color_jitter=tuple(augment.color_jitter) if augment.color_jitter else None,
                          color_jitter_prob=augment.color_jitter_prob or None,
                          gray_scale_prob=augment.gray_scale_prob or None)
    with warnings.catch_warnings():  # open_clip lists the jitter/gray keys as "unused" while it applies them
        warnings.filterwarnings("ignore", message="Unused augmentation cfg items")
        return image_transform(image_size, is_train=True, aug_cfg=cfg)


def _mix(*numbers: int) -> int:
    """A 63-bit seed from several integers (stable across processes, unlike hash())."""
    value = 0x9E3779B97F4A7C15
    for n in numbers:
        value = (value ^ (n & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


def _raw_samples(shard: Path) -> Iterator[dict]:
    """Grouped raw samples of one tar ({__key__, jpg: bytes, txt: bytes, ...}); a truncated or
    corrupt shard ends early with a warning instead of stopping training."""
    try:
        with open(shard, "rb") as f:
            stream = tariterators.tar_file_expander([{"stream": f, "url": str(shard)}])
            for sample in tariterators.group_by_keys(stream):
                image_key = next((k for k in IMAGE_KEYS if k in sample), None)
                if image_key is not None and "txt" in sample:
                    yield {"image": sample[image_key], "txt": sample["txt"], "key": sample["__key__"]}
    except (tarfile.TarError, OSError, ValueError) as exc:
        warnings.warn(f"{shard}: unreadable from here on, rest of shard skipped ({exc})")


class ShardStream(IterableDataset):
    """Batches (dicts of tensors) of one rank for one epoch, starting at a given batch index."""

    def __init__(self, *, shards: list[Path], samples: int, batch_size: int, rank: int, world_size: int,
                 seed: int, image_transform: Callable, text_transform: Callable,
                 view_maker: Callable | None = None, caption_augmenter: Callable | None = None,
                 shuffle_buffer: int = 2000, resampled: bool = False, shard_counts: list[int] | None = None):
        self.shards, self.samples, self.batch_size = list(shards), samples, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.image_transform, self.text_transform = image_transform, text_transform
        self.view_maker, self.caption_augmenter = view_maker, caption_augmenter
        self.shuffle_buffer = shuffle_buffer
        self.resampled, self.shard_counts = resampled, list(shard_counts or [0] * len(self.shards))
        self.epoch, self.start_batch = 0, 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def batches_per_epoch(self) -> int:
        return self.samples // self.global_batch

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def raw_stream(self, epoch: int) -> Iterator[dict]:
        """The epoch's sample order: permuted shards through a seeded shuffle buffer."""
        rng = random.Random(_mix(self.seed, epoch, 1))
        order = list(self.shards)
        rng.shuffle(order)
        buffer: list[dict] = []
        for shard in order:
            for sample in _raw_samples(shard):
                buffer.append(sample)
                if len(buffer) >= self.shuffle_buffer:
                    i = rng.randrange(len(buffer))
                    buffer[i], buffer[-1] = buffer[-1], buffer[i]
                    yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.resampled:
            yield from self.resampled_batches(worker, workers)
            return
        group: list[dict] = []
        index = 0
        for sample in self.raw_stream(self.epoch):
            group.append(sample)
            if len(group) < self.global_batch:
                continue
            if index >= self.start_batch and (index - self.start_batch) % workers == worker:
                rows = group[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
                yield self.decode_batch(index, rows)
            group, index = [], index + 1
            if index >= self.batches_per_epoch():
                return

    def lane_samples(self, epoch: int, lane: int, skip: int) -> Iterator[dict]:
        """Resampled mode: one lane's endless stream of this rank's samples - shards drawn with
        replacement, each shuffled - starting `skip` samples in. Whole shards are skipped by their
        stats.json counts without being read, so resuming costs at most one shard read per lane."""
        misses = 0
        for k in itertools.count():
            rng = random.Random(_mix(self.seed, epoch, self.rank, lane, k, 3))
            i = rng.randrange(len(self.shards))
            if 0 < self.shard_counts[i] <= skip:
                skip -= self.shard_counts[i]
                continue
            samples = list(_raw_samples(self.shards[i]))
            misses = 0 if samples else misses + 1
            if misses > 100:
                raise UserError(f"training data: 100 shards in a row without a readable sample ({self.shards[i]})")
            rng.shuffle(samples)
            yield from samples[skip:]
            skip = max(0, skip - len(samples))

    def resampled_batches(self, worker: int, workers: int) -> Iterator[dict]:
        """Worker w builds batches start+w, start+w+W, ... from lane (start+w) mod W; a lane's stream
        depends only on (seed, epoch, rank, lane), so resuming with the same W gives the same batches."""
        first = self.start_batch + worker
        stream = self.lane_samples(self.epoch, first % workers, skip=(first // workers) * self.batch_size)
        for index in range(first, self.batches_per_epoch(), workers):
            yield self.decode_batch(index, list(itertools.islice(stream, self.batch_size)))

    def decode_batch(self, index: int, rows: list[dict]) -> dict:
        """Tensors of one local batch; RNG seeded per sample, caller's RNG states put back after."""
        torch_state, python_state = torch.get_rng_state(), random.getstate()
        try:
            return self._decode_rows(index, rows)
        finally:
            torch.set_rng_state(torch_state)
            random.setstate(python_state)

    def _decode_rows(self, index: int, rows: list[dict]) -> dict:
        images, views, captions, bad = [], [], [], []
        first_row = index * self.global_batch + self.rank * self.batch_size
        for j, raw in enumerate(rows):
            seed = _mix(self.seed, self.epoch, first_row + j)
            torch.default_generator.manual_seed(seed)  # CPU generator only: torch.manual_seed costs ~3 ms
            random.seed(seed)
            try:
                with Image.open(io.BytesIO(raw["image"])) as img:
                    img = img.convert("RGB")
            except Exception:  # PIL raises many types for corrupt bytes
                bad.append(raw["key"])
                continue
            images.append(self.image_transform(img))
            if self.view_maker is not None:
                views.append(self.view_maker(img))
            captions.append(raw["txt"].decode("utf-8", errors="replace").strip())
        if not images:
            raise UserError(f"training data: no decodable image in batch {index} of epoch {self.epoch} "
                            f"(keys {', '.join(bad[:3])}...)")
        for k in range(len(bad)):  # keep the batch shape: fill with copies of good rows
            images.append(images[k % len(captions)])
            captions.append(captions[k % len(captions)])
            if self.view_maker is not None:
                views.append(views[k % len(views)])
        torch.default_generator.manual_seed(_mix(self.seed, self.epoch, index, self.rank, 2))
        batch = {"image": torch.stack(images), "text": self.text_transform(captions),
                 "skipped": torch.tensor(len(bad))}
        if self.view_maker is not None:
            batch["views"] = torch.stack(views)
        if self.caption_augmenter is not None:
            batch["text_aug"] = self.text_transform(self.caption_augmenter(captions))
        return batch


class TrainLoader:
    """Epoch-by-epoch batches of one rank; `epoch(e, start)` resumes at any batch index."""

    def __init__(self, dataset: ShardStream, *, workers: int, pin_memory: bool = False):
        self.dataset, self.workers, self.pin_memory = dataset, workers, pin_memory

    @property
    def samples(self) -> int:
        return self.dataset.samples

    def batches_per_epoch(self) -> int:
        return self.dataset.batches_per_epoch()

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        self.dataset.set_position(epoch, start_batch)
        remaining = self.batches_per_epoch() - start_batch
        # no idle worker processes; resampled lanes are tied to the worker count, so it stays fixed
        workers = self.workers if self.dataset.resampled else max(0, min(self.workers, remaining))
        # An own generator: creating the iterator must not draw from torch's global RNG, which the
        # trainer checkpoints for patch and MLM masks (else a resumed run would see other masks).
        loader = DataLoader(self.dataset, batch_size=None, num_workers=workers, pin_memory=self.pin_memory,
                            persistent_workers=False, generator=torch.Generator())
        return iter(loader)


def build_train_loader(*, stats_path: str | Path, image_size: int, augment, text_transform: Callable,
                       batch_size: int, rank: int,
                       world_size: int, seed: int, workers: int, view_maker: Callable | None = None,
                       caption_augmenter: Callable | None = None, resampled: bool = False,
                       pin_memory: bool = False) -> TrainLoader:
    """A rank's loader; batch_size is per rank and per micro-batch; augment is a stage's `augment` section
    (scale, color_jitter, color_jitter_prob, gray_scale_prob). view_maker (PIL image ->
    [V, 3, H, W]) adds batch["views"]; caption_augmenter (captions -> captions) adds batch["text_aug"]
    (see pipeline.data.views for both)."""
    shards, samples, counts = read_stats_counts(stats_path)
    if samples < batch_size * world_size:
        raise UserError(f"{stats_path}: samples: {samples} is fewer than one global batch "
                        f"({batch_size * world_size})")
    dataset = ShardStream(shards=shards, samples=samples, batch_size=batch_size, rank=rank,
                          world_size=world_size, seed=seed, text_transform=text_transform,
                          image_transform=train_transform(image_size=image_size, augment=augment),
                          view_maker=view_maker, caption_augmenter=caption_augmenter, resampled=resampled,
                          shard_counts=counts)
    return TrainLoader(dataset, workers=workers, pin_memory=pin_memory)
