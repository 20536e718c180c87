"""Training engine: kill + resume is bit-identical, checkpoint format, finetune from a pretrain at another image
size / context length, gradient accumulation == one larger batch, temperature clamps, bf16 stages, launcher
commands, optimizer rules and schedules."""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from _train_fixtures import TINY_MODEL, write_experiment, write_shards
from pipeline.errors import UserError
from pipeline.methods import create_method
from pipeline.models import create_model, load_model
from pipeline import launch
from pipeline.reduction.image import PatchReduction, apply_image_reduction
from pipeline.train import checkpoint
from pipeline.train.loop import TrainModule
from pipeline.train.optim import WarmupCosine, build_optimizer, total_steps
from pipeline.train.step import train_step

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
    assert {"model", "optimizer", "scaler", "rng", "data", "step", "samples_seen", "method", "method_ranks"} <= ckpt.keys()
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


def _accum_setup(name, seed=0):
    """A float64 tiny model + method in a TrainModule, and 2 micro-batches of 4 (image, text, one view)."""
    torch.manual_seed(seed)
    model = create_model(TINY_MODEL).double()
    options = {"filip_top_k": 2, "filip_token_dim": 8, "filip_mask_captions": False}  # MLM draws differ by batch
    core = TrainModule(model, create_method(name, model, options).double())
    g = torch.Generator().manual_seed(2)
    batches = [{"image": torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64),
                "views": torch.randn(4, 1, 3, 16, 16, generator=g, dtype=torch.float64),
                "text": torch.randint(1, 900, (4, 12), generator=g)} for _ in range(2)]
    return core, batches


def _one_step(core, batches):
    opt = build_optimizer({"": core}, lr=1e-3, weight_decay=0.1, rule="open_clip", betas=(0.9, 0.98), eps=1e-6)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    grads = {}

    def keep_grads(optimizer, args, kwargs):  # the gradient the step applies (zero_grad clears it after)
        grads.update({n: p.grad.clone() for n, p in core.named_parameters() if p.grad is not None})

    opt.register_step_pre_hook(keep_grads)
    out = train_step(core, core, opt, scaler, batches, device=torch.device("cpu"), precision="fp32", grad_clip=None,
                     bounds=[])
    return out["loss"], grads


@pytest.mark.parametrize("name", ["clip", "filip"])
def test_grad_accumulation_equals_one_batch_k_times_larger(name):
    """open_clip's --accum-freq: 2 micro-batches of 4 give the loss and gradient of one batch of 8 (float64)."""
    core, batches = _accum_setup(name)
    twin = copy.deepcopy(core)
    loss, grads = _one_step(core, batches)
    joined = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    big_loss, big_grads = _one_step(twin, [joined])
    assert grads.keys() == big_grads.keys() and len(grads) > 10
    torch.testing.assert_close(loss, big_loss, rtol=1e-10, atol=1e-12)
    for key, grad in big_grads.items():
        torch.testing.assert_close(grads[key], grad, rtol=1e-9, atol=1e-12, msg=key)
    for (key, a), b in zip(core.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=key)
    halves = [twin(b)["loss"].detach() for b in batches]  # the old semantics (mean of micro-batch losses) differ
    assert abs(float(sum(halves) / 2) - float(big_loss)) > 1e-3


def test_grad_accumulation_replays_the_patch_masks_of_each_micro_batch():
    core, batches = _accum_setup("clip")
    apply_image_reduction(core.model, "random", 5, 2)
    kept = []
    original = PatchReduction.kept_indices
    PatchReduction.kept_indices = lambda self, *a, **k: kept.append(original(self, *a, **k)) or kept[-1]
    try:
        _one_step(core, batches)
    finally:
        PatchReduction.kept_indices = original
    assert len(kept) == 4  # 2 cached passes, 2 recomputed ones
    assert torch.equal(kept[0], kept[2]) and torch.equal(kept[1], kept[3]) and not torch.equal(kept[0], kept[1])


def test_methods_with_batch_statistics_refuse_accumulation(tmp_path):
    from pipeline.config import load_experiment
    from pipeline.train.checks import check_training

    exp = write_experiment(tmp_path / "config", grad_accum_steps=2)
    raw = yaml.safe_load(exp.read_text())
    check_training(load_experiment(exp, tmp_path / "config"), "pretrain", where=str(exp))  # clip accumulates
    for method in ("slip", "simclr", "declip", "defilip"):
        exp.write_text(yaml.safe_dump(dict(raw, method=method)))
        with pytest.raises(UserError, match=rf"{exp}: pretrain.grad_accum_steps: method '{method}' cannot"):
            check_training(load_experiment(exp, tmp_path / "config"), "pretrain", where=str(exp))
    exp.write_text(yaml.safe_dump(dict(raw, pretrain=dict(raw["pretrain"], grad_accum_steps=1, min_lr=0.5))))
    with pytest.raises(UserError, match=r"pretrain.min_lr: 0.5 exceeds lr 0.001"):
        check_training(load_experiment(exp, tmp_path / "config"), "pretrain", where=str(exp))
    odd = dict(raw["model"]["config"], vision_cfg=dict(raw["model"]["config"]["vision_cfg"], width=30))
    exp.write_text(yaml.safe_dump(dict(raw, model={"config": odd}, pretrain=dict(raw["pretrain"], grad_accum_steps=1,
                                                                             pos_embed_type="sin_cos_2d"))))
    with pytest.raises(UserError, match=r"pretrain.pos_embed_type: sin_cos_2d needs a vision width divisible by 4"):
        check_training(load_experiment(exp, tmp_path / "config"), "pretrain", where=str(exp))


def test_temperatures_are_clamped_after_the_step_not_in_the_forward():
    """FILIP's token temperature above its bound still gets a gradient; the trainer clamps it around the
    step to token_logit_scale_bounds, and model.logit_scale to the stage's logit_scale_bounds."""
    core, batches = _accum_setup("filip")
    scale = core.method.token_head.token_logit_scale
    with torch.no_grad():
        scale.fill_(7.0)  # above the DeCLIP code's [3, 6]
        core.model.logit_scale.fill_(-1.0)
    core(batches[0])["loss"].backward()
    assert scale.grad is not None and scale.grad.abs() > 0  # a forward clamp would give exactly 0
    core.zero_grad()
    opt = build_optimizer({"": core}, lr=1e-3, weight_decay=0.1, rule="open_clip", betas=(0.9, 0.98), eps=1e-6)
    bounds = [(core.model.logit_scale, 0.0, math.log(100))] + core.method.scale_bounds()
    assert bounds[1][1:] == (3.0, 6.0)
    train_step(core, core, opt, torch.amp.GradScaler("cpu", enabled=False), batches[:1], device=torch.device("cpu"),
               precision="fp32", grad_clip=None, bounds=bounds)
    # clamped to 6 before the step (the DeCLIP code's clamp after the forward), moved by one AdamW step of lr
    # 1e-3, clamped again after it; model.logit_scale (frozen: filip_clip_weight 0) only clamped
    assert 6.0 - 1.1e-3 < float(scale.detach()) < 6.0 and float(core.model.logit_scale.detach()) == 0.0


BF16_OPTIONS = {"ssl_mlp_dim": 32, "ssl_emb_dim": 8, "simsiam_dim": 16, "simsiam_pred_dim": 8, "nn_queue_size": 64}


@pytest.mark.parametrize("method", ["clip", "simclr", "slip", "declip", "filip", "defilip"])
def test_bf16_pretrain_and_finetune_learn_on_cpu(tmp_path, method):
    """CPU autocast runs bf16: every method's pretrain, and a finetune from it, moves the weights and stays
    finite (the loss, every weight, the final model's outputs)."""
    from pipeline.config import load_experiment
    from pipeline.train.loop import build_model, train

    stats = write_shards(tmp_path / "data" / "tiny", shards=1, per_shard=16)
    path = write_experiment(tmp_path / "config", epochs=1, precision="bf16", warmup_steps=0)
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(dict(raw, method=method, method_options=BF16_OPTIONS,
                                        finetune=dict(raw["finetune"], precision="bf16", warmup_steps=0))))
    exp = load_experiment(path, tmp_path / "config")
    pre = train(experiment=exp, stage_name="pretrain", train_data=stats, out=tmp_path / "pre" / "final.pt")
    stages = [("pretrain", pre, None)]
    if method == "clip":
        stages.append(("finetune", train(experiment=exp, stage_name="finetune", train_data=stats,
                                          out=tmp_path / "fine" / "final.pt", init=pre), pre))
    for stage, out, init in stages:
        probe = build_model(exp, stage, init)[0]
        start = {k: v.clone() for k, v in probe.state_dict().items()}
        create_method(method, probe, BF16_OPTIONS)  # what the method trains (simclr: the image tower)
        trainable = {n for n, p in probe.named_parameters() if p.requires_grad}
        trained = torch.load(out, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in trained.values())
        moved = {k for k in start if not torch.equal(start[k], trained[k])}
        assert "visual.conv1.weight" in trainable and trainable <= moved, (stage, trainable - moved)
        lines = [json.loads(x) for x in (out.parent / "metrics.jsonl").read_text().splitlines()]
        assert lines and all(math.isfinite(x["loss"]) for x in lines)
        loaded = load_model(out).model
        size, length = loaded.visual.image_size[0], loaded.positional_embedding.shape[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            image, text, _ = loaded(torch.randn(2, 3, size, size), torch.randint(1, 100, (2, length)))
        assert torch.isfinite(image.float()).all() and torch.isfinite(text.float()).all()


def _groups(model, rule):
    opt = build_optimizer({"": model}, lr=1.0, weight_decay=0.2, rule=rule, betas=(0.9, 0.98), eps=1e-6)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, plain = ({names[id(p)] for p in g["params"]} for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.2, 0.0]
    assert decayed | plain == set(names.values()) and not decayed & plain
    return decayed


def test_weight_decay_rules():
    model = create_model(TINY_MODEL)
    params = dict(model.named_parameters())
    attn_bias, cls = "transformer.resblocks.0.attn.in_proj_bias", "visual.class_embedding"
    norm, linear_bias = "transformer.resblocks.0.ln_1.weight", "transformer.resblocks.0.mlp.c_fc.bias"
    open_clip_rule = _groups(model, "open_clip")  # open_clip_train: matrices only, never logit_scale
    assert open_clip_rule == {n for n, p in params.items() if p.ndim >= 2}
    assert "logit_scale" not in open_clip_rule and {cls, attn_bias, norm} - open_clip_rule == {cls, attn_bias, norm}
    assert _groups(model, "slip") == open_clip_rule | {cls}  # SLIP's timm class token is 3-D: decayed
    declip = _groups(model, "declip")  # by owning module: norms, Linear/Conv biases and temperatures exempt
    assert {cls, attn_bias, "visual.positional_embedding", "text_projection"} <= declip
    assert not {"logit_scale", norm, linear_bias, "transformer.resblocks.0.attn.out_proj.bias"} & declip
    assert declip == {n for n in params if n != "logit_scale" and "ln_" not in n  # every norm is an ln_*
                      and (not n.endswith(".bias") or n.endswith("in_proj_bias"))}


def test_optimizer_skips_frozen_parameters_and_counts_steps():
    model = create_model(TINY_MODEL)
    model.visual.conv1.requires_grad_(False)  # stage freeze_patch_embed
    opt = build_optimizer({"": model}, lr=1.0, weight_decay=0.2, rule="open_clip", betas=(0.9, 0.98), eps=1e-6)
    assert all(p is not model.visual.conv1.weight for g in opt.param_groups for p in g["params"])
    assert total_steps(data_samples=100, batch_size=8, epochs=2.5, samples=None) == 30
    assert total_steps(data_samples=100, batch_size=8, epochs=1, samples=20) == 3


def _lrs(total, warmup, lr, start=0.0, end=0.0):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = WarmupCosine(opt, lr=lr, total=total, warmup=warmup, warmup_start_lr=start, min_lr=end)
    out = []
    for step in range(total):
        schedule.step(step)
        out.append(opt.param_groups[0]["lr"])
    return out


def test_schedule_is_open_clips_cosine_lr_with_a_warmup_start_and_a_floor():
    from open_clip_train.scheduler import cosine_lr

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = cosine_lr(opt, 2e-3, 7, 50)
    assert _lrs(50, 7, 2e-3) == [theirs(step) for step in range(50)]  # CLIPA: open_clip's schedule exactly
    # SLIP (utils.cosine_scheduler): after the warmup lr_end + (lr - lr_end)(1 + cos(pi i / (total - W))) / 2
    lr, start, end, warmup, total = 3e-3, 1e-6, 1e-5, 10, 60
    ours = _lrs(total, warmup, lr, start, end)
    slip_cosine = [end + 0.5 * (lr - end) * (1 + math.cos(math.pi * i / (total - warmup))) for i in range(total - warmup)]
    assert ours[warmup:] == pytest.approx(slip_cosine, rel=1e-12)
    slip_warmup = [start + (lr - start) * i / (warmup - 1) for i in range(warmup)]  # np.linspace(start, lr, W)
    assert ours[warmup - 1] == lr == slip_warmup[-1] and ours[0] == pytest.approx(start + (lr - start) / warmup)
    assert max(abs(a - b) for a, b in zip(ours, slip_warmup)) <= (lr - start) / warmup
    assert end < ours[-1] < ours[-2] and ours[-1] < end + (lr - end) / (total - warmup) ** 2 * 5
    from pipeline.config import experiment_from_dict
    from pipeline.train.optim import warmup_length

    raw = {"data": {"train": "tiny"}, "model": {"config": TINY_MODEL}, "pretrain": {"batch_size": 64, "warmup_steps": 7}}
    assert warmup_length(experiment_from_dict(raw, "t", "t").pretrain, data_samples=1000) == 7
    raw["pretrain"]["warmup_epochs"] = 1.5  # SLIP's --warmup-epochs: 1.5 x (1000 // 64) steps
    assert warmup_length(experiment_from_dict(raw, "t", "t").pretrain, data_samples=1000) == 22
    declip = _lrs(20, 5, 1e-3, start=1e-4)  # DeCLIP: warmup from base_lr 1e-4 to warmup_lr 1e-3
    assert declip[:5] == pytest.approx([1e-4 + 9e-4 * k / 5 for k in range(1, 6)]) and declip[-1] > 0


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
