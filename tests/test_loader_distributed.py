"""The loader under a real 4-rank gloo pretrain with 2 workers per rank: each sample's bytes are read once
per epoch (metrics.jsonl counts them), and a run killed mid-epoch resumes the very same data stream."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from _train_fixtures import write_experiment, write_shards
from pipeline.data.tarindex import build_index, index_path, write_index

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
SHARDS, PER_SHARD = 3, 16  # 48 samples = 3 global batches of 16 (4 ranks x 4): nothing unused per epoch


def command(root, exp, stats, out):
    return [sys.executable, "-m", "pipeline", "pretrain", "--experiment", str(exp), "--train-data", str(stats),
            "--out", str(out)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    stats = write_shards(root / "data" / "tiny", shards=SHARDS, per_shard=PER_SHARD)
    tars = sorted((stats.parent / "shards").glob("*.tar"))
    for tar in tars:  # as the data stage leaves them
        write_index(tar, build_index(tar))
    exp = write_experiment(root / "config", processes=4, workers=2, batch_size=16, epochs=2, checkpoint_every=2,
                           log_every=1)
    out = root / "straight" / "final.pt"
    done = subprocess.run(command(root, exp, stats, out), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, exp, stats, out, tars


@pytest.mark.slow
def test_four_ranks_two_workers_read_each_sample_once_per_epoch(setup):
    root, _, _, out, tars = setup
    records = [json.loads(line) for line in (out.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7))  # 3 steps per epoch, 2 epochs
    finished = [e for r in records for e in r.get("data_epochs", [])]
    assert [e["epoch"] for e in finished] == [0]  # epoch 1 ends with the run, no record follows it
    epoch = finished[0]
    sample_bytes = sum(int((r[:, 1] - r[:, 0]).sum()) for r in (build_index(t) for t in tars))
    assert epoch["read_samples"] == SHARDS * PER_SHARD and epoch["unused"] == 0
    assert epoch["read_bytes"] == sample_bytes + epoch["read_shards"] * index_path(tars[0]).stat().st_size
    assert SHARDS <= epoch["read_shards"] <= 8 * SHARDS  # each of the 8 readers opens a shard at most once
    assert epoch["skipped"] == epoch["lost"] == 0
    per_step = [r["read_samples"] for r in records[:3]]
    assert sum(per_step) == SHARDS * PER_SHARD  # the per-record counts add up to the epoch's


def kill_when_written(argv, target) -> None:
    """Start `argv` in its own process group and SIGKILL the whole group (torchrun, its ranks and their loader
    workers) as soon as `target` exists, or once it has ended."""
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while not target.exists() and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_four_ranks_two_workers_killed_mid_epoch_resume_bit_identically(setup):
    root, exp, stats, straight, _ = setup
    killed = root / "killed" / "final.pt"
    kill_when_written(command(root, exp, stats, killed),
                      killed.parent / "checkpoints" / "step_00000002.pt")  # epoch 0, batch 2 of 3
    assert not killed.exists(), "the run finished before it could be killed"
    done = subprocess.run(command(root, exp, stats, killed), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stdout and "loader: epoch" in done.stdout
    io = ("samples_per_s", "read_bytes", "read_shards", "data_epochs")  # timing; file opens depend on restarts
    records = [[{k: v for k, v in json.loads(line).items() if k not in io}
                for line in (folder / "metrics.jsonl").read_text().splitlines()]
               for folder in (straight.parent, killed.parent)]
    assert records[0] == records[1]  # every step's loss, lr and samples read, bit for bit
    a = torch.load(straight, weights_only=True)["model"]
    b = torch.load(killed, weights_only=True)["model"]
    # bit-identical at 4 ranks too: the trainer's DDP keeps its buckets (find_unused_parameters=True), so the
    # resumed start's first step all-reduces in the uninterrupted run's order
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_retry_on_fewer_ranks_continues_the_epoch(setup):
    """Killed on 4 ranks x 2 workers, resumed on 2 ranks x 1 worker: the same checkpoint, the log says so, and the
    batches continue where they stopped: every step is logged once and reads one global batch of samples."""
    root, exp, stats, straight, _ = setup
    out = root / "smaller" / "final.pt"
    kill_when_written(command(root, exp, stats, out),
                      out.parent / "checkpoints" / "step_00000004.pt")  # epoch 1, batch 1 of 3
    assert not out.exists(), "the run finished before it could be killed"
    smaller = write_experiment(root / "config_smaller", processes=2, workers=1, batch_size=16, epochs=2,
                               checkpoint_every=2, log_every=1)
    done = subprocess.run(command(root, smaller, stats, out), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stdout and "resuming on 2 ranks a run saved on 4" in done.stdout
    records = [json.loads(line) for line in (out.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7))  # nothing repeated, nothing skipped
    assert all(r["read_samples"] == 16 for r in records)
    before = [json.loads(line) for line in (straight.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records[:4]] == [r["loss"] for r in before[:4]]  # the steps before the kill
