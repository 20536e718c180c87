"""Results tables: rows per checkpoint, columns per (task, dataset), published numbers, bad inputs."""
from __future__ import annotations

import csv
import io
import json

import pytest
import yaml

from pipeline.__main__ import main

EXPERIMENT = """\
description: tiny table test
data: {train: fashion_mnist_demo}
model: {name: ViT-B-32}
evaluate: {zeroshot: {datasets: [fm, other]}}
published:
  finetune: {zeroshot: {fm: 68.3}}
"""


def _result(path, checkpoint, dataset, acc1, model="E", task="zeroshot_classification"):
    path.write_text(json.dumps({"dataset": dataset, "model": model, "pretrained": f"results/E/{checkpoint}/final.pt",
                                "task": task, "language": "en", "checkpoint": checkpoint,
                                "metrics": {"acc1": acc1, "acc5": 0.9, "mean_per_class_recall": acc1}}))
    return str(path)


@pytest.fixture
def experiment(tmp_path):
    path = tmp_path / "E.yaml"
    path.write_text(EXPERIMENT)
    return str(path)


def test_table_and_csv(tmp_path, experiment):
    results = [_result(tmp_path / "a.json", "finetune", "fm", 0.71234),
               _result(tmp_path / "b.json", "pretrain", "fm", 0.5),
               _result(tmp_path / "c.json", "pretrain", "other", 0.25)]
    out, out_csv = tmp_path / "t" / "E.table", tmp_path / "t" / "E.csv"
    assert main(["table", "--experiment", experiment, "--results", *results, "--out", str(out),
                 "--csv", str(out_csv)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "# E" and "tiny table test" in lines
    header = lines.index("| checkpoint | 0-shot fm | 0-shot other |")
    assert lines[header + 2] == "| pretrain | 50.00 | 25.00 |"          # pretrain first whatever the input order
    assert lines[header + 3] == "| finetune | 71.23 (68.3) | – |"       # ours (paper); no result -> dash
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [(r["checkpoint"], r["dataset"], r["ours_percent"], r["paper_percent"]) for r in rows] == [
        ("pretrain", "fm", "50.0000", ""), ("pretrain", "other", "25.0000", ""), ("finetune", "fm", "71.2340", "68.3")]
    assert sorted(p.name for p in out.parent.iterdir()) == ["E.csv", "E.table"]


def test_published_without_result_gets_its_row(tmp_path, experiment):
    out = tmp_path / "E.table"
    assert main(["table", "--experiment", experiment, "--results",
                 _result(tmp_path / "b.json", "pretrain", "fm", 0.5), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[-2:] == ["| pretrain | 50.00 |", "| finetune | – (68.3) |"]


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.unlink(), "r.json: result file not found"),
    (lambda p: p.write_text("{"), "r.json: not valid JSON"),
    (lambda p: p.write_text(json.dumps({"dataset": "fm"})), "r.json: model: missing"),
    (lambda p: _result(p, "pretrain", "fm", 0.5, model="someone_else"), "r.json: model: result of experiment"),
    (lambda p: _result(p, "pretrain", "fm", 0.5, task="captioning"), "r.json: task: 'captioning' has no table column"),
])
def test_bad_results(tmp_path, experiment, capsys, mutate, message):
    path = tmp_path / "r.json"
    _result(path, "pretrain", "fm", 0.5)
    mutate(path)
    assert main(["table", "--experiment", experiment, "--results", str(path), "--out", str(tmp_path / "E.table")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "E.table").exists()


def test_duplicate_result(tmp_path, experiment, capsys):
    a = _result(tmp_path / "a.json", "pretrain", "fm", 0.5)
    b = _result(tmp_path / "b.json", "pretrain", "fm", 0.6)
    assert main(["table", "--experiment", experiment, "--results", a, b, "--out", str(tmp_path / "E.table")]) == 2
    assert "b.json: duplicates" in capsys.readouterr().err


def _record(path, checkpoint, dataset, task, metrics, model="E", pretrained=None):
    path.write_text(json.dumps({"dataset": dataset, "model": model, "task": task, "language": "en",
                                "pretrained": pretrained or f"results/{model}/{checkpoint}/final.pt",
                                "checkpoint": checkpoint, "metrics": metrics}))
    return str(path)


def test_all_tasks_tex_and_random_init_row(tmp_path, experiment):
    results = [
        _result(tmp_path / "z.json", "finetune", "fm", 0.5),
        _record(tmp_path / "l.json", "finetune", "fm", "linear_probe", {"lp_acc1": 0.6, "C": 1.0}),
        _record(tmp_path / "f.json", "finetune", "fm", "finetune_classification", {"acc1": 0.7, "ema_acc1": 0.72}),
        _record(tmp_path / "w.json", "finetune", "fm", "wiseft", {"acc1": 0.75}),
        _record(tmp_path / "r.json", "finetune", "flickr", "zeroshot_retrieval",
                {"image_retrieval_recall@1": 0.1, "text_retrieval_recall@1": 0.2}),
        _record(tmp_path / "b.json", "resnet50", "fm", "finetune_classification", {"acc1": 0.4},
                pretrained="random init"),
    ]
    out, tex = tmp_path / "E.table", tmp_path / "E.tex"
    assert main(["table", "--experiment", experiment, "--results", *results, "--out", str(out),
                 "--tex", str(tex)]) == 0
    lines = out.read_text().splitlines()
    head = lines[lines.index(next(l for l in lines if l.startswith("| checkpoint")))]
    assert head == ("| checkpoint | 0-shot fm | linear fm | fine-tuned, last epoch fm | fine-tuned EMA, last epoch fm | "
                    "WiSE-FT fm | T→I R@1 flickr | I→T R@1 flickr |")
    assert "| finetune | 50.00 (68.3) | 60.00 | 70.00 | 72.00 | 75.00 | 10.00 | 20.00 |" in lines
    assert "| resnet50 (random init) | – | – | 40.00 | – | – | – | – |" in lines
    body = tex.read_text()
    assert r"\begin{tabular}{lrrrrrrr}" in body and r"50.00 (68.3)" in body and r"T$\to$I R@1 flickr" in body


def test_last_and_best_epoch_beside_the_papers_labelled(tmp_path):
    """FT-CLIP's 85.7 is the EMA's max over epochs on its test split, its last epoch 84.3 (84.7 EMA): each
    published number stands beside the like column, and the best-epoch column says how each side chose it."""
    config = tmp_path / "config"
    (config / "experiments").mkdir(parents=True)
    (config / "datasets").mkdir()
    (config / "datasets" / "pairs.yaml").write_text("kind: image_text\nreader: url_list\n")
    (config / "experiments" / "ft.yaml").write_text(yaml.safe_dump({
        "data": {"train": "pairs"}, "model": {"name": "ViT-B-16-quickgelu"},
        "published": {"openai": {"finetune": {"in1k": 84.3}, "finetune_ema": {"in1k": 84.7},
                                 "finetune_ema_best": {"in1k": 85.7}}}}))
    metrics = {"acc1": 0.80, "ema_acc1": 0.81, "best_acc1": 0.805, "best_ema_acc1": 0.82, "best_ema_epoch": 30}
    res = _record(tmp_path / "f.json", "openai", "in1k", "finetune_classification", metrics, model="ft")
    out = tmp_path / "ft.table"
    assert main(["table", "--experiment", str(config / "experiments" / "ft.yaml"), "--results", res,
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert ("| checkpoint | fine-tuned, last epoch in1k | fine-tuned EMA, last epoch in1k | "
            "fine-tuned, best epoch† in1k | fine-tuned EMA, best epoch† in1k |") in text
    assert "| openai | 80.00 (84.3) | 81.00 (84.7) | 80.50 | 82.00 (85.7) |" in text
    assert "held out from train" in text and "maximum over epochs on its test split" in text


def test_group_table(tmp_path, experiment, capsys):
    other = tmp_path / "F.yaml"
    other.write_text("data: {train: fashion_mnist_demo}\nmodel: {name: ViT-B-32}\n")
    results = [_result(tmp_path / "a.json", "finetune", "fm", 0.5),
               _result(tmp_path / "b.json", "finetune", "fm", 0.25, model="F")]
    out = tmp_path / "tables" / "g.table"
    assert main(["table_group", "--group", "g", "--experiments", experiment, str(other), "--results", *results,
                 "--out", str(out), "--csv", str(tmp_path / "g.csv")]) == 0
    lines = out.read_text().splitlines()
    assert "| E / finetune | 50.00 (68.3) |" in lines and "| F / finetune | 25.00 |" in lines
    stray = _result(tmp_path / "c.json", "finetune", "fm", 0.1, model="G")
    assert main(["table_group", "--group", "g", "--experiments", experiment, "--results", stray,
                 "--out", str(out)]) == 2
    assert "'G' is not one of the group's experiments" in capsys.readouterr().err
