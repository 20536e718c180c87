"""The epoch order against a re-derivation from its documented recipe, and its empty and out-of-range runs
(mutation testing, docs/robustness.md). The order is what a resumed run - possibly of an older checkpoint - must
find again, so the random streams it is drawn from are part of the contract, not only its shape."""
import numpy as np
import pytest

from pipeline.data.order import EpochOrder


def recipe(counts, seed, epoch, shuffle_shards):
    """pipeline/data/order.py's docstring, step by step: shards permuted from (seed, epoch, 1), cut into groups of
    `shuffle_shards`, each group's samples (in shard order, then key order) permuted from (seed, epoch, 2, g)."""
    shards = np.random.default_rng([seed, epoch, 1]).permutation(len(counts))
    out = []
    for g, start in enumerate(range(0, len(counts), shuffle_shards)):
        members = [(int(s), i) for s in shards[start:start + shuffle_shards] for i in range(counts[s])]
        out += [members[j] for j in np.random.default_rng([seed, epoch, 2, g]).permutation(len(members))]
    return out


@pytest.mark.parametrize("counts, shuffle_shards", [([5, 3, 7, 1, 4], 2), ([6, 6, 6], 1), ([2, 9, 4, 4], 4)])
def test_order_is_the_documented_recipe(counts, shuffle_shards):
    order = EpochOrder(counts, seed=7, epoch=3, shuffle_shards=shuffle_shards)
    shards, index = order.rows(0, order.samples)
    assert list(zip(shards.tolist(), index.tolist())) == recipe(counts, 7, 3, shuffle_shards)
    assert shards.dtype == index.dtype == np.int64


def test_an_empty_run_and_runs_outside_the_epoch():
    order = EpochOrder([5, 3, 7], seed=0, epoch=0, shuffle_shards=2)
    for start in (0, 6, 15):
        shards, index = order.rows(start, start)
        assert shards.shape == index.shape == (0,) and shards.dtype == index.dtype == np.int64
    with pytest.raises(IndexError, match=r"^positions 3\.\.16 outside the epoch's 15 samples$"):
        order.rows(3, 16)
    with pytest.raises(IndexError, match=r"positions 4\.\.3 outside"):
        order.rows(4, 3)


# ---------------------------------------------------------------- the loader's per-sample seeds and resume message


def test_per_sample_seeds_are_distinct_63_bit_values():
    from pipeline.data.loader import _mix

    seeds = [_mix(0, epoch, position) for epoch in range(3) for position in range(500)]
    seeds += [_mix(0, 0, position, tag) for position in range(500) for tag in (2, 4)]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2 ** 63 for s in seeds)


def _loader(tmp_path, rank=0, corrupt=()):
    from _train_fixtures import augment, write_shards
    from pipeline.data.loader import build_train_loader
    from pipeline.reduction.text import build_text_transform

    stats = write_shards(tmp_path / "tiny", shards=2, per_shard=4, corrupt=corrupt)
    return build_train_loader(stats_path=stats, image_size=12, augment=augment(), batch_size=2, rank=rank,
                              world_size=2, seed=0, workers=0, shuffle_shards=1,
                              text_transform=build_text_transform("truncate", 10))


def test_a_resumed_epoch_says_so_once_on_rank_zero(tmp_path, capsys):
    first, second = _loader(tmp_path), _loader(tmp_path, rank=1)
    assert len(list(first.epoch(0, 1))) == 1
    out = capsys.readouterr().out
    assert out.count("loader: epoch 0 resumes at batch 1;") == 1 and "(2 now)" in out
    assert len(list(second.epoch(0, 1))) == 1 and capsys.readouterr().out == ""
    list(first.epoch(0, 0))
    assert capsys.readouterr().out == ""


def test_a_batch_without_any_image_names_its_index(tmp_path):
    from pipeline.errors import UserError

    keys = tuple(f"{s:05d}{i:04d}" for s in range(2) for i in range(4))
    with pytest.raises(UserError, match=r"no readable, decodable image in batch 1 of epoch 0"):
        list(_loader(tmp_path, corrupt=keys).epoch(0, 1))
