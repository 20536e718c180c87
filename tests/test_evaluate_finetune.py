"""FT-CLIP (timm ViT from CLIP weights, layer decay, EMA, DeepSpeed on CPU), WiSE-FT, ResNet-50 baseline.

DeepSpeed runs for real, in subprocesses (so no process group leaks into other tests): one process with
ZeRO 1, two processes under torchrun with ZeRO 2. Its first start on a machine compiles an op (~2 min).
"""
from __future__ import annotations

import json
import math
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
    vit = clip_to_timm(clip, cfg, head="zeroshot", head_weight=head, head_init_scale=1.0, drop_path=0.0, seed=0).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(vit(x), clip.encode_image(x, normalize=True) @ head.T, atol=1e-5)


def _reference_depth(name: str, blocks: int) -> int:
    """FT-CLIP optim_factory.get_num_layer_for_vit (BEiT's, with CLIP's names), on timm's parameter names:
    embeddings and the pre-transformer norm 0, block i -> i + 1, everything else (final norm, fc_norm, head) top."""
    if name.split(".")[0] in ("cls_token", "pos_embed", "patch_embed", "norm_pre"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return blocks + 1


@pytest.mark.parametrize("head", ["zeroshot", "ftclip"])
def test_layer_decay_depths_follow_ftclip_for_12_blocks(head, capsys):
    cfg = {**TINY_CONFIG, "vision_cfg": {**TINY_CONFIG["vision_cfg"], "layers": 12}}
    vit = clip_to_timm(create_model(cfg), cfg, head=head, head_weight=torch.randn(3, 16), num_classes=3,
                       head_init_scale=0.001, drop_path=0.0, seed=0)
    groups = layer_decay_groups(vit, weight_decay=0.05, layer_decay=0.6, weight_decay_all=False)
    by_param = {id(p): g for g in groups for p in g["params"]}
    scales = {n: by_param[id(p)]["lr_scale"] for n, p in vit.named_parameters()}
    for name, scale in scales.items():
        if not name.startswith("blocks.") or name.endswith("norm1.weight"):
            print(f"{name:28s} lr x {scale:.6f}")
    wrong = {n: s for n, s in scales.items() if s != pytest.approx(0.6 ** (13 - _reference_depth(n, 12)))}
    assert not wrong, wrong
    # the two norms the issue names: ln_pre at depth 0 (0.6^13 = 0.0013), the final norm / fc_norm at the top (1.0)
    top_norm = "fc_norm.weight" if head == "ftclip" else "norm.weight"
    assert scales["norm_pre.weight"] == pytest.approx(0.6 ** 13) and scales[top_norm] == 1.0
    assert "norm_pre.weight" in capsys.readouterr().out


def test_ftclip_head_as_published():
    """FT-CLIP's model: no ln_post / proj, fc_norm per patch token then the mean, linear head x0.001; WiSE-FT's
    interpolation works in fp32 on bf16 / fp16 inputs."""
    clip = create_model(TINY_CONFIG).eval()
    vit = clip_to_timm(clip, TINY_CONFIG, head="ftclip", num_classes=3, head_init_scale=0.001, drop_path=0.0,
                       seed=0).eval()
    names = set(dict(vit.named_parameters()))
    assert {"fc_norm.weight", "head.weight", "head.bias"} <= names and not any(n.startswith("norm.") for n in names)
    assert vit.head.weight.abs().max() <= 0.002 + 1e-9 and vit.head.bias.abs().max() <= 0.001 / 32 ** 0.5
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        tokens = vit.forward_features(x)
        expected = vit.head(vit.fc_norm(tokens[:, 1:]).mean(1))
        assert torch.allclose(vit(x), expected)
        assert not torch.allclose(expected, vit.head(vit.fc_norm(tokens[:, 1:].mean(1))))  # not timm's avg-then-norm
    a = {"w": torch.zeros(2, dtype=torch.bfloat16), "n": torch.tensor(3)}
    b = {"w": torch.ones(2, dtype=torch.float16), "n": torch.tensor(7)}
    mixed = interpolate(a, b, 0.25)
    assert mixed["w"].dtype == torch.float32 and torch.equal(mixed["w"], torch.full((2,), 0.25)) and mixed["n"] == 7


PAIR = {"train": "digits_train", "test": "digits"}
FINETUNE = {"datasets": [PAIR], "batch_size": 32, "lr": 5e-3, "warmup_epochs": 0.5, "ema_decay": 0.9,
            "head": "zeroshot", "freeze_patch_embed": False, "val_fraction": 0.25}


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


def _start_weights(d):
    """The timm ViT (zero-shot head) finetune_eval starts from, as a state dict."""
    from pipeline.evaluate._assets import load_classnames, load_templates
    from pipeline.evaluate.finetune_eval import build_classifier
    from pipeline.models import load_model

    loaded = load_model(d["ckpt"])
    vit = build_classifier(clip_model=loaded.model, model_config=loaded.model_config,
                           classnames=load_classnames("mnist"), templates=load_templates("mnist"), head="zeroshot",
                           head_init_scale=1.0, drop_path=0.0, seed=0)
    return vit.state_dict()


@pytest.mark.slow
def test_finetune_bf16_on_cpu_then_wiseft(digits):
    """bf16 through DeepSpeed's torch_autocast on a CPU (ZeRO 1): it learns, the fp32 EMA moves, outputs are
    finite and fp32, the epoch is chosen on the held-out part, and WiSE-FT interpolates the result in fp32."""
    d, root = digits, digits["root"]
    # augmentation off here (the two-process test runs RandAugment + erasing) so learning shows in 4 epochs
    exp = _experiment(d, "one", finetune_eval={**FINETUNE, "zero_stage": 1, "epochs": 4, "randaugment": "",
                                                "reprob": 0, "crop_min": 0.9, "precision": "bf16"},
                      zeroshot={"datasets": ["digits"]}, wiseft={"datasets": [PAIR], "alphas": [0, 0.5, 1]})
    log = _run([sys.executable, "-m", "pipeline", *_ft_argv(d, exp, root / "ft.json")]).stderr
    assert "torch_autocast bf16" in log
    ft = json.loads((root / "ft.json").read_text())
    assert ft["task"] == "finetune_classification" and len(ft["history"]) == 4
    m = ft["metrics"]
    assert {"acc1", "acc5", "mean_per_class_recall", "ema_acc1", "best_epoch", "best_ema_epoch"} <= set(m)
    assert all(math.isfinite(v) for v in m.values()) and all(math.isfinite(h["train_loss"]) for h in ft["history"])
    # the best epoch is the one the held-out validation part (40 training images) scored highest, not test
    assert "test" not in ft["history"][0] and m["best_val_acc1"] == max(h["val"]["acc1"] for h in ft["history"])
    assert ft["history"][m["best_epoch"] - 1]["val"]["acc1"] == m["best_val_acc1"]
    losses = [h["train_loss"] for h in ft["history"]]
    assert losses[-1] < losses[0] - 0.02, losses
    saved, start = torch.load(root / "ft.pt", weights_only=True), _start_weights(d)
    assert len(saved["val_indices"]) == 40 and saved["train_samples"] == 160
    for key in ("model", "ema"):
        assert all(v.dtype == torch.float32 for v in saved[key].values() if v.is_floating_point())
        moved = max((saved[key][k] - start[k]).abs().max().item() for k in start)
        assert moved > 1e-3, f"{key} weights did not move ({moved})"
    # zeroshot and wiseft never start DeepSpeed: run them in-process
    assert main(eval_argv("zeroshot", exp, "digits", checkpoint=d["ckpt"], inputs={"test": d["test"]},
                          outputs={"result": root / "zs.json"})) == 0
    assert main(eval_argv("wiseft", exp, "digits", checkpoint=d["ckpt"],
                          inputs={"train": d["train"], "test": d["test"], "finetuned": root / "ft.pt"},
                          outputs={"result": root / "w.json", "plot": root / "w.png"})) == 0
    w = json.loads((root / "w.json").read_text())["metrics"]
    zs = json.loads((root / "zs.json").read_text())["metrics"]
    assert w["acc1@alpha=0"] == pytest.approx(zs["acc1"])    # alpha 0 is the zero-shot classifier itself
    assert w["acc1@alpha=1"] == pytest.approx(m["acc1"], abs=0.02)  # alpha 1: the model, scored in fp32 (bf16 in finetune_eval)
    assert w["best_alpha"] in (0, 0.5, 1) and "best_val_acc1" in w
    assert w["acc1"] == w["acc1@alpha=0.5"] and (root / "w.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_finetune_two_processes_zero2_and_resnet_baseline(digits):
    d, root = digits, digits["root"]
    # processes: 2 in the section: `python -m pipeline finetune_eval` starts torchrun itself
    exp = _experiment(d, "two", finetune_eval={**FINETUNE, "zero_stage": 2, "epochs": 1, "processes": 2,
                                                "head": "ftclip", "freeze_patch_embed": True},
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
