"""Training batches from the webdataset shards a data stage listed in data/NAME/stats.json.

One mode at every scale (docs/training.md, "Data"), and why:
- Epoch e has one order of all samples, the same everywhere (pipeline.data.order: shards permuted from
  (seed, epoch), cut into groups of `shuffle_shards`, each group's samples permuted). Global batch b is
  positions [b*G, (b+1)*G), G = per-rank batch x ranks; rank r takes rows [r*B, (r+1)*B); worker w of the
  rank's W builds batches start+w, start+w+W, ... and the DataLoader takes them round-robin, in order.
- Each reader fetches only its own rows, one positioned read per sample from the shard's index
  (pipeline.data.samples), so across all ranks and workers each sample's bytes are read once per epoch, with
  any number of shards (fewer than readers too) and any shard sizes.
- Batches per epoch = samples // G from stats.json, equal on every rank. The last samples % G positions of
  the epoch's order (fewer than one global batch; other samples each epoch) are not used, and counted.
- A batch is a pure function of (seed, epoch, batch index); the number of ranks and workers only splits it.
  A run resumed at (epoch, batch) gets the batches an uninterrupted run would have seen, also at another
  world size: nothing repeated, nothing skipped.
- Augmentation is seeded per sample from (seed, epoch, position), so it too ignores the layout; the caller's
  torch/python RNG states are restored after each batch, so the loader never disturbs the training RNG.
- A sample whose image does not decode (`skipped`) or that its shard no longer holds (`lost`: missing, cut
  short or damaged since the data stage) is replaced by a copy of a good sample of the same local batch,
  which keeps batch shapes equal on every rank (gathers need that); both are counted in metrics.jsonl.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import UserError
from .counters import COUNTERS, LoaderCounters  # noqa: F401  (LoaderCounters: re-exported for the trainer)
from .images import TrainImages
from .order import EpochOrder
from .samples import SampleReader
from .tarindex import IMAGE_EXTENSIONS

CAPTIONS = ("txt", "title_or_description")  # stats.json `caption`: how a sample's caption is formed


@dataclass(frozen=True)
class TrainData:
    """What the loader takes from an image_text stats.json."""
    shards: tuple[Path, ...]
    counts: tuple[int, ...]
    samples: int
    caption: str = "txt"


def read_train_data(path: str | Path) -> TrainData:
    """Shards, per-shard sample counts and the caption rule of an image_text stats.json (the loader's truth)."""
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
    caption = stats.get("caption", "txt")
    if caption not in CAPTIONS:
        raise UserError(f"{path}: caption: expected one of {', '.join(CAPTIONS)}, got {caption!r}")
    shards, counts = [], []
    for i, shard in enumerate(stats.get("shards") or []):
        shard_path = path.parent / shard["path"]
        if not shard_path.is_file():
            raise UserError(f"{path}: shards.{i}.path: {shard_path} does not exist")
        count = shard.get("samples")
        if not isinstance(count, int) or count < 1:
            raise UserError(f"{path}: shards.{i}.samples: expected a positive integer, got {count!r}")
        shards.append(shard_path)
        counts.append(count)
    if not shards:
        raise UserError(f"{path}: shards: no shards listed")
    if sum(counts) != samples:
        raise UserError(f"{path}: samples: {samples}, but the shards list {sum(counts)}")
    return TrainData(tuple(shards), tuple(counts), samples, caption)


def read_stats(path: str | Path) -> tuple[list[Path], int]:
    """(shard paths, sample count) from an image_text stats.json."""
    data = read_train_data(path)
    return list(data.shards), data.samples


def train_transform(*, image_size: int, augment) -> Callable:
    """open_clip's own train transform (image_transform + AugmentationCfg) for a stage's `augment` settings:
    RandomResizedCrop (bicubic), colour jitter with a probability, grayscale with a probability, CLIP mean/std;
    an optional horizontal flip after the crop (open_clip's has none). The loader computes it with pipeline.data.images.TrainImages (same distribution, less cost)."""
    import warnings

    from open_clip.transform import AugmentationCfg, image_transform
    from torchvision import transforms

    cfg = AugmentationCfg(scale=tuple(augment.scale),
                          color_jitter=tuple(augment.color_jitter) if augment.color_jitter else None,
                          color_jitter_prob=augment.color_jitter_prob or None,
                          gray_scale_prob=augment.gray_scale_prob or None)
    with warnings.catch_warnings():  # open_clip lists the jitter/gray keys as "unused" while it applies them
        warnings.filterwarnings("ignore", message="Unused augmentation cfg items")
        reference = image_transform(image_size, is_train=True, aug_cfg=cfg)
    if augment.hflip_prob:  # right after the crop, as timm places it
        reference.transforms.insert(1, transforms.RandomHorizontalFlip(augment.hflip_prob))
    return reference


def _mix(*numbers: int) -> int:
    """A 63-bit seed from several integers (stable across processes, unlike hash())."""
    value = 0x9E3779B97F4A7C15
    for n in numbers:
        value = (value ^ (n & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


def pick_caption(members: dict, rule: str, seed: int) -> str:
    """The sample's caption: its .txt, or (title_or_description, YFCC15M as SLIP trains on it) the title or
    the description from its .json, 50/50 per sample and epoch from `seed`; when one is empty the other."""
    if rule == "title_or_description" and "json" in members:
        meta = json.loads(bytes(members["json"]))
        choices = [t for t in (meta.get("title") or "", meta.get("description") or "") if t.strip()]
        if choices:
            return choices[seed & 1 if len(choices) == 2 else 0].strip()
    return bytes(members.get("txt", b"")).decode("utf-8", errors="replace").strip()


class ShardStream(IterableDataset):
    """Batches (dicts of tensors) of one rank for one epoch, starting at a given batch index."""

    def __init__(self, *, data: TrainData, batch_size: int, rank: int, world_size: int, seed: int,
                 shuffle_shards: int, images: TrainImages, text_transform: Callable,
                 view_maker: Callable | None = None, caption_augmenter: Callable | None = None):
        self.data, self.batch_size, self.rank, self.world_size = data, batch_size, rank, world_size
        self.seed, self.shuffle_shards = seed, shuffle_shards
        self.images, self.text_transform = images, text_transform
        self.view_maker, self.caption_augmenter = view_maker, caption_augmenter
        self.epoch, self.start_batch = 0, 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def batches_per_epoch(self) -> int:
        return self.data.samples // self.global_batch

    def unused_per_epoch(self) -> int:
        return self.data.samples - self.batches_per_epoch() * self.global_batch

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def order(self, epoch: int) -> EpochOrder:
        return EpochOrder(self.data.counts, seed=self.seed, epoch=epoch, shuffle_shards=self.shuffle_shards)

    def positions(self, index: int) -> range:
        """This rank's positions of global batch `index` in the epoch's order."""
        first = index * self.global_batch + self.rank * self.batch_size
        return range(first, first + self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # a rank's rows of one batch lie in one group of shards, or two at a boundary: keep both open
        order, reader = self.order(self.epoch), SampleReader(list(self.data.shards), keep_open=2 * self.shuffle_shards)
        try:
            for index in range(self.start_batch + worker, self.batches_per_epoch(), workers):
                rows = self.positions(index)
                shards, indices = order.rows(rows.start, rows.stop)
                yield self.decode_batch(index, rows, shards.tolist(), indices.tolist(), reader)
        finally:
            reader.close()

    def decode_batch(self, index: int, rows: range, shards: list[int], indices: list[int],
                     reader: SampleReader) -> dict:
        """Tensors of one local batch; RNG seeded per sample, caller's RNG states put back after."""
        torch_state, python_state = torch.get_rng_state(), random.getstate()
        try:
            return self._decode_rows(index, rows, shards, indices, reader)
        finally:
            torch.set_rng_state(torch_state)
            random.setstate(python_state)

    def _decode_rows(self, index: int, rows: range, shards: list[int], indices: list[int],
                     reader: SampleReader) -> dict:
        buffer = self.images.buffer(len(rows))
        good, captions, views, skipped, lost, where = [], [], [], 0, 0, set()
        for position, s, i in zip(rows, shards, indices):
            seed = _mix(self.seed, self.epoch, position)
            sample = reader.read(s, i)
            if sample is None:
                lost += 1
                where.add(str(self.data.shards[s]))
                continue
            key, members = sample
            image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
            torch.default_generator.manual_seed(seed)  # CPU generator only: torch.manual_seed costs ~3 ms
            if self.images.uses_python_random:
                random.seed(seed)
            try:
                full = self.images.decode(image, buffer[len(good)], keep_full=self.view_maker is not None)
            except Exception:  # PIL raises many types for corrupt bytes; a missing image is a TypeError
                skipped += 1
                where.add(f"{self.data.shards[s]} key {key.decode(errors='replace')}")
                continue
            if self.view_maker is not None:
                views.append(self.view_maker(full))
            caption = pick_caption(members, self.data.caption, _mix(self.seed, self.epoch, position, 4))
            if self.caption_augmenter is not None:
                torch.default_generator.manual_seed(_mix(self.seed, self.epoch, position, 2))
                caption = (caption, self.caption_augmenter([caption])[0])
            good.append(position)
            captions.append(caption)
        if not good:
            raise UserError(f"training data: no readable, decodable image in batch {index} of epoch {self.epoch} "
                            f"({', '.join(sorted(where)[:3])})")
        n = len(good)
        for k in range(len(rows) - n):  # keep the batch shape: fill with copies of good rows
            buffer[n + k] = buffer[k % n]
            captions.append(captions[k % n])
            if views:
                views.append(views[k % n])
        texts = [c[0] for c in captions] if self.caption_augmenter is not None else captions
        read = reader.counts.take()
        counts = {"skipped": skipped, "lost": lost, "read_bytes": read.bytes_read,
                  "read_shards": read.shards_opened, "read_samples": read.samples_read}
        batch = {"image": buffer, "text": self.text_transform(texts),
                 "loader": torch.tensor([counts[k] for k in COUNTERS], dtype=torch.int64)}
        if views:
            batch["views"] = torch.stack(views)
        if self.caption_augmenter is not None:
            batch["text_aug"] = self.text_transform([c[1] for c in captions])
        return batch


class TrainLoader:
    """Epoch-by-epoch batches of one rank; `epoch(e, start)` resumes at any batch index."""

    def __init__(self, dataset: ShardStream, *, workers: int, pin_memory: bool = False,
                 device: torch.device | str = "cpu"):
        self.dataset, self.workers, self.pin_memory, self.device = dataset, workers, pin_memory, torch.device(device)

    @property
    def samples(self) -> int:
        return self.dataset.data.samples

    def batches_per_epoch(self) -> int:
        return self.dataset.batches_per_epoch()

    def unused_per_epoch(self) -> int:
        return self.dataset.unused_per_epoch()

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        self.dataset.set_position(epoch, start_batch)
        if start_batch and self.dataset.rank == 0:
            print(f"loader: epoch {epoch} resumes at batch {start_batch}; batches do not depend on the number of "
                  f"ranks ({self.dataset.world_size} now) or workers, so nothing is repeated or skipped", flush=True)
        remaining = self.batches_per_epoch() - start_batch
        # An own generator: creating the iterator must not draw from torch's global RNG, which the
        # trainer checkpoints for patch and MLM masks (else a resumed run would see other masks).
        loader = DataLoader(self.dataset, batch_size=None, num_workers=max(0, min(self.workers, remaining)),
                            pin_memory=self.pin_memory, persistent_workers=False, generator=torch.Generator())
        return (self.finish(batch) for batch in loader)

    def finish(self, batch: dict) -> dict:
        """The batch on the training device, images normalised there (they cross from the workers as uint8);
        the loader's counts stay on the CPU (counting them then needs no device sync)."""
        batch = {k: v if k == "loader" else v.to(self.device, non_blocking=True) for k, v in batch.items()}
        batch["image"] = self.dataset.images.normalize(batch["image"], self.device)
        return batch


def build_train_loader(*, stats_path: str | Path, image_size: int, augment, text_transform: Callable,
                       batch_size: int, rank: int, world_size: int, seed: int, workers: int,
                       shuffle_shards: int, view_maker: Callable | None = None,
                       caption_augmenter: Callable | None = None, pin_memory: bool = False,
                       device: torch.device | str = "cpu") -> TrainLoader:
    """A rank's loader; batch_size is per rank and per micro-batch; augment is a stage's `augment` section
    (scale, color_jitter, color_jitter_prob, gray_scale_prob); shuffle_shards is the stage's. view_maker
    (PIL image -> [V, 3, H, W]) adds batch["views"]; caption_augmenter (captions -> captions) adds
    batch["text_aug"] (see pipeline.data.views for both). batch["loader"] holds the COUNTERS. Batches arrive on
    `device` (the images normalised there)."""
    data = read_train_data(stats_path)
    if data.samples < batch_size * world_size:
        raise UserError(f"{stats_path}: samples: {data.samples} is fewer than one global batch "
                        f"({batch_size * world_size})")
    images = TrainImages(train_transform(image_size=image_size, augment=augment))
    dataset = ShardStream(data=data, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed,
                          shuffle_shards=shuffle_shards, images=images, text_transform=text_transform,
                          view_maker=view_maker, caption_augmenter=caption_augmenter)
    loader = TrainLoader(dataset, workers=workers, pin_memory=pin_memory, device=device)
    if rank == 0:
        print(f"loader: {data.samples} samples in {len(data.shards)} shards, {loader.batches_per_epoch()} batches "
              f"of {batch_size * world_size} per epoch ({world_size} ranks x {max(1, workers)} readers each), "
              f"{loader.unused_per_epoch()} unused per epoch", flush=True)
    return loader
