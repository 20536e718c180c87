"""FT-CLIP (timm ViT from CLIP weights, layer decay, EMA, DeepSpeed on CPU), WiSE-FT, ResNet-50 baseline.

DeepSpeed runs for real, in subprocesses (so no process group leaks into other tests): one process with
ZeRO 1, two processes under torchrun with ZeRO 2. Its first start on a machine compiles an op (~2 min).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from pipeline.__main__ import main
from pipeline.evaluate._finetune.vit import clip_to_timm
from pipeline.evaluate.finetune_eval import layer_decay_groups
from pipeline.evaluate.wiseft import interpolate
from pipeline.models import create_model

from _eval_fixtures import (TINY_CONFIG, eval_argv, save_tiny_checkpoint, write_digits_imagefolder,
                            write_eval_experiment)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(key, None)


def _run(args, timeout=300):
    proc = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_timm_vit_reproduces_clip_logits(quick_gelu):
    cfg = {**TINY_CONFIG, "quick_gelu": quick_gelu}
    torch.manual_seed(0)
    clip = create_model(cfg).eval()
    head = torch.randn(5, cfg["embed_dim"])
    vit = clip_to_timm(clip, cfg, head).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(vit(x), clip.encode_image(x, normalize=True) @ head.T, atol=1e-5)


def test_layer_decay_scales_and_interpolation():
    vit = clip_to_timm(create_model(TINY_CONFIG), TINY_CONFIG, torch.randn(3, 16))
    groups = layer_decay_groups(vit, weight_decay=0.05, layer_decay=0.6)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(vit.named_parameters())
    # 1 block: stem (patch/pos/cls/norm_pre) = layer 0, block 0 = layer 1, final norm/head = layer 2
    assert by_param[id(named["pos_embed"])]["lr_scale"] == pytest.approx(0.36)
    assert by_param[id(named["blocks.0.attn.qkv.weight"])]["lr_scale"] == pytest.approx(0.6)
    assert by_param[id(named["head.classes.weight"])]["lr_scale"] == 1.0
    assert by_param[id(named["blocks.0.attn.qkv.bias"])]["weight_decay"] == 0.0
    assert by_param[id(named["blocks.0.attn.qkv.weight"])]["weight_decay"] == 0.05
    a, b = {"w": torch.zeros(2), "n": torch.tensor(3)}, {"w": torch.ones(2), "n": torch.tensor(7)}
    assert torch.equal(interpolate(a, b, 0.25)["w"], torch.full((2,), 0.25)) and interpolate(a, b, 0.25)["n"] == 7


PAIR = {"train": "digits_train", "test": "digits"}
FINETUNE = {"datasets": [PAIR], "batch_size": 32, "lr": 5e-3, "warmup_epochs": 0.5, "ema_decay": 0.9}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    return {"root": root, "train": write_digits_imagefolder(root / "train", range(0, 160)),
            "test": write_digits_imagefolder(root / "test", range(1600, 1660)),
            "ckpt": save_tiny_checkpoint(root / "ck" / "final.pt", stage="finetune")}


def _experiment(d, name, **evaluate):
    return write_eval_experiment(d["root"] / "config", {"batch_size": 64, **evaluate}, name=name,
                                 datasets={"digits": "mnist", "digits_train": "mnist"})


def _ft_argv(d, experiment, out):
    return eval_argv("finetune_eval", experiment, "digits", checkpoint=d["ckpt"],
                     inputs={"train": d["train"], "test": d["test"]},
                     outputs={"result": out, "model": out.with_suffix(".pt")})


@pytest.mark.slow
def test_finetune_one_process_then_wiseft(digits):
    d, root = digits, digits["root"]
    # augmentation off here (the two-process test runs RandAugment + erasing) so learning shows in 4 epochs
    exp = _experiment(d, "one", finetune_eval={**FINETUNE, "zero_stage": 1, "epochs": 4, "randaugment": "",
                                                "reprob": 0, "crop_min": 0.9},
                      zeroshot={"datasets": ["digits"]}, wiseft={"datasets": [PAIR], "alphas": [0, 0.5, 1]})
    _run([sys.executable, "-m", "pipeline", *_ft_argv(d, exp, root / "ft.json")])
    ft = json.loads((root / "ft.json").read_text())
    assert ft["task"] == "finetune_classification" and len(ft["history"]) == 4
    m = ft["metrics"]
    assert {"acc1", "acc5", "mean_per_class_recall", "ema_acc1", "best_epoch", "best_ema_epoch"} <= set(m)
    assert m["best_acc1"] == max(h["test"]["acc1"] for h in ft["history"])
    assert ft["history"][m["best_epoch"] - 1]["test"]["acc1"] == m["best_acc1"]
    losses = [h["train_loss"] for h in ft["history"]]
    assert losses[-1] < losses[0] - 0.02, losses
    # zeroshot and wiseft never start DeepSpeed: run them in-process
    assert main(eval_argv("zeroshot", exp, "digits", checkpoint=d["ckpt"], inputs={"test": d["test"]},
                          outputs={"result": root / "zs.json"})) == 0
    assert main(eval_argv("wiseft", exp, "digits", checkpoint=d["ckpt"],
                          inputs={"test": d["test"], "finetuned": root / "ft.pt"},
                          outputs={"result": root / "w.json", "plot": root / "w.png"})) == 0
    w = json.loads((root / "w.json").read_text())["metrics"]
    zs = json.loads((root / "zs.json").read_text())["metrics"]
    assert w["acc1@alpha=0"] == pytest.approx(zs["acc1"])    # alpha 0 is the zero-shot classifier itself
    assert w["acc1@alpha=1"] == pytest.approx(m["acc1"])     # alpha 1 is the fine-tuned model
    assert w["acc1"] == w["acc1@alpha=0.5"] and (root / "w.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_finetune_two_processes_zero2_and_resnet_baseline(digits):
    d, root = digits, digits["root"]
    # processes: 2 in the section: `python -m pipeline finetune_eval` starts torchrun itself
    exp = _experiment(d, "two", finetune_eval={**FINETUNE, "zero_stage": 2, "epochs": 1, "processes": 2},
                      supervised_baseline={"datasets": [PAIR], "epochs": 1, "batch_size": 32, "image_size": 32})
    log = _run([sys.executable, "-m", "pipeline", *_ft_argv(d, exp, root / "ft2.json")]).stdout
    assert "--nproc_per_node 2" in log
    ft2 = json.loads((root / "ft2.json").read_text())
    assert len(ft2["history"]) == 1 and 0 <= ft2["metrics"]["acc1"] <= 1
    _run([sys.executable, "-m", "pipeline", *eval_argv("supervised_baseline", exp, "digits",
                                                        inputs={"train": d["train"], "test": d["test"]},
                                                        outputs={"result": root / "rn.json"})])
    rn = json.loads((root / "rn.json").read_text())
    assert (rn["checkpoint"], rn["pretrained"], rn["model"]) == ("resnet50", "random init", "two")
