"""Training engine: kill + resume is bit-identical, accumulation as documented, checkpoint format,
finetune from a pretrain at another image size / context length, launcher commands, optimizer rules."""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from _train_fixtures import TINY_MODEL, write_experiment, write_shards
from pipeline.methods import create_method
from pipeline.models import create_model, load_model
from pipeline import launch
from pipeline.train import checkpoint
from pipeline.train.loop import TrainModule, train_step
from pipeline.train.optim import build_optimizer, build_scheduler, total_steps

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")


def stage_command(stage, exp, config, stats, out, init=None):
    """`python -m pipeline <stage>` as the rule runs it (it re-runs itself under torchrun); config is the folder
    the experiment file lies in (its datasets/ sit beside experiments/)."""
    tail = ["--init", str(init)] if init else []
    return [sys.executable, "-m", "pipeline", stage, "--experiment", str(exp), "--train-data", str(stats),
            "--out", str(out), *tail]


def run(command):
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    stats = write_shards(root / "data" / "tiny", shards=3, per_shard=16)
    exp = write_experiment(root / "config", epochs=5, checkpoint_every=3, augment={"color_jitter": [0.24, 0.24, 0.24, 0.06],
                                                                          "color_jitter_prob": 0.8,
                                                                          "gray_scale_prob": 0.2})
    return root, exp, stats


@pytest.fixture(scope="module")
def straight(setup):
    """An uninterrupted pretrain run (30 steps)."""
    root, exp, stats = setup
    out = root / "straight" / "final.pt"
    run(stage_command("pretrain", exp, root / "config", stats, out))
    return out


def state(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_bit_identical(setup, straight):
    root, exp, stats = setup
    killed = root / "killed" / "final.pt"
    proc = subprocess.Popen(stage_command("pretrain", exp, root / "config", stats, killed), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    target = killed.parent / "checkpoints" / "step_00000009.pt"
    while not target.exists() and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its worker: the whole process group, as a preemption
    proc.wait()
    assert not killed.exists(), "the run finished before it could be killed"
    out = run(stage_command("pretrain", exp, root / "config", stats, killed))
    resumed = int(out.split("resuming from")[1].split("step_")[1][:8])
    assert resumed >= 9 and f"step {resumed + 1}/" in out and "step 1/" not in out
    a, b = state(straight), state(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (killed.parent / "metrics.jsonl").open()]
    assert steps == list(range(1, 31))  # 48 samples // 8 = 6 steps x 5 epochs, no duplicate after resume
    assert (killed.parent / "loss.png").stat().st_size > 0
    assert len(checkpoint.list_checkpoints(killed.parent / "checkpoints")) == 2  # keep_checkpoints


def test_checkpoints_and_final_load_with_weights_only(setup, straight):
    root, _, _ = setup
    final = torch.load(straight, weights_only=True)
    assert {"model", "model_config", "experiment", "stage", "step", "samples_seen"} <= final.keys()
    assert (final["stage"], final["step"], final["samples_seen"]) == ("pretrain", 30, 240)
    last = checkpoint.list_checkpoints(root / "straight" / "checkpoints")[-1]
    ckpt = torch.load(last, weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "data", "step", "samples_seen", "method"} <= ckpt.keys()
    assert ckpt["data"] == {"epoch": 4, "batch": 3} and ckpt["step"] == 27
    checkpoint.set_rng_state(ckpt["rng"][0])
    first = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    checkpoint.set_rng_state(ckpt["rng"][0])
    assert torch.equal(first[0], torch.rand(3)) and first[1] == __import__("random").random()


@pytest.mark.slow
def test_finetune_resamples_position_embeddings(setup, straight):
    root, exp, stats = setup
    out = root / "finetune" / "final.pt"
    log = run(stage_command("finetune", exp, root / "config", stats, out, init=straight))
    assert "torch.distributed.run --standalone --nproc_per_node 1" in log
    loaded = load_model(out)
    model, config = loaded.model, loaded.model_config
    assert (config["vision_cfg"]["image_size"], config["text_cfg"]["context_length"]) == (24, 16)
    assert model.visual.positional_embedding.shape[0] == 36 + 1 and model.positional_embedding.shape[0] == 16
    image, text, _ = model(torch.randn(2, 3, 24, 24), torch.randint(1, 100, (2, 16)))
    assert image.shape == text.shape == (2, 16)


def test_grad_accumulation_is_mean_of_micro_batch_losses():
    torch.manual_seed(0)
    model = create_model(TINY_MODEL)
    module = TrainModule(model, create_method("clip", model, {}))
    g = torch.Generator().manual_seed(2)
    batches = [{"image": torch.randn(4, 3, 16, 16, generator=g), "text": torch.randint(1, 900, (4, 12), generator=g)}
               for _ in range(2)]
    twin = copy.deepcopy(module)
    opts = [build_optimizer(list(m.named_parameters()), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)
            for m in (module, twin)]
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train_step(module, module.model, opts[0], scaler, batches, device=torch.device("cpu"), precision="fp32",
               grad_clip=None, logit_scale_max=100)
    loss = (twin(batches[0])["loss"] + twin(batches[1])["loss"]) / 2  # one backward over both halves
    loss.backward()
    opts[1].step()
    for (name, a), b in zip(module.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)
    joined = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    assert abs(float(twin(joined)["loss"].detach()) - float(loss.detach())) > 1e-3  # documented: not one big batch's loss


def test_optimizer_decay_groups_and_schedule():
    model = create_model(TINY_MODEL)
    opt = build_optimizer(list(model.named_parameters()), lr=1.0, weight_decay=0.2, betas=(0.9, 0.98), eps=1e-6)
    decayed, plain = (set(map(id, g["params"])) for g in opt.param_groups)
    names = {id(p): n for n, p in model.named_parameters()}
    assert id(model.logit_scale) in plain and id(model.visual.class_embedding) in plain
    params = dict(model.named_parameters())
    assert all(params[names[i]].ndim >= 2 for i in decayed)  # matrices, conv kernels, 2-D embeddings
    assert not any(n.endswith("bias") or "ln_" in n for n in map(names.get, decayed))
    assert {"transformer.resblocks.0.ln_1.weight", "visual.conv1.weight"} <= {names[i] for i in plain | decayed}
    assert id(params["transformer.resblocks.0.ln_1.weight"]) in plain
    sched = build_scheduler(opt, total=10, warmup=4)
    lrs = []
    for step in range(10):
        sched.step_update(step + 1)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] > 0
    assert total_steps(data_samples=100, batch_size=8, epochs=2.5, samples=None) == 30
    assert total_steps(data_samples=100, batch_size=8, epochs=1, samples=20) == 3


def test_launch_commands(monkeypatch):
    single = launch.torchrun_command(["pretrain", "--out", "x"], processes=2, nodes=1, env={})
    assert single[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                          "pipeline", "pretrain", "--out", "x"]
    monkeypatch.setattr(launch, "first_host", lambda nodelist: {"gpu[01-02]": "gpu01"}[nodelist])
    env = {"SLURM_NNODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_JOB_ID": "123"}
    multi = launch.torchrun_command(["finetune"], processes=4, nodes=2, env=env)
    assert multi[3:13] == ["--nnodes", "2", "--node_rank", "1", "--master_addr", "gpu01", "--master_port",
                           "20123", "--nproc_per_node", "4"]
    assert launch.srun_command(["finetune"], nodes=2)[:7] == [
        "srun", "--overlap", "--kill-on-bad-exit=1", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
        f"--export=ALL,{launch.NODE_FLAG}=1"]
