"""Distributed stages re-run themselves under torchrun; killing the launcher's process group ends its workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _train_fixtures import write_experiment, write_shards

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _processes_naming(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().split(") ", 1)[1][0]
            except OSError:
                continue
            if marker in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_sigkill_of_the_launcher_group_ends_the_torchrun_worker(tmp_path):
    stats = write_shards(tmp_path / "data" / "tiny", shards=2, per_shard=16)
    exp = write_experiment(tmp_path / "config", epochs=50, checkpoint_every=1000)
    out = tmp_path / "launched" / "final.pt"
    cmd = [sys.executable, "-m", "pipeline", "pretrain", "--experiment", str(exp), "--train-data", str(stats),
           "--out", str(out)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    metrics = out.parent / "metrics.jsonl"
    deadline = time.time() + 240
    while not metrics.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert metrics.exists(), "the worker never started training"
    workers = [p for p in _processes_naming(str(out)) if p != proc.pid]
    assert workers, "no torchrun worker found"
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher's group only: torchrun puts workers in their own
    proc.wait()
    deadline = time.time() + 10
    while _processes_naming(str(out)) and time.time() < deadline:
        time.sleep(0.1)
    assert not _processes_naming(str(out)), "a torchrun worker survived its launcher"
    assert not out.exists()
