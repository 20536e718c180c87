"""Linear probe: C chosen on a validation split from train, refit, scored on test; cached features."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.errors import UserError
from pipeline.evaluate._split import split_train_val
from pipeline.evaluate.linear_probe import linear_probe

from _eval_fixtures import eval_argv, save_tiny_checkpoint, write_digits_imagefolder, write_eval_experiment


def _blobs(n_per_class, classes=3, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.eye(classes, 5) * 3
    counts = torch.tensor(n_per_class if isinstance(n_per_class, list) else [n_per_class] * classes)
    y = torch.arange(classes).repeat_interleave(counts)
    return centers[y] + noise * torch.randn(len(y), 5, generator=g), y


def test_separable_features_are_solved_and_sweep_is_used():
    (xtr, ytr), (xte, yte) = _blobs([40, 10, 10]), _blobs(10, seed=1)
    out = linear_probe(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, num_classes=4, c_values=[1e-4, 1.0],
                       val_fraction=0.25, max_iter=500, seed=0)
    assert out["lp_acc1"] == 1.0 and out["lp_mean_per_class_recall"] == 1.0
    # with C=1e-4 the weights collapse and the intercept predicts the majority class: validation picks C=1
    assert out["C"] == 1.0 and out["val_acc1"] == 1.0
    # labels flipped on test: every prediction wrong -> 0, and class 3 (never in train) is never predicted
    out = linear_probe(train_x=xtr, train_y=ytr, test_x=xte, test_y=(yte + 1) % 3, num_classes=4, c_values=[1.0],
                       val_fraction=0.25, max_iter=500, seed=0)
    assert out["lp_acc1"] == 0.0 and out["lp_acc5"] is None  # 4 classes: top-5 undefined, not 1.0


def test_validation_split_is_stratified_and_disjoint():
    y = np.repeat(np.arange(4), 10)
    tr, va = split_train_val(y, 0.2, seed=0)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == 40
    assert sorted(np.bincount(y[va])) == [2, 2, 2, 2]
    with pytest.raises(UserError, match="too few"):
        split_train_val(np.array([0]), 0.5, seed=0)


def test_linear_probe_cli_on_digits_with_cache(tmp_path, capsys):
    from pipeline.__main__ import main

    ckpt = save_tiny_checkpoint(tmp_path / "ck" / "final.pt", stage="pretrain")
    train = write_digits_imagefolder(tmp_path / "digits_train", range(0, 300))
    test = write_digits_imagefolder(tmp_path / "digits_test", range(1500, 1700))
    probe = {"datasets": [{"train": "digits_train", "test": "digits"}], "c_values": [0.1, 10]}
    exp = write_eval_experiment(tmp_path / "config", {"batch_size": 64, "linear_probe": probe},
                                datasets={"digits": "mnist", "digits_train": "mnist"})

    def argv(out):
        return eval_argv("linear_probe", exp, "digits", checkpoint=ckpt, inputs={"train": train, "test": test},
                         outputs={"result": out}, cache_dir=tmp_path / "cache")
    assert main(argv(tmp_path / "a.json")) == 0
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    capsys.readouterr()
    assert main(argv(tmp_path / "b.json")) == 0
    assert capsys.readouterr().out.count("features: reusing") == 2
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["metrics"] == b["metrics"] and a["task"] == "linear_probe" and a["checkpoint"] == "pretrain"
    assert {"lp_acc1", "lp_acc5", "lp_mean_per_class_recall", "C"} <= set(a["metrics"])
    # even random tiny-ViT features separate digits far above chance (0.1)
    assert a["metrics"]["lp_acc1"] > 0.3
    assert main(argv(tmp_path / "c.json")[:-2] + ["--dataset", "unlisted"]) == 2


def test_pre_projection_features_ignore_an_untrained_projection(tmp_path):
    """SimCLR trains no visual.proj: with features pre_projection the probe reads the class token after ln_post
    (SLIP's main_linear.py feature), so two checkpoints that differ only in that projection probe the same."""
    import torch

    from pipeline.__main__ import main
    from pipeline.evaluate._features import encode
    from pipeline.models import create_model

    from _eval_fixtures import TINY_CONFIG

    torch.manual_seed(0)
    model = create_model(TINY_CONFIG).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        tokens = model.visual.transformer(model.visual._embeds(x))
        expected = model.visual.ln_post(tokens[:, 0])            # class token after the final LayerNorm
        assert torch.allclose(encode(model, x, "pre_projection"), expected, atol=1e-6)
        assert model.visual.proj is not None                     # restored after use
        assert encode(model, x, "embedding").shape == (3, TINY_CONFIG["embed_dim"])
    ck_a = save_tiny_checkpoint(tmp_path / "a" / "final.pt", stage="pretrain")
    blob = torch.load(ck_a, weights_only=True)
    blob["model"]["visual.proj"] = torch.randn_like(blob["model"]["visual.proj"])   # another random projection
    ck_b = tmp_path / "b" / "final.pt"
    ck_b.parent.mkdir()
    torch.save(blob, ck_b)
    train = write_digits_imagefolder(tmp_path / "digits_train", range(0, 200))
    test = write_digits_imagefolder(tmp_path / "digits_test", range(1500, 1600))
    results = {}
    for features in ("embedding", "pre_projection"):
        probe = {"datasets": [{"train": "digits_train", "test": "digits"}], "c_values": [1.0], "features": features}
        exp = write_eval_experiment(tmp_path / f"config-{features}", {"batch_size": 50, "linear_probe": probe},
                                    datasets={"digits": "mnist", "digits_train": "mnist"})
        for name, ck in (("a", ck_a), ("b", ck_b)):
            out = tmp_path / f"{features}-{name}.json"
            assert main(eval_argv("linear_probe", exp, "digits", checkpoint=ck, inputs={"train": train, "test": test},
                                  outputs={"result": out})) == 0
            results[features, name] = json.loads(out.read_text())["metrics"]
    assert results["pre_projection", "a"] == results["pre_projection", "b"]
    assert results["embedding", "a"] != results["embedding", "b"]
