"""SIGKILL of the whole process group at random moments, then the same command again: the outputs equal an
uninterrupted run's, bit for bit on CPU (issue 15.3) - for finetune_eval (per-epoch resumable checkpoints, fp16
GradScaler and EMA included) and for the linear probe's feature cache (saved in parts)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from _eval_fixtures import eval_argv, save_tiny_checkpoint, write_digits_imagefolder, write_eval_experiment

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(key, None)
PAIR = {"train": "digits_train", "test": "digits"}


def _start(argv):
    return subprocess.Popen([sys.executable, "-m", "pipeline", *map(str, argv)], env=ENV, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(argv) -> str:
    proc = _start(argv)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def _kill_when(argv, ready, *, delay: float, timeout: float = 240) -> None:
    """Start the command, wait until ready() holds, then `delay` more seconds, then SIGKILL its process group."""
    proc, start = _start(argv), time.time()
    while not ready():
        assert proc.poll() is None, f"finished before the kill point: {proc.stdout.read()[-2000:]}"
        assert time.time() - start < timeout
        time.sleep(0.01)
    time.sleep(delay)
    kill_tree(proc)


def kill_tree(proc) -> None:
    """SIGKILL the command's process group and every descendant's: torchrun starts its workers in sessions of
    their own (start_new_session=True), so killing torchrun's group alone would leave the worker training.
    A preempted cluster job loses all of them at once (the job's cgroup); this does the same."""
    import psutil

    family = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    psutil.wait_procs([p for p in map(_process, family[1:]) if p is not None], timeout=30)


def _process(pid: int):
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _strip(record: dict) -> dict:
    """A result record without wall-clock seconds (the only field a resumed run may change)."""
    record = json.loads(json.dumps(record))
    for row in record.get("history", []):
        row.pop("seconds", None)
    return record


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    return {"root": root, "train": write_digits_imagefolder(root / "train", range(0, 160)),
            "test": write_digits_imagefolder(root / "test", range(1600, 1660)),
            "ckpt": save_tiny_checkpoint(root / "ck" / "final.pt")}


@pytest.mark.slow
def test_finetune_eval_killed_twice_resumes_bit_identically(data):
    root = data["root"]
    # fp16 (a GradScaler state), EMA, a held-out validation part with best-epoch copies: all in the checkpoint
    ft = {"datasets": [PAIR], "batch_size": 16, "epochs": 4, "lr": 3e-3, "warmup_epochs": 1, "ema_decay": 0.9,
          "precision": "fp16", "val_fraction": 0.25, "workers": 0, "head": "ftclip", "randaugment": "rand-m9-mstd0.5",
          "reprob": 0.25, "drop_path": 0.1}
    exp = write_eval_experiment(root / "config", {"batch_size": 64, "finetune_eval": ft}, name="kill",
                                datasets={"digits": "mnist", "digits_train": "mnist"})

    def argv(name):
        return eval_argv("finetune_eval", exp, "digits", checkpoint=data["ckpt"],
                         inputs={"train": data["train"], "test": data["test"]},
                         outputs={"result": root / f"{name}.json", "model": root / f"{name}.pt"})
    _finish(argv("ref"))
    state = root / "killed.pt.resume" / "state.pt"

    def after_epoch(n):
        def ready():
            try:
                return torch.load(state, weights_only=True)["epoch"] >= n
            except Exception:  # absent, or being replaced right now
                return False
        return ready
    rng = random.Random(0)
    _kill_when(argv("killed"), after_epoch(1), delay=rng.uniform(0, 0.3))   # somewhere in epoch 2
    _kill_when(argv("killed"), after_epoch(3), delay=rng.uniform(0, 0.3))   # resumed, killed again in epoch 4
    log = _finish(argv("killed"))
    assert "resuming after epoch 3" in log or "resuming after epoch 4" in log, log[-2000:]
    ref, killed = (json.loads((root / f"{n}.json").read_text()) for n in ("ref", "killed"))
    assert _strip(killed)["metrics"] == _strip(ref)["metrics"]
    assert _strip(killed)["history"] == _strip(ref)["history"]
    a, b = (torch.load(root / f"{n}.pt", weights_only=True) for n in ("ref", "killed"))
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert not state.parent.exists()   # the checkpoints go once the outputs are written


def _photo_folder(root, n: int):
    """n photo-sized PNGs in 10 classes: decoding them keeps the extraction busy long enough to be killed."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "images" / f"{i % 10:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    stats = {"dataset": root.name, "kind": "classification", "samples": n, "format": "imagefolder",
             "root": "images", "classes": [str(c) for c in range(10)]}
    (root / "stats.json").write_text(json.dumps(stats))
    return root / "stats.json"


@pytest.mark.slow
def test_linear_probe_feature_cache_killed_resumes_bit_identically(data, tmp_path):
    train, test = _photo_folder(tmp_path / "p_train", 400), _photo_folder(tmp_path / "p_test", 100)
    probe = {"datasets": [{"train": "p_train", "test": "p"}], "c_values": [0.1, 1.0]}
    exp = write_eval_experiment(tmp_path / "config", {"batch_size": 10, "feature_part_images": 40,
                                                      "linear_probe": probe},
                                datasets={"p": "cifar10", "p_train": "cifar10"})

    def argv(name):
        return eval_argv("linear_probe", exp, "p", checkpoint=data["ckpt"], inputs={"train": train, "test": test},
                         outputs={"result": tmp_path / f"{name}.json"}, cache_dir=tmp_path / f"cache-{name}")
    from pipeline.__main__ import main

    assert main(argv("ref")) == 0   # the uninterrupted run, in-process (no DeepSpeed here)
    cache = tmp_path / "cache-killed"

    def parts(n):
        return lambda: len(list(cache.glob("p_train-*.part*.pt"))) >= n
    rng = random.Random(1)
    _kill_when(argv("killed"), parts(1), delay=rng.uniform(0, 0.05))
    assert list(cache.glob("*.part*.pt")) and not [p for p in cache.glob("*.pt") if ".part" not in p.name]
    _kill_when(argv("killed"), parts(5), delay=rng.uniform(0, 0.2))
    _finish(argv("killed"))
    ref, killed = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ref", "killed"))
    assert killed["metrics"] == ref["metrics"]
    files = {n: sorted(p for p in (tmp_path / f"cache-{n}").glob("*.pt")) for n in ("ref", "killed")}
    assert [p.name for p in files["ref"]] == [p.name for p in files["killed"]] and len(files["ref"]) == 2
    for a, b in zip(files["ref"], files["killed"]):
        x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
        assert torch.equal(x["features"], y["features"]) and torch.equal(x["labels"], y["labels"])
