"""SIGKILL of the whole process group at random moments of the data, pretrain and finetune stages, then the same
command again: the outputs equal an uninterrupted run's (bit-identical weights, equal data counts). A kill in the
middle of a checkpoint write leaves the previous checkpoint usable. (tests/test_train.py kills pretrain right after
a given checkpoint and tests/test_data_incremental.py the data stage after two shards; these draw the moments.)

CLIPFORGE_KILL_SEED picks other moments; the seed is printed with the moments it drew.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _train_fixtures import write_experiment, write_shards
from pipeline.train import checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", PYTHONPATH=str(REPO))
SEED = int(os.environ.get("CLIPFORGE_KILL_SEED", "0"))
STEPS = 18  # 48 samples // 8 = 6 steps x 3 epochs


def stage_command(stage, exp, stats, out, init=None):
    tail = ["--init", str(init)] if init else []
    return [sys.executable, "-m", "pipeline", stage, "--experiment", str(exp), "--train-data", str(stats),
            "--out", str(out), *tail]


def run(command, env=ENV) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, time.perf_counter() - start


def kill_after(command, seconds: float, env=ENV) -> bool:
    """Start `command` in its own process group and SIGKILL the group after `seconds`; False if it ended first."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun, its workers, loader workers: everything, as a preemption
        proc.wait()
        return True


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])][:5]


def logged_steps(folder: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Uninterrupted pretrain and finetune runs, with their wall times (the span the kills are drawn from)."""
    root = tmp_path_factory.mktemp("kill")
    stats = write_shards(root / "data" / "tiny", shards=3, per_shard=16)
    exp = write_experiment(root / "config", epochs=3, checkpoint_every=2)
    pre = root / "straight" / "pretrain" / "final.pt"
    _, pre_seconds = run(stage_command("pretrain", exp, stats, pre))
    fine = root / "straight" / "finetune" / "final.pt"
    _, fine_seconds = run(stage_command("finetune", exp, stats, fine, init=pre))
    return {"root": root, "stats": stats, "exp": exp, "pretrain": (pre, pre_seconds), "finetune": (fine, fine_seconds)}


def killed_then_rerun(command, span: float, rng: random.Random, label: str) -> tuple[list[float], str]:
    """Two kills at random moments (the second attempt starts from what the first left), then the run to its end."""
    moments = [round(rng.uniform(0.3, 0.7) * span, 2), round(rng.uniform(0.5, 0.95) * span, 2)]
    landed = [kill_after(command, t) for t in moments]
    print(f"{label}: seed {SEED}, killed after {moments} s (of {span:.1f} s straight), landed {landed}")
    out, _ = run(command)
    return moments, out


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_training_killed_at_random_moments_resumes_bit_identical(straight, stage):
    rng = random.Random(f"{SEED}-{stage}")
    reference, span = straight[stage]
    out = straight["root"] / "killed" / stage / "final.pt"
    init = straight["pretrain"][0] if stage == "finetune" else None
    _, log = killed_then_rerun(stage_command(stage, straight["exp"], straight["stats"], out, init), span, rng, stage)
    assert_same_weights(reference, out)
    total = STEPS if stage == "pretrain" else 6  # finetune: epochs 1
    assert logged_steps(out.parent) == list(range(1, total + 1))  # nothing twice, nothing lost after resumes
    assert len(checkpoint.list_checkpoints(out.parent / "checkpoints")) <= 2


@pytest.mark.slow
def test_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(straight):
    """The writer of step_00000004.pt dies with half of it on disk; step 2 stays listed and readable, the rerun
    resumes from it and ends where the uninterrupted run did, and the cut temp file is cleaned up."""
    from pipeline.models import load_checkpoint

    out = straight["root"] / "cut" / "pretrain" / "final.pt"
    command = stage_command("pretrain", straight["exp"], straight["stats"], out)
    hook = {**ENV, "PYTHONPATH": f"{REPO / 'tests' / '_kill_hook'}{os.pathsep}{REPO}",
            "CLIPFORGE_TEST_KILL_WRITING": "step_00000004.pt"}
    done = subprocess.run(command, env=hook, capture_output=True, text=True, timeout=600, start_new_session=True)
    assert done.returncode != 0 and not out.exists(), done.stdout[-2000:]
    folder = out.parent / "checkpoints"
    cut = [p for p in folder.iterdir() if p.name.startswith(".step_00000004.pt.")]
    assert len(cut) == 1 and cut[0].stat().st_size > 0, sorted(p.name for p in folder.iterdir())
    assert [p.name for p in checkpoint.list_checkpoints(folder)] == ["step_00000002.pt"]
    assert load_checkpoint(folder / "step_00000002.pt")["step"] == 2
    log, _ = run(command)
    assert f"resuming from {folder}/step_00000002.pt" in log and "step 3/18" in log and "step 2/18" not in log
    assert_same_weights(straight["pretrain"][0], out)
    assert not any(p.name.endswith(".tmp") for p in folder.iterdir())


# ---- data

ROWS, PER_SHARD, MISSING = 20, 4, (3, 11)


@pytest.mark.slow
def test_data_killed_at_random_moments_counts_like_an_uninterrupted_run(tmp_path):
    """Rows 3 and 11 point at missing files (failed, counted); after two kills the stats equal a straight run's."""
    from _data_fixtures import make_images
    from devtools.localserver import serve_directory
    from pipeline.__main__ import main as pipeline_main

    names = make_images(tmp_path / "site", ROWS)
    config = tmp_path / "config"
    (config / "datasets").mkdir(parents=True)

    def dataset(name: str) -> list[str]:
        import yaml
        (config / "datasets" / f"{name}.yaml").write_text(yaml.safe_dump({
            "kind": "image_text", "reader": "url_list", "sources": ["urls.csv"],
            "img2dataset": {"image_size": 16, "threads": 1, "processes": 1, "samples_per_shard": PER_SHARD}}))
        return ["data", "--dataset", name, "--out", str(tmp_path / "data" / name / "stats.json"),
                "--config-dir", str(config)]

    with serve_directory(tmp_path / "site", max_seconds=300, delay=0.1) as base:
        rows = [f"{base}/{'missing-' if i in MISSING else ''}{n},cap {n}\n" for i, n in enumerate(names)]
        (tmp_path / "urls.csv").write_text("url,caption\n" + "".join(rows))
        start = time.perf_counter()
        assert pipeline_main(dataset("straight")) == 0
        span = time.perf_counter() - start
        argv = dataset("killed")
        rng = random.Random(f"{SEED}-data")
        moments = [round(rng.uniform(0.2, 0.6) * span, 2), round(rng.uniform(0.4, 0.9) * span, 2)]
        landed = [kill_after([sys.executable, "-m", "pipeline", *argv], t) for t in moments]
        print(f"data: seed {SEED}, killed after {moments} s (of {span:.1f} s straight), landed {landed}")
        assert pipeline_main(argv) == 0
    a, b = (json.loads((tmp_path / "data" / n / "stats.json").read_text()) for n in ("straight", "killed"))
    counts = ("samples", "input_rows", "failed")
    assert {k: a[k] for k in counts} == {k: b[k] for k in counts}
    assert a["samples"] == ROWS - len(MISSING) and sum(a["failed"].values()) == len(MISSING)
    assert [(s["path"], s["samples"]) for s in a["shards"]] == [(s["path"], s["samples"]) for s in b["shards"]]
