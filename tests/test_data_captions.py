"""YFCC15M captions as SLIP trains on them: title or description drawn per sample and epoch (yfcc_caption)."""
from __future__ import annotations

import json

import torch
import webdataset as wds

from _train_fixtures import _jpeg, augment
from pipeline.config import dataset_from_dict
from pipeline.data.build import caption_rule
from pipeline.data.loader import build_train_loader

import numpy as np

TITLES = [f"title {i}" if i % 4 else "" for i in range(16)]  # every 4th photo has no title
DESCS = [f"description {i}" if i % 4 != 1 else "" for i in range(16)]  # photos 1, 5, ... no description
VOCAB = sorted(set(TITLES + DESCS + [f"title {i}. description {i}" for i in range(16)]) - {""})


def tokens(captions):
    """A text transform that keeps which caption it saw."""
    return torch.tensor([[VOCAB.index(c)] for c in captions])


def shards(folder, rule):
    rng = np.random.default_rng(0)
    (folder / "shards").mkdir(parents=True)
    with wds.TarWriter(str(folder / "shards" / "00000.tar")) as sink:
        for i, (title, desc) in enumerate(zip(TITLES, DESCS)):
            joined = f"{title}. {desc}" if title and desc else title or desc
            sink.write({"__key__": f"{i:09d}", "jpg": _jpeg((200, 20, 20), rng), "txt": joined,
                        "json": json.dumps({"key": f"{i:09d}", "title": title, "description": desc}).encode()})
    stats = folder / "stats.json"
    stats.write_text(json.dumps({"kind": "image_text", "samples": 16, "caption": rule,
                                 "shards": [{"path": "shards/00000.tar", "samples": 16}]}))
    return stats


def captions(stats, epoch, workers=0, seed=0):
    loader = build_train_loader(stats_path=stats, image_size=8, augment=augment(), text_transform=tokens,
                                batch_size=4, rank=0, world_size=1, seed=seed, workers=workers, shuffle_shards=1)
    return [VOCAB[int(t)] for batch in loader.epoch(epoch) for t in batch["text"][:, 0]]


def test_title_or_description_per_sample_and_epoch(tmp_path):
    stats = shards(tmp_path / "y", "title_or_description")
    epochs = [captions(stats, e) for e in range(6)]
    assert captions(stats, 2, workers=2) == epochs[2]  # a pure function of (seed, epoch, position)
    seen: dict[int, set] = {}
    for epoch in epochs:
        assert len(epoch) == 16
        for caption in epoch:
            i = int(caption.split()[-1])
            assert caption in (TITLES[i], DESCS[i])  # one of the two, never joined, never empty
            seen.setdefault(i, set()).add(caption)
    assert seen[0] == {DESCS[0]} and seen[1] == {TITLES[1]}  # one of them empty: the other, every epoch
    both = [i for i in range(16) if TITLES[i] and DESCS[i]]
    assert sum(len(seen[i]) == 2 for i in both) >= len(both) - 1  # both drawn over 6 epochs (1 in 32 is not)
    picks = [c.startswith("title") for epoch in epochs for c in epoch if TITLES[int(c.split()[-1])]
             and DESCS[int(c.split()[-1])]]
    assert 0.3 < np.mean(picks) < 0.7  # about 50/50


def test_joined_caption_is_the_default(tmp_path):
    stats = shards(tmp_path / "j", "txt")
    got = captions(stats, 0)
    assert sorted(got) == sorted(f"{t}. {d}" if t and d else t or d for t, d in zip(TITLES, DESCS))


def test_setting_reaches_stats_only_for_yfcc15m():
    def rule(**raw):
        return caption_rule(dataset_from_dict({"kind": "image_text", **raw}, "d", "d.yaml"))

    assert rule(reader="yfcc15m", yfcc_caption="title_or_description") == "title_or_description"
    assert rule(reader="yfcc15m") == "txt"
    assert rule(reader="cc3m", yfcc_caption="title_or_description") == "txt"
