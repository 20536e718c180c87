"""pipeline.data.loader: one epoch order for every layout, each sample read once, resumable anywhere."""
from __future__ import annotations

import json
import tarfile
import warnings

import pytest
import torch
import webdataset as wds

from _train_fixtures import augment, write_shards
from pipeline.data.counters import COUNTERS, LoaderCounters
from pipeline.data.loader import build_train_loader, read_stats
from pipeline.data.order import EpochOrder
from pipeline.data.tarindex import build_index, index_path, write_index
from pipeline.errors import UserError
from pipeline.reduction.text import build_text_transform

READ = {name: i for i, name in enumerate(COUNTERS)}


def loader(stats, *, batch_size=4, rank=0, world_size=1, workers=0, seed=0, shuffle_shards=2, **hooks):
    return build_train_loader(stats_path=stats, image_size=12,
                              augment=augment(scale=[0.5, 1.0], color_jitter=[0.2, 0.2, 0.2, 0.05],
                                              color_jitter_prob=0.8, gray_scale_prob=0.2),
                              text_transform=build_text_transform("truncate", 10), batch_size=batch_size,
                              rank=rank, world_size=world_size, seed=seed, workers=workers,
                              shuffle_shards=shuffle_shards, **hooks)


def collect(it):
    return [(b["image"], b["text"]) for b in it]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def index_shards(stats):
    """Write the data stage's sample index beside every tar of a test dataset."""
    for shard in json.loads(stats.read_text())["shards"]:
        tar = stats.parent / shard["path"]
        write_index(tar, build_index(tar))


def uneven(folder, sizes):
    """Shards with the given sample counts (indexed, as the data stage leaves them)."""
    stats = write_shards(folder, shards=len(sizes), per_shard=max(sizes))
    raw = json.loads(stats.read_text())
    for shard, size in zip(raw["shards"], sizes):
        tar = stats.parent / shard["path"]
        samples = list(wds.WebDataset(str(tar), shardshuffle=False))[:size]
        with wds.TarWriter(str(tar)) as sink:
            for sample in samples:
                sink.write({k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"})
        shard["samples"] = size
    raw["samples"] = sum(sizes)
    stats.write_text(json.dumps(raw))
    index_shards(stats)
    return stats


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("data") / "tiny", shards=3, per_shard=10)


def test_counts_come_from_stats(stats):
    shards, samples = read_stats(stats)
    assert (len(shards), samples) == (3, 30)
    data = loader(stats, batch_size=4)
    assert data.batches_per_epoch() == 7 and data.unused_per_epoch() == 2  # 30 // 4; 2 left this epoch
    batches = list(data.epoch(0))
    assert len(batches) == 7
    assert batches[0]["image"].shape == (4, 3, 12, 12) and batches[0]["image"].dtype == torch.float32
    assert batches[0]["text"].shape == (4, 10) and batches[0]["loader"].shape == (len(COUNTERS),)
    assert sum(int(b["loader"][READ["read_samples"]]) for b in batches) == 28


def test_deterministic_and_resumes_mid_epoch_with_any_worker_count(stats):
    full = collect(loader(stats).epoch(1))
    assert same(full, collect(loader(stats).epoch(1)))
    assert same(full[3:], collect(loader(stats).epoch(1, start_batch=3)))
    # more workers than shards: batches still all arrive, in order, identical
    assert same(full, collect(loader(stats, workers=4).epoch(1)))
    assert same(full[5:], collect(loader(stats, workers=2).epoch(1, start_batch=5)))
    assert not same(full, collect(loader(stats).epoch(2)))  # a new epoch reshuffles
    assert not same(full, collect(loader(stats, seed=1).epoch(1)))


def test_batches_do_not_depend_on_ranks_or_workers(stats, capsys):
    """The global batch is the same for 1, 2 or 4 ranks (any workers): a run resumed at (epoch, batch) with
    another world size continues the very same epoch, repeating and skipping nothing."""
    single = collect(loader(stats, batch_size=8).epoch(0))
    assert len(single) == 3
    for world, workers in ((2, 1), (4, 2)):
        ranks = [collect(loader(stats, batch_size=8 // world, rank=r, world_size=world, workers=workers).epoch(0))
                 for r in range(world)]
        assert all(len(r) == len(single) for r in ranks)
        for i, (image, text) in enumerate(single):
            assert torch.equal(image, torch.cat([r[i][0] for r in ranks]))
            assert torch.equal(text, torch.cat([r[i][1] for r in ranks]))
    resumed = [collect(loader(stats, batch_size=2, rank=r, world_size=4).epoch(0, start_batch=1)) for r in range(4)]
    assert all(torch.equal(single[1 + i][0], torch.cat([r[i][0] for r in resumed])) for i in range(2))
    assert "resumes at batch 1" in capsys.readouterr().out


@pytest.mark.parametrize("sizes, batch_size", [((7, 13, 4), 3), ((5, 9, 11, 3, 2), 3)])
def test_each_sample_is_read_once_per_epoch_by_4_ranks_x_2_workers(tmp_path, sizes, batch_size):
    """Fewer shards than the 8 readers, uneven sizes: every sample used is read exactly once, by one reader,
    and the bytes read are exactly those samples plus the index of each shard a reader opened."""
    stats = uneven(tmp_path / "uneven", sizes)
    shards = [stats.parent / f"shards/{s:05d}.tar" for s in range(len(sizes))]
    ranges = [build_index(t) for t in shards]
    index_bytes = [index_path(t).stat().st_size for t in shards]
    world, workers = 4, 2
    loaders = [loader(stats, batch_size=batch_size, rank=r, world_size=world, workers=workers) for r in range(world)]
    per_epoch = sum(sizes) // (batch_size * world)
    order = EpochOrder(list(sizes), seed=0, epoch=0, shuffle_shards=2)
    read, expected_bytes, opened = set(), 0, 0
    for rank, data in enumerate(loaders):
        for worker in range(workers):  # the rows each reader is given: worker w builds batches w, w+W, ...
            touched = set()
            for index in range(worker, per_epoch, workers):
                rows = data.dataset.positions(index)
                for s, i in zip(*(a.tolist() for a in order.rows(rows.start, rows.stop))):
                    assert (s, i) not in read
                    read.add((s, i))
                    touched.add(s)
                    expected_bytes += int(ranges[s][i][1] - ranges[s][i][0])
            expected_bytes += sum(index_bytes[s] for s in touched)
            opened += len(touched)
    assert len(read) == per_epoch * batch_size * world
    totals = torch.zeros(len(COUNTERS), dtype=torch.int64)
    for data in loaders:
        for batch in data.epoch(0):
            totals += batch["loader"]
    assert int(totals[READ["read_samples"]]) == len(read)
    assert int(totals[READ["read_bytes"]]) == expected_bytes
    assert int(totals[READ["read_shards"]]) == opened
    assert int(totals[READ["skipped"]]) == int(totals[READ["lost"]]) == 0


def test_epoch_order_permutes_all_samples_in_groups_of_shards():
    counts = [5, 9, 11, 3, 2]
    order = EpochOrder(counts, seed=3, epoch=1, shuffle_shards=2)
    shards, index = order.rows(0, sum(counts))
    assert sorted(zip(shards.tolist(), index.tolist())) == [(s, i) for s, n in enumerate(counts) for i in range(n)]
    for g, members in enumerate(order.groups):  # a group's positions hold that group's shards only
        begin, end = int(order.starts[g]), int(order.starts[g + 1])
        assert set(shards[begin:end].tolist()) == set(members.tolist())
    again = EpochOrder(counts, seed=3, epoch=1, shuffle_shards=2).rows(7, 19)
    assert all((a == b).all() for a, b in zip(again, (shards[7:19], index[7:19])))
    other = EpochOrder(counts, seed=3, epoch=2, shuffle_shards=2).rows(0, sum(counts))
    assert not (other[0] == shards).all() or not (other[1] == index).all()


def test_stream_does_not_depend_on_the_order_samples_were_written(tmp_path, stats):
    """img2dataset writes samples in download completion order; the loader reads them in key order."""
    reordered = write_shards(tmp_path / "reordered", shards=3, per_shard=10)
    for shard in json.loads(reordered.read_text())["shards"]:
        tar = reordered.parent / shard["path"]
        samples = list(wds.WebDataset(str(tar), shardshuffle=False))
        with wds.TarWriter(str(tar)) as sink:
            for sample in reversed(samples):
                sink.write({k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"})
    index_shards(reordered)  # with an index (the data stage's) and without one (walked by the loader)
    assert same(collect(loader(stats).epoch(0)), collect(loader(reordered).epoch(0)))


def test_undecodable_images_are_counted_not_fatal(tmp_path):
    stats = write_shards(tmp_path / "bad", shards=2, per_shard=8, corrupt=("000000003", "000010005"))
    batches = list(loader(stats, batch_size=4).epoch(0))
    assert sum(int(b["loader"][READ["skipped"]]) for b in batches) == 2
    assert all(b["image"].shape[0] == 4 and b["text"].shape[0] == 4 for b in batches)


@pytest.mark.parametrize("indexed", [True, False])
def test_samples_of_a_truncated_shard_are_counted_lost(tmp_path, indexed):
    stats = write_shards(tmp_path / "trunc", shards=2, per_shard=8)
    if indexed:
        index_shards(stats)
    shard = tmp_path / "trunc" / "shards" / "00001.tar"
    intact = len(build_index(shard))
    shard.write_bytes(shard.read_bytes()[:5000])
    kept = len(build_index(shard, strict=False))
    with pytest.warns(UserWarning, match="00001.tar"):
        batches = list(loader(stats, batch_size=4).epoch(0))
    assert len(batches) == 4 and all(b["image"].shape[0] == 4 for b in batches)
    lost = sum(int(b["loader"][READ["lost"]]) for b in batches)
    assert lost == intact - kept > 0
    assert sum(int(b["loader"][READ["read_samples"]]) for b in batches) == 16 - lost


def test_bad_stats_name_file_and_field(tmp_path):
    stats = write_shards(tmp_path / "missing", shards=2, per_shard=4)
    raw = json.loads(stats.read_text())
    stats.write_text(json.dumps(dict(raw, samples=9)))
    with pytest.raises(UserError, match=r"stats.json: samples: 9, but the shards list 8"):
        read_stats(stats)
    stats.write_text(json.dumps(dict(raw, caption="alt_text")))
    with pytest.raises(UserError, match=r"stats.json: caption"):
        read_stats(stats)
    stats.write_text(json.dumps(dict(raw, kind="classification")))
    with pytest.raises(UserError, match="kind"):
        read_stats(stats)
    stats.write_text(json.dumps(raw))
    (tmp_path / "missing" / "shards" / "00001.tar").unlink()
    with pytest.raises(UserError, match=r"stats.json: shards.1.path"):
        read_stats(stats)


def test_method_hooks_add_views_and_augmented_captions(stats):
    from pipeline.data.views import CaptionAugmenter, ViewMaker

    def hooked(workers, world_size=1, rank=0):
        return loader(stats, batch_size=4 // world_size, rank=rank, world_size=world_size, workers=workers,
                      view_maker=ViewMaker(views=2, image_size=12), caption_augmenter=CaptionAugmenter(alpha=0.5))

    a, b = list(hooked(0).epoch(0, start_batch=5)), list(hooked(2).epoch(0, start_batch=5))
    assert a[0]["views"].shape == (4, 2, 3, 12, 12) and a[0]["text_aug"].shape == (4, 10)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in ("image", "views", "text", "text_aug"))
    assert not torch.equal(a[0]["views"][:, 0], a[0]["views"][:, 1])
    halves = [list(hooked(0, world_size=2, rank=r).epoch(0, start_batch=5)) for r in range(2)]
    for key in ("image", "views", "text_aug"):  # views and caption edits are seeded per sample too
        assert torch.equal(a[0][key], torch.cat([h[0][key] for h in halves]))


def test_batches_arrive_on_the_training_device_counts_on_the_cpu(stats):
    """Images normalised on the device the trainer names (meta stands in for a GPU); the loader's counts
    stay on the CPU, so adding them up needs no device sync."""
    data = build_train_loader(stats_path=stats, image_size=12, augment=augment(), batch_size=4, rank=0,
                              world_size=1, seed=0, workers=0, shuffle_shards=2, device="meta",
                              text_transform=build_text_transform("truncate", 10))
    batch = next(iter(data.epoch(0)))
    assert batch["image"].device.type == batch["text"].device.type == "meta"
    assert batch["image"].dtype == torch.float32 and batch["image"].is_contiguous()
    counters = LoaderCounters(unused_per_epoch=data.unused_per_epoch())
    counters.take(batch, epoch=0)
    assert counters.flush()["read_samples"] == 4


def test_loader_leaves_the_callers_rng_alone(stats):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    list(loader(stats).epoch(0))
    assert torch.equal(torch.rand(3), expected)


def test_counters_sum_intervals_and_report_finished_epochs():
    counters = LoaderCounters(unused_per_epoch=6)

    def batch(*values):
        return {"loader": torch.tensor(values, dtype=torch.int64), "image": torch.zeros(1)}

    b = batch(1, 0, 100, 2, 4)
    counters.take(b, epoch=0)
    assert "loader" not in b  # never reaches the model
    counters.take(batch(0, 1, 50, 1, 3), epoch=0)
    first = counters.flush()
    assert first == {"skipped": 1, "lost": 1, "read_bytes": 150, "read_shards": 3, "read_samples": 7}
    counters.take(batch(0, 0, 10, 0, 4), epoch=1)
    second = counters.flush()
    assert second["data_epochs"] == [{"epoch": 0, "skipped": 1, "lost": 1, "read_bytes": 150, "read_shards": 3,
                                      "read_samples": 7, "unused": 6}]
    assert second["read_bytes"] == 10 and "data_epochs" not in counters.flush()


def test_tar_index_lists_samples_by_key(tmp_path):
    tar = tmp_path / "a.tar"
    with tarfile.open(tar, "w") as out:
        for key in ("k3", "k1", "k2"):
            for ext in ("jpg", "txt"):
                info = tarfile.TarInfo(f"{key}.{ext}")
                body = f"{key}-{ext}".encode() * 40
                info.size = len(body)
                out.addfile(info, __import__("io").BytesIO(body))
    ranges = build_index(tar)
    data = tar.read_bytes()
    from pipeline.data.tarindex import sample_members

    keys = [sample_members(data[s:e])[0] for s, e in ranges.tolist()]
    assert keys == [b"k1", b"k2", b"k3"]
    key, members = sample_members(data[ranges[1][0]:ranges[1][1]])
    assert bytes(members["txt"]) == b"k2-txt" * 40 and set(members) == {"jpg", "txt"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tar.write_bytes(data[:3500])  # k3 whole, then k1's image and the header of its cut txt
        assert [sample_members(data[s:e])[0] for s, e in build_index(tar, strict=False).tolist()] == [b"k3"]
