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
