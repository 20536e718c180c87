"""Zero-shot evaluation: metrics on hand-checked logits, prompt assets, dataset access, the CLI end to end."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import UserError
from pipeline.evaluate import _assets as assets
from pipeline.evaluate._metrics import classification_metrics, mean_per_class_recall, topk_accuracy

from _eval_fixtures import eval_argv, save_tiny_checkpoint, write_eval_experiment, write_imagefolder

# 4 samples, 3 classes; rows sorted by logit: s0 [0,1,2] s1 [2,1,0] s2 [1,2,0] s3 [2,0,1]
LOGITS = torch.tensor([[3.0, 2.0, 1.0], [0.1, 0.5, 0.9], [0.2, 0.8, 0.3], [0.6, 0.0, 0.9]])
TARGETS = torch.tensor([0, 1, 1, 2])


def test_topk_accuracy_hand_checked():
    assert topk_accuracy(LOGITS, TARGETS, 1) == pytest.approx(3 / 4)   # s1 predicts 2, wrong
    assert topk_accuracy(LOGITS, TARGETS, 2) == pytest.approx(4 / 4)   # s1's 2nd choice is 1



def test_top5_with_fewer_than_5_classes_is_absent_not_capped(tmp_path):
    """3 classes: every sample is "in the top 5", so acc5 is undefined: reported as null, never 1.0."""
    assert topk_accuracy(LOGITS, TARGETS, 3) == 1.0 and topk_accuracy(LOGITS, TARGETS, 5) is None
    metrics = classification_metrics(LOGITS, TARGETS)
    assert metrics["acc5"] is None and metrics["acc1"] == pytest.approx(3 / 4)
    from pipeline.evaluate._records import result_record

    record = result_record(dataset="d", model="m", pretrained="p", task="t", metrics=metrics, checkpoint="c")
    assert json.loads(json.dumps(record))["metrics"]["acc5"] is None


def test_mean_per_class_recall_hand_checked():
    # class 0: 1/1, class 1: 1/2 (s2 right, s1 wrong), class 2: 1/1 -> mean 5/6 (acc1 is 3/4)
    assert mean_per_class_recall(LOGITS, TARGETS) == pytest.approx(5 / 6)
    # a class absent from the targets does not count: only class 1 present, recall 1/2
    assert mean_per_class_recall(LOGITS[1:3], TARGETS[1:3]) == pytest.approx(0.5)
    metrics = classification_metrics(LOGITS, TARGETS)
    assert set(metrics) == {"acc1", "acc5", "mean_per_class_recall"} and metrics["acc5"] is None  # 3 classes


def test_shipped_lists():
    assert assets.load_classnames("fashion_mnist") == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                       "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert len(assets.load_classnames("imagenet1k")) == 1000 and len(assets.load_templates("imagenet1k")) == 80
    assert len(assets.load_classnames("cifar100")) == 100 and len(assets.load_classnames("cifar10")) == 10
    for name in assets.available("templates"):
        assert all(t.count("{c}") == 1 for t in assets.load_templates(name)), name
    # OpenAI's published ImageNet names repeat two (missile 657/744, sunglasses 836/837); nothing else may
    repeats = {"imagenet1k": 2}
    for name in assets.available("classnames"):
        names = assets.load_classnames(name)
        assert len(names) - len(set(names)) == repeats.get(name, 0), f"duplicate class names in {name}"


def test_imagenet_lists_match_open_clip():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    assert assets.load_classnames("imagenet1k") == list(IMAGENET_CLASSNAMES)
    assert assets.load_templates("imagenet1k") == [t("{c}") for t in OPENAI_IMAGENET_TEMPLATES]


def test_fashion_templates_differ_from_training_captions():
    from pipeline.data.captions import CAPTION_PHRASINGS, CLASS_SYNONYMS

    def norm(s):
        return " ".join(s.lower().replace(".", " ").replace(",", " ").replace(":", " ").split())

    templates = assets.load_templates("fashion_mnist")
    assert {norm(t) for t in templates}.isdisjoint({norm(p) for p in CAPTION_PHRASINGS})
    prompts = {norm(t.format(c=c)) for t in templates for c in assets.load_classnames("fashion_mnist")}
    captions = {norm(p.format(c=s)) for p in CAPTION_PHRASINGS for syn in CLASS_SYNONYMS for s in syn}
    assert prompts.isdisjoint(captions)


def test_unknown_list_and_bad_template(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no list named 'nope'.*fashion_mnist"):
        assets.load_classnames("nope")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "bad.txt").write_text("a photo of {}.\n")
    monkeypatch.setattr(assets, "ASSETS", tmp_path)
    with pytest.raises(UserError, match="line 1"):
        assets.load_templates("bad")


def test_text_classifier_is_renormalised_template_mean():
    from pipeline.evaluate._features import text_classifier
    from pipeline.models import create_model, tokenizer
    from _eval_fixtures import TINY_CONFIG

    torch.manual_seed(0)
    model = create_model(TINY_CONFIG).eval()
    tok = tokenizer(12)
    names, templates = ["cat", "dog", "boot"], ["a {c}.", "itap of a {c}."]
    weights = text_classifier(model, tok, names, templates)
    assert weights.shape == (16, 3)
    with torch.no_grad():
        for j, name in enumerate(names):
            emb = F.normalize(model.encode_text(tok([t.format(c=name) for t in templates])), dim=-1).mean(0)
            assert torch.allclose(weights[:, j], emb / emb.norm(), atol=1e-5)


def test_dataset_labels_come_from_folder_names(tmp_path):
    from pipeline.evaluate._datasets import classification_dataset

    stats = write_imagefolder(tmp_path / "d", ["a", "b", "c"], per_class=2, empty=(1,))
    dataset, classes = classification_dataset(stats, image_size=16)
    assert classes == ["a", "b", "c"] and len(dataset) == 4
    assert sorted(label for _, label in dataset.samples) == [0, 0, 2, 2]  # class 1 empty: 2 keeps its label
    image, _ = dataset[0]
    assert image.shape == (3, 16, 16)  # grayscale 20 px -> RGB, resized and center-cropped to the model's size


def test_dataset_errors(tmp_path):
    from pipeline.evaluate._datasets import classification_dataset

    with pytest.raises(UserError, match="stats.json: dataset stats not found"):
        classification_dataset(tmp_path / "stats.json", 16)
    stats = write_imagefolder(tmp_path / "d", ["a", "b"], per_class=1)
    (tmp_path / "d" / "images" / "001" / "00000.png").write_bytes(b"not a png")
    dataset, _ = classification_dataset(stats, 16)
    with pytest.raises(UserError, match="00000.png: unreadable image"):
        [dataset[i] for i in range(len(dataset))]
    (tmp_path / "d" / "images" / "007").mkdir()
    with pytest.raises(UserError, match="007: folder is neither a label"):
        classification_dataset(stats, 16)


def test_zeroshot_cli_writes_clip_benchmark_json(tmp_path):
    from pipeline.__main__ import main

    ckpt = save_tiny_checkpoint(tmp_path / "results" / "tiny" / "finetune" / "final.pt")
    stats = write_imagefolder(tmp_path / "data" / "fm", assets.load_classnames("fashion_mnist"), per_class=2)
    exp = write_eval_experiment(tmp_path / "config", {"batch_size": 7, "zeroshot": {"datasets": ["fm"]}},
                                datasets={"fm": "fashion_mnist"})
    out = tmp_path / "results" / "tiny" / "eval" / "finetune" / "zeroshot" / "fm.json"
    assert main(eval_argv("zeroshot", exp, "fm", checkpoint=ckpt, inputs={"test": stats}, outputs={"result": out})) == 0
    record = json.loads(out.read_text())
    assert set(record) == {"dataset", "model", "pretrained", "task", "metrics", "language", "checkpoint"}
    assert (record["dataset"], record["model"], record["task"], record["checkpoint"], record["language"]) == (
        "fm", "tiny", "zeroshot_classification", "finetune", "en")
    assert record["pretrained"] == str(ckpt)
    m = record["metrics"]
    assert set(m) == {"acc1", "acc5", "mean_per_class_recall"}
    # balanced classes: mean per-class recall equals acc1; top-5 of 10 classes covers at least top-1
    assert m["mean_per_class_recall"] == pytest.approx(m["acc1"]) and m["acc1"] <= m["acc5"] <= 1.0
    assert [p.name for p in out.parent.iterdir()] == ["fm.json"]  # no temp file left behind


def test_zeroshot_cli_bad_inputs(tmp_path, capsys):
    from pipeline.__main__ import main

    ckpt = save_tiny_checkpoint(tmp_path / "c" / "final.pt")
    stats = write_imagefolder(tmp_path / "data" / "three", ["a", "b", "c"], per_class=1)
    exp = write_eval_experiment(tmp_path / "config", {"zeroshot": {"datasets": ["three", "unknown_lists"]}},
                                datasets={"three": "fashion_mnist", "unknown_lists": "no_such_list"})
    out = {"result": tmp_path / "r.json"}
    cases = [
        (eval_argv("zeroshot", exp, "three", checkpoint=tmp_path / "missing.pt", inputs={"test": stats},
                   outputs=out), "missing.pt: checkpoint not found"),
        (eval_argv("zeroshot", exp, "three", checkpoint=ckpt, inputs={"test": tmp_path / "none" / "stats.json"},
                   outputs=out), "stats.json: dataset stats not found"),
        (eval_argv("zeroshot", exp, "unknown_lists", checkpoint=ckpt, inputs={"test": stats}, outputs=out),
         "no list named 'no_such_list'"),
        (eval_argv("zeroshot", exp, "three", checkpoint=ckpt, inputs={"test": stats}, outputs=out),
         "3 classes, but class-name list 'fashion_mnist' has 10"),  # 3 classes vs 10 names
        (eval_argv("zeroshot", exp, "elsewhere", checkpoint=ckpt, inputs={"test": stats}, outputs=out),
         "evaluate.zeroshot.datasets: no entry for dataset 'elsewhere'"),
        (eval_argv("zeroshot", exp, "three", checkpoint=ckpt, inputs={"train": stats}, outputs=out),
         "zeroshot: expects --input ['test']"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_zeroshot_scores_filip_token_wise_with_the_checkpoints_token_mappings(tmp_path):
    """evaluate.zeroshot.scoring: filip_tokens scores as the DeCLIP code scores FILIP (token-wise, through the
    method's token mappings saved in the checkpoint); other methods are refused before any job."""
    import yaml

    from pipeline.__main__ import main
    from pipeline.methods import create_method
    from pipeline.methods.filip import token_classifier, token_zeroshot_logits
    from pipeline.models import create_model, tokenizer
    from pipeline.evaluate._datasets import classification_dataset
    from _eval_fixtures import TINY_CONFIG

    torch.manual_seed(0)
    model = create_model(TINY_CONFIG)
    method = create_method("filip", model, {"filip_token_dim": 8})
    ckpt = tmp_path / "results" / "tiny" / "pretrain" / "final.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_config": TINY_CONFIG, "experiment": {"name": "tiny"},
                "stage": "pretrain", "method": method.state_dict()}, ckpt)
    classes = ["a", "b", "c"]
    stats = write_imagefolder(tmp_path / "data" / "abc", classes, per_class=2)
    (tmp_path / "config" / "experiments").mkdir(parents=True)
    exp = write_eval_experiment(tmp_path / "config", {"zeroshot": {"datasets": ["abc"], "scoring": "filip_tokens"}},
                                datasets={"abc": "cifar10"})
    raw = yaml.safe_load(exp.read_text())
    (tmp_path / "config" / "datasets" / "abc.yaml").write_text(
        "kind: classification\nreader: imagefolder\nclassnames: from_data\ntemplates: cifar10\n")
    raw.update(method="filip", method_options={"filip_token_dim": 8})
    exp.write_text(yaml.safe_dump(raw))
    out = tmp_path / "r.json"
    assert main(eval_argv("zeroshot", exp, "abc", checkpoint=ckpt, inputs={"test": stats},
                          outputs={"result": out})) == 0
    acc1 = json.loads(out.read_text())["metrics"]["acc1"]
    dataset, _ = classification_dataset(stats, 16)
    templates = assets.load_templates("cifar10")
    with torch.no_grad():
        prompts = torch.stack([tokenizer(12)([t.format(c=c) for t in templates]) for c in classes])
        classifier = token_classifier(model.eval(), method.token_head.eval(), prompts)
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        labels = torch.tensor([dataset[i][1] for i in range(len(dataset))])
        expected = (token_zeroshot_logits(model, method.token_head, images, classifier).argmax(1) == labels)
    assert acc1 == pytest.approx(expected.double().mean().item())
    raw.update(method="clip", method_options={})
    exp.write_text(yaml.safe_dump(raw))
    assert main(eval_argv("zeroshot", exp, "abc", checkpoint=ckpt, inputs={"test": stats},
                          outputs={"result": out})) == 2
