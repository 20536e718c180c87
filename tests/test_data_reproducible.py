"""Same config + same url list -> same weights, whatever order the downloads finished in.

The url list is sharded twice by the data stage, each time with the loopback server delaying the images
differently, so img2dataset writes every shard's samples in another order; then the same experiment
pretrains on each copy on CPU. The final weights must be bit-identical.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
import yaml
from PIL import Image

from _train_fixtures import write_experiment
from devtools.localserver import serve_directory
from pipeline.__main__ import main as pipeline_main

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
IMAGES = 40


def shard_copy(repo, name: str, delay) -> list[list[str]]:
    """Run the data stage into data/<name>; returns each shard's keys in the order they were written."""
    (repo / "config" / "datasets").mkdir(parents=True, exist_ok=True)
    (repo / "config" / "datasets" / f"{name}.yaml").write_text(yaml.safe_dump({
        "kind": "image_text", "reader": "url_list", "sources": ["urls.parquet"],
        "img2dataset": {"image_size": 16, "resize_mode": "center_crop", "threads": 8, "samples_per_shard": 10}}))
    with serve_directory(repo / "site", max_seconds=120, delay=delay) as base:
        captions = [f"a {('red', 'green', 'blue')[i % 3]} square {i}" for i in range(IMAGES)]
        pq.write_table(pa.table({"url": [f"{base}/{i}.jpg" for i in range(IMAGES)], "caption": captions}),
                       repo / "urls.parquet")
        out = repo / "data" / name / "stats.json"
        assert pipeline_main(["data", "--dataset", name, "--out", str(out), "--config-dir", str(repo / "config")]) == 0
    return [[s["__key__"] for s in wds.WebDataset(str(t), shardshuffle=False)]
            for t in sorted((out.parent / "shards").glob("*.tar"))]


def pretrain(repo, data: str):
    out = repo / "results" / data / "final.pt"
    command = [sys.executable, "-m", "pipeline", "pretrain", "--experiment", str(repo / "config" / "experiments" /
               "tiny.yaml"), "--train-data", str(repo / "data" / data / "stats.json"), "--out", str(out)]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=True)["model"]


@pytest.mark.slow
def test_two_shardings_of_one_url_list_train_identical_weights(tmp_path):
    repo = tmp_path / "repo"
    (repo / "site").mkdir(parents=True)
    for i in range(IMAGES):
        colour = ((200, 30, 30), (30, 200, 30), (30, 30, 200))[i % 3]
        Image.new("RGB", (20 + i % 7, 18), colour).save(repo / "site" / f"{i}.jpg")
    # the first copy answers early rows slowly, the second late rows: downloads finish in other orders
    first = shard_copy(repo, "first", lambda path: 0.02 * (9 - int(path.strip("/").split(".")[0]) % 10))
    second = shard_copy(repo, "second", lambda path: 0.02 * (int(path.strip("/").split(".")[0]) % 10))
    assert [sorted(k) for k in first] == [sorted(k) for k in second]  # the same samples in each shard ...
    assert first != second  # ... written in another order
    write_experiment(repo / "config", epochs=2, checkpoint_every=100, batch_size=8, workers=1)
    a, b = pretrain(repo, "first"), pretrain(repo, "second")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
