"""pipeline.data.loader: deterministic, resumable, rank/worker-split batches from webdataset shards."""
from __future__ import annotations

import json

import pytest
import torch

from _train_fixtures import augment, write_shards
from pipeline.data.loader import build_train_loader, read_stats
from pipeline.errors import UserError
from pipeline.reduction.text import build_text_transform


def loader(stats, *, batch_size=4, rank=0, world_size=1, workers=0, seed=0):
    return build_train_loader(stats_path=stats, image_size=12,
                              augment=augment(scale=[0.5, 1.0], color_jitter=[0.2, 0.2, 0.2, 0.05],
                                              color_jitter_prob=0.8, gray_scale_prob=0.2),
                              text_transform=build_text_transform("truncate", 10), batch_size=batch_size,
                              rank=rank, world_size=world_size, seed=seed, workers=workers)


def collect(it):
    return [(b["image"], b["text"]) for b in it]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("data") / "tiny", shards=3, per_shard=10)


def test_counts_come_from_stats(stats):
    shards, samples = read_stats(stats)
    assert (len(shards), samples) == (3, 30)
    data = loader(stats, batch_size=4)
    assert data.batches_per_epoch() == 7  # 30 // 4, last partial batch dropped
    batches = collect(data.epoch(0))
    assert len(batches) == 7
    assert batches[0][0].shape == (4, 3, 12, 12) and batches[0][1].shape == (4, 10)


def test_deterministic_and_resumes_mid_epoch_with_any_worker_count(stats):
    full = collect(loader(stats).epoch(1))
    assert same(full, collect(loader(stats).epoch(1)))
    assert same(full[3:], collect(loader(stats).epoch(1, start_batch=3)))
    # more workers than shards: batches still all arrive, in order, identical
    assert same(full, collect(loader(stats, workers=4).epoch(1)))
    assert same(full[5:], collect(loader(stats, workers=2).epoch(1, start_batch=5)))
    assert not same(full, collect(loader(stats).epoch(2)))  # a new epoch reshuffles
    assert not same(full, collect(loader(stats, seed=1).epoch(1)))


def test_ranks_split_the_global_batch(stats):
    single = collect(loader(stats, batch_size=6).epoch(0))
    halves = [collect(loader(stats, batch_size=3, rank=r, world_size=2).epoch(0)) for r in range(2)]
    assert len(halves[0]) == len(halves[1]) == len(single) == 5
    for i, (image, text) in enumerate(single):
        assert torch.equal(image, torch.cat([halves[0][i][0], halves[1][i][0]]))
        assert torch.equal(text, torch.cat([halves[0][i][1], halves[1][i][1]]))


def test_undecodable_images_are_counted_not_fatal(tmp_path):
    stats = write_shards(tmp_path / "bad", shards=2, per_shard=8, corrupt=("000000003", "000010005"))
    batches = list(loader(stats, batch_size=4).epoch(0))
    assert sum(int(b["skipped"]) for b in batches) == 2
    assert all(b["image"].shape[0] == 4 and b["text"].shape[0] == 4 for b in batches)


def test_truncated_shard_is_skipped_with_a_warning(tmp_path):
    stats = write_shards(tmp_path / "trunc", shards=2, per_shard=8)
    shard = tmp_path / "trunc" / "shards" / "00001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.warns(UserWarning, match="00001.tar"):
        batches = list(loader(stats, batch_size=4).epoch(0))
    assert 2 <= len(batches) < 4


def test_bad_stats_name_file_and_field(tmp_path):
    stats = write_shards(tmp_path / "missing", shards=2, per_shard=4)
    (tmp_path / "missing" / "shards" / "00001.tar").unlink()
    with pytest.raises(UserError, match=r"stats.json: shards.1.path"):
        read_stats(stats)
    raw = json.loads(stats.read_text())
    stats.write_text(json.dumps(dict(raw, kind="classification")))
    with pytest.raises(UserError, match="kind"):
        read_stats(stats)


def test_method_hooks_add_views_and_augmented_captions(stats):
    from pipeline.data.views import CaptionAugmenter, ViewMaker

    def hooked(workers):
        return build_train_loader(stats_path=stats, image_size=12, augment=augment(scale=[0.5, 1.0]),
                                  text_transform=build_text_transform("truncate", 10), batch_size=4, rank=0,
                                  world_size=1, seed=0, workers=workers,
                                  view_maker=ViewMaker(views=2, image_size=12),
                                  caption_augmenter=CaptionAugmenter(alpha=0.5))

    a, b = list(hooked(0).epoch(0, start_batch=5)), list(hooked(2).epoch(0, start_batch=5))
    assert a[0]["views"].shape == (4, 2, 3, 12, 12) and a[0]["text_aug"].shape == (4, 10)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in ("image", "views", "text", "text_aug"))
    assert not torch.equal(a[0]["views"][:, 0], a[0]["views"][:, 1])


def test_resampled_shards_resume_exactly_and_ranks_read_their_own_shards(stats):
    def resampled(rank=0, workers=2):
        return build_train_loader(stats_path=stats, image_size=12, augment=augment(scale=[0.5, 1.0]),
                                  text_transform=build_text_transform("truncate", 10), batch_size=4, rank=rank,
                                  world_size=2, seed=0, workers=workers, resampled=True)

    full = collect(resampled().epoch(0))
    assert len(full) == 30 // 8
    assert same(full[1:], collect(resampled().epoch(0, start_batch=1)))
    assert same(full[2:], collect(resampled().epoch(0, start_batch=2)))
    assert not same(full, collect(resampled(rank=1).epoch(0)))
    assert not same(full, collect(resampled().epoch(1)))
