"""The training step, schedule and checks at their edges (mutation testing, docs/robustness.md): the precision a
step runs in, which backward of an accumulated step DDP synchronises, one-step stages, a schedule built from a
stage, equal bounds and their messages."""
from contextlib import nullcontext

import pytest
import torch

from _train_fixtures import TINY_MODEL
from pipeline.config import experiment_from_dict
from pipeline.errors import UserError
from pipeline.train.checks import check_training
from pipeline.train.optim import build_optimizer, build_scheduler, total_steps
from pipeline.train.step import _no_sync, autocast, train_step
from test_train import _accum_setup

CPU = torch.device("cpu")


def test_autocast_runs_the_stage_precision():
    x = torch.ones(2, 2)
    assert isinstance(autocast(CPU, "fp32"), nullcontext)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with autocast(CPU, precision):
            assert (x @ x).dtype == dtype, precision


class Recorder(torch.nn.Module):
    """A TrainModule seen through DDP's `no_sync`: records, per forward, whether gradients were held back."""

    def __init__(self, core):
        super().__init__()
        self.core, self.held, self.log = core, False, []

    def no_sync(self):
        outer = self

        class Hold:
            def __enter__(self):
                outer.held = True

            def __exit__(self, *exc):
                outer.held = False

        return Hold()

    def forward(self, batch, **kwargs):
        self.log.append(self.held)
        return self.core(batch, **kwargs)


def _step(module, core, batches, precision):
    opt = build_optimizer({"": core}, lr=1e-3, weight_decay=0.1, rule="open_clip", betas=(0.9, 0.98), eps=1e-6)
    return train_step(module, core, opt, torch.amp.GradScaler("cpu", enabled=False), batches, device=CPU,
                      precision=precision, grad_clip=None, bounds=[])["loss"]


def test_accumulation_synchronises_only_the_last_backward():
    core, batches = _accum_setup("clip")
    module = Recorder(core)
    _step(module, core, batches + [dict(batches[0])], "fp32")  # 3 micro-batches: 3 cached, 3 recomputed passes
    assert module.log == [False, False, False, True, True, False]
    assert isinstance(_no_sync(module, last=True), nullcontext) and isinstance(_no_sync(core, last=False),
                                                                               nullcontext)


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_a_bf16_step_computes_in_bf16(micro_batches):
    core, batches = _accum_setup("clip")
    core = core.float()
    batches = [{k: v.float() if v.is_floating_point() else v for k, v in b.items()} for b in batches[:micro_batches]]
    joined = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = core(joined)["loss"]
    with torch.no_grad():
        full = core(joined)["loss"]
    got = _step(core, core, batches, "bf16")
    assert got.item() == pytest.approx(expected.item(), abs=1e-6) and abs(got.item() - full.item()) > 1e-4


def test_one_step_stages_and_a_batch_of_the_whole_data():
    assert total_steps(data_samples=100, batch_size=8, epochs=None, samples=1) == 1
    assert total_steps(data_samples=100, batch_size=8, epochs=0.01, samples=None) == 1
    assert total_steps(data_samples=8, batch_size=8, epochs=3, samples=None) == 3  # one step per epoch
    with pytest.raises(UserError, match=r"^batch_size: 9 exceeds the 8 training samples$"):
        total_steps(data_samples=8, batch_size=9, epochs=1, samples=None)


def _experiment(pretrain=None, model=None, method_options=None, method="clip"):
    raw = {"data": {"train": "tiny"}, "method": method, "model": model or {"config": TINY_MODEL},
           "pretrain": {"batch_size": 10, **(pretrain or {})}, "method_options": method_options or {}}
    return experiment_from_dict(raw, "t", "t")


def test_scheduler_from_a_stage_uses_its_warmup_start_and_epochs():
    stage = _experiment({"lr": 1e-3, "warmup_epochs": 2, "warmup_start_lr": 1e-4, "min_lr": 1e-5}).pretrain
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_scheduler(opt, stage, total=50, data_samples=100)  # warmup: 2 x (100 // 10) = 20 steps
    assert schedule.warmup == 20 and schedule.lr_at(0) == pytest.approx(1e-4 + 9e-4 / 20)
    assert schedule.lr_at(19) == pytest.approx(1e-3) and schedule.lr_at(49) > 1e-5


def test_checks_accept_equal_bounds_and_name_the_key():
    check_training(_experiment({"lr": 1e-3, "min_lr": 1e-3, "warmup_start_lr": 1e-3,
                                "logit_scale_bounds": [2.0, 2.0]}, method_options={"token_logit_scale_bounds": [4, 4]}),
                   "pretrain", where="E.yaml")
    with pytest.raises(UserError, match=r"^E\.yaml: pretrain\.logit_scale_bounds: low bound 3 exceeds high bound 2$"):
        check_training(_experiment({"logit_scale_bounds": [3.0, 2.0]}), "pretrain", where="E.yaml")
    with pytest.raises(UserError, match=r"^E\.yaml: method_options\.token_logit_scale_bounds: low bound 5 exceeds"):
        check_training(_experiment(method_options={"token_logit_scale_bounds": [5, 4]}), "pretrain", where="E.yaml")
    check_training(_experiment({"pos_embed_type": "sin_cos_2d"}), "pretrain", where="E.yaml")  # width 32
    check_training(_experiment({"pos_embed_type": "sin_cos_2d"}, model={"name": "ViT-B-32"}), "pretrain",
                   where="E.yaml")  # a named open_clip config: width 768
    with pytest.raises(UserError, match=r"use 1 \(more processes or a smaller batch_size\), or a method that splits "
                                        r"features from its loss \(clip, filip\)$"):
        check_training(_experiment({"grad_accum_steps": 2}, method="slip"), "pretrain", where="E.yaml")


def test_grad_clip_bounds_the_norm_the_step_applies():
    core, batches = _accum_setup("clip")
    opt = build_optimizer({"": core}, lr=1e-3, weight_decay=0.1, rule="open_clip", betas=(0.9, 0.98), eps=1e-6)
    norms = []
    opt.register_step_pre_hook(lambda o, a, k: norms.append(torch.norm(torch.stack(
        [p.grad.norm() for g in o.param_groups for p in g["params"] if p.grad is not None]))))
    train_step(core, core, opt, torch.amp.GradScaler("cpu", enabled=False), batches[:1], device=CPU,
               precision="fp32", grad_clip=0.01, bounds=[])
    assert norms[0].item() == pytest.approx(0.01, rel=1e-6)  # the unclipped norm is far above (a random model)


def test_optimizer_holds_a_tied_parameter_once_with_the_stage_settings():
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    b.weight = a.weight
    opt = build_optimizer({"": torch.nn.Sequential(a, b)}, lr=0.02, weight_decay=0.1, rule="open_clip",
                          betas=(0.8, 0.95), eps=1e-7)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == 3 and sum(p is a.weight for p in params) == 1
    for group in opt.param_groups:
        assert (group["lr"], group["betas"], group["eps"]) == (0.02, (0.8, 0.95), 1e-7)
        assert group["fused"] is True  # torch's fused AdamW on CPU float parameters (docstring)


def test_fp16_clips_the_unscaled_gradient():
    """fp16 stages run a GradScaler (enabled on CPU too): the clip must see the gradient after unscaling."""
    core, batches = _accum_setup("clip")
    core = core.float()
    batches = [{k: v.float() if v.is_floating_point() else v for k, v in batches[0].items()}]
    opt = build_optimizer({"": core}, lr=1e-3, weight_decay=0.1, rule="open_clip", betas=(0.9, 0.98), eps=1e-6)
    norms = []
    opt.register_step_pre_hook(lambda o, a, k: norms.append(torch.norm(torch.stack(
        [p.grad.norm() for g in o.param_groups for p in g["params"] if p.grad is not None]))))
    scaler = torch.amp.GradScaler("cpu", init_scale=64.0, enabled=True)
    train_step(core, core, opt, scaler, batches, device=CPU, precision="fp16", grad_clip=0.01, bounds=[])
    assert norms[0].item() == pytest.approx(0.01, rel=1e-4)


def test_temperature_is_clamped_again_after_the_step():
    """clamp_scales is @torch.no_grad()-decorated, which mutmut 3 does not mutate: checked by hand here. Equal
    bounds pin the temperature; AdamW's first step moves every trained parameter by about lr, so only the clamp
    after the step brings it back."""
    core, batches = _accum_setup("clip")
    scale = core.model.logit_scale
    value = float(scale.detach())
    opt = build_optimizer({"": core}, lr=0.1, weight_decay=0.0, rule="open_clip", betas=(0.9, 0.98), eps=1e-6)
    train_step(core, core, opt, torch.amp.GradScaler("cpu", enabled=False), batches[:1], device=CPU,
               precision="fp32", grad_clip=None, bounds=[(scale, value, value)])
    assert float(scale.detach()) == value
