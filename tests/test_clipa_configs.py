"""CLIPA experiments and model configs: recipe arithmetic (I/T token counts), model shapes, a tiny CPU run of
clipa_tiny with each image mask (grid, block, random) + syntax text mask, pretrain then full-token finetune, and the
fixed sin-cos position embedding of CLIPA's PyTorch pretraining followed by a learnable one in fine-tuning."""
import json
from pathlib import Path

import open_clip
import pytest
import torch
import yaml

from pipeline.__main__ import main as pipeline_main
from pipeline.config import experiment_from_dict, load_experiment
from pipeline.models import load_model, resolve_model_config
from pipeline.reduction.image import PatchReduction, kept_image_tokens

from _train_fixtures import write_experiment, write_shards

TINY_YAML = Path(__file__).resolve().parents[1] / "config" / "experiments" / "clipa_tiny.yaml"
# name -> (model config, pretrain image tokens incl. class token, pretrain text tokens, published pretrain/finetune)
RECIPES = {
    "clipa_b16_i50_t16": ("ViT-B-16-CL16", 50, 16, (59.7, 63.2)),
    "clipa_l16_i17_t16": ("ViT-L-16-CL16-GAP", 17, 16, (60.3, 67.8)),
    "clipa_l16_i37_t8": ("ViT-L-16-CL8-Syntax-GAP", 37, 8, (57.9, 69.3)),
}


@pytest.mark.parametrize("name", [*RECIPES, "clipa_tiny"])
def test_check_config_passes(name, capsys):
    assert pipeline_main(["check-config", name]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == name


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_token_counts_and_numbers(name):
    model_name, image_total, text_total, (pre, fine) = RECIPES[name]
    exp = load_experiment(name)
    assert exp.model.name == model_name and exp.data.train == "laion400m"
    cfg = resolve_model_config(exp.model.name, None, exp.pretrain.image_size, exp.pretrain.text_length)
    red = exp.pretrain.image_reduction
    patches = kept_image_tokens(cfg["vision_cfg"]["image_size"], cfg["vision_cfg"]["patch_size"], red.strategy,
                           red.tokens, red.grid_window)
    assert patches + 1 == image_total  # CLIPA's I counts the class token
    assert cfg["text_cfg"]["context_length"] == text_total
    assert exp.finetune.image_size == 224 and exp.finetune.samples == 131_072_000
    assert exp.pretrain.epochs == 6 and exp.pretrain.betas == (0.9, 0.95) and exp.pretrain.weight_decay == 0.2
    assert exp.pretrain.batch_size % exp.pretrain.processes == 0 and exp.pretrain.resources.gpus_per_node == 8
    assert exp.published == {"pretrain": {"zeroshot": {"imagenet1k_val": pre}},
                             "finetune": {"zeroshot": {"imagenet1k_val": fine}}}
    # UCSC-VLAA/CLIPA clipa_torch scripts: --pos-embed sin_cos_2d in pretraining, learnable in fine-tuning
    assert (exp.pretrain.pos_embed_type, exp.finetune.pos_embed_type) == ("sin_cos_2d", "learnable")
    assert exp.pretrain.text_reduction == ("truncate" if name == "clipa_b16_i50_t16" else "syntax")


def test_l16_i37_t8_recipe():
    exp = load_experiment("clipa_l16_i37_t8")
    p, f = exp.pretrain, exp.finetune
    assert (p.image_size, p.text_length, p.text_reduction) == (96, 8, "syntax")
    assert (p.batch_size, p.lr, p.warmup_steps) == (32768, 1.024e-3, 1563)
    assert (p.precision, p.grad_checkpointing, p.processes) == ("bf16", True, 8)
    assert p.augment.scale == (0.4, 1.0) and p.augment.color_jitter == (0.32, 0.32, 0.32, 0.08)
    assert (p.augment.color_jitter_prob, p.augment.gray_scale_prob) == (0.8, 0.2)  # CLIPA's simclr_jitter_gray
    assert (f.text_length, f.batch_size, f.lr, f.warmup_steps) == (32, 7168, 2.24e-5, 3571)


@pytest.mark.parametrize("name,pool,params_m", [("ViT-B-16-CL16", "tok", 149.5), ("ViT-L-16-CL16-GAP", "avg", 427.5),
                                                ("ViT-L-16-CL8-Syntax-GAP", "avg", 427.5)])
def test_project_model_configs_build(name, pool, params_m):
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = open_clip.CLIP(**resolve_model_config(name, None))
    assert model.visual.pool_type == pool
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - params_m) < 0.5


def _tiny_experiment(strategy: str, tokens):
    raw = yaml.safe_load((TINY_YAML).read_text())
    reduction = {"strategy": strategy, "grid_window": 2}
    if tokens is not None:
        reduction["tokens"] = tokens
    for stage in (raw["pretrain"], raw["finetune"]):  # a few steps of batch 16 instead of epochs of 128
        stage.update(batch_size=16, samples=32, epochs=None, warmup_steps=1, workers=0, log_every=1,
                     checkpoint_every=100)
    raw["pretrain"]["image_reduction"] = reduction
    return experiment_from_dict(raw, "clipa_tiny", str(TINY_YAML))


@pytest.mark.parametrize("strategy,tokens,kept", [("grid", None, 16), ("block", 12, 12), ("random", 20, 20)])
def test_clipa_tiny_trains_with_each_mask(tmp_path, strategy, tokens, kept):
    from pipeline.train.loop import build_model, train

    stats = write_shards(tmp_path / "data", shards=2, per_shard=16)
    exp = _tiny_experiment(strategy, tokens)
    model, _ = build_model(exp, "pretrain", None)
    seen = []
    model.visual.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    model.train().encode_image(torch.randn(2, 3, 28, 28))
    assert isinstance(model.visual.patch_dropout, PatchReduction) and seen == [1 + kept]

    torch.manual_seed(0)
    pre = train(experiment=exp, stage_name="pretrain", train_data=stats, out=tmp_path / "pre" / "final.pt")
    fine = train(experiment=exp, stage_name="finetune", train_data=stats, out=tmp_path / "fine" / "final.pt",
                 init=pre)
    loaded = load_model(fine)
    tuned, cfg = loaded.model, loaded.model_config
    assert cfg["text_cfg"]["context_length"] == 16 and not isinstance(tuned.visual.patch_dropout, PatchReduction)
    lines = [json.loads(x) for x in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(torch.isfinite(torch.tensor(x["loss"])) for x in lines)


def test_sin_cos_pretrain_then_learnable_finetune_from_the_upsampled_table(tmp_path):
    from open_clip.model import resize_pos_embed
    from open_clip.pos_embed import get_2d_sincos_pos_embed

    from pipeline.train.loop import build_model, train

    stats = write_shards(tmp_path / "data" / "tiny", shards=1, per_shard=16)
    path = write_experiment(tmp_path / "config", epochs=1, pos_embed_type="sin_cos_2d")  # 16 px, patch 4: 4x4
    raw = yaml.safe_load(path.read_text())
    raw["finetune"]["pos_embed_type"] = "learnable"  # 24 px: 6x6
    path.write_text(yaml.safe_dump(raw))
    exp = load_experiment(path, tmp_path / "config")
    model, config = build_model(exp, "pretrain", None)
    table = torch.from_numpy(get_2d_sincos_pos_embed(32, 4, cls_token=True)).float()
    assert config["vision_cfg"]["pos_embed_type"] == "sin_cos_2d" and not model.visual.positional_embedding.requires_grad
    assert torch.equal(model.visual.positional_embedding, table)
    pre = train(experiment=exp, stage_name="pretrain", train_data=stats, out=tmp_path / "pre" / "final.pt")
    weights = torch.load(pre, weights_only=True)["model"]
    assert torch.equal(weights["visual.positional_embedding"], table)  # fixed: never trained
    assert not torch.equal(weights["visual.conv1.weight"], model.state_dict()["visual.conv1.weight"])
    tuned_start, tuned_config = build_model(exp, "finetune", pre)
    expected = {"visual.positional_embedding": table}
    resize_pos_embed(expected, tuned_start)  # open_clip's bicubic (antialiased) upsampling, class row kept
    assert "pos_embed_type" not in tuned_config["vision_cfg"] and tuned_start.visual.positional_embedding.requires_grad
    assert torch.equal(tuned_start.visual.positional_embedding, expected["visual.positional_embedding"])
    fine = train(experiment=exp, stage_name="finetune", train_data=stats, out=tmp_path / "fine" / "final.pt", init=pre)
    tuned = torch.load(fine, weights_only=True)["model"]["visual.positional_embedding"]
    assert tuned.shape == (37, 32) and not torch.equal(tuned, expected["visual.positional_embedding"])
