"""Evaluations are plug-ins: adding one is a module in pipeline/evaluate + its schema section, nothing else.

The second test does exactly what docs/evaluation.md tells a researcher to do, in a copy of the repository:
writes a toy evaluation module and its schema section, then runs `snakemake results/toy.table` and finds the
toy's rule, its result JSON and its table column.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.evaluate import by_task, evaluations, get

from _eval_fixtures import TINY_CONFIG, save_tiny_checkpoint, write_imagefolder

REPO = Path(__file__).resolve().parents[1]

TOY_MODULE = '''"""Toy evaluation: the share of test images whose label is below `threshold` (a test of the registry)."""
from __future__ import annotations

from . import Context, Evaluation, register


def run(ctx: Context) -> None:
    from ._records import write_result
    from ..utils.io import read_json

    stats = read_json(ctx.inputs["test"])
    share = min(1.0, ctx.settings.threshold / len(stats["classes"]))
    write_result(ctx, task="toy_share", metrics={"share": share}, model=ctx.experiment.name,
                 pretrained=ctx.checkpoint, checkpoint=ctx.checkpoint.parent.name)


EVALUATION = register(Evaluation(
    name="toy_share", order=60, task="toy_share", run=run,
    inputs=lambda entry: {"test": ("stats", entry)}, columns=(("toy share", "share"),)))
'''

TOY_SCHEMA = '''      toy_share:
        type: object
        additionalProperties: false
        default: {}
        description: The registry's toy evaluation.
        properties:
          datasets:
            type: array
            items: {$ref: "#/$defs/dataset_name"}
            default: []
            description: Labelled datasets.
          threshold: {type: integer, minimum: 0, default: 3, description: Labels below this count.}
'''


def test_every_evaluation_has_a_schema_section_a_rule_name_and_columns():
    from pipeline.config.schema import load_schema

    sections = load_schema("experiment")["properties"]["evaluate"]["properties"]
    for ev in evaluations():
        assert ev.name in sections, f"evaluate.{ev.name} has no schema section"
        assert "datasets" in sections[ev.name]["properties"], ev.name
        assert ev.columns and ev.outputs.get("result") == "json", ev.name
    assert get("finetune_eval").distributed and not get("supervised_baseline").per_checkpoint
    assert list(by_task())[:2] == ["zeroshot_classification", "linear_probe"]  # table column order
    with pytest.raises(KeyError, match="unknown evaluation 'nope'"):
        get("nope")


def _copy_repo(dest: Path) -> Path:
    for part in ("pipeline", "workflow", "config", "profiles"):
        shutil.copytree(REPO / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    return dest


@pytest.mark.slow
def test_a_toy_evaluation_added_as_the_docs_say_runs_through_the_workflow(tmp_path):
    repo = _copy_repo(tmp_path / "repo")
    (repo / "pipeline" / "evaluate" / "toy_share.py").write_text(TOY_MODULE)
    schema = repo / "workflow" / "schemas" / "experiment.schema.yaml"
    text = schema.read_text()
    anchor = "      linear_probe:\n"
    schema.write_text(text.replace(anchor, TOY_SCHEMA + anchor, 1))
    # an experiment whose pretrain checkpoint, data and curves input exist already: only evaluation runs
    config = repo / "config"
    (config / "datasets" / "toy_train.yaml").write_text("kind: image_text\nreader: url_list\n")
    (config / "datasets" / "toy_test.yaml").write_text(
        "kind: classification\nreader: imagefolder\nclassnames: fashion_mnist\ntemplates: fashion_mnist\n")
    (config / "experiments" / "toy.yaml").write_text(yaml.safe_dump({
        "data": {"train": "toy_train"}, "model": {"config": TINY_CONFIG}, "finetune": {"enabled": False},
        "evaluate": {"toy_share": {"datasets": ["toy_test"], "threshold": 5}}}))
    write_imagefolder(repo / "data" / "toy_test", [str(i) for i in range(10)], per_class=1)
    (repo / "data" / "toy_train").mkdir(parents=True)
    (repo / "data" / "toy_train" / "stats.json").write_text("{}")
    ckpt = save_tiny_checkpoint(repo / "results" / "toy" / "pretrain" / "final.pt", stage="pretrain")
    (ckpt.parent / "metrics.jsonl").write_text(json.dumps({"step": 1, "samples": 8, "loss": 2.0}) + "\n")
    env = {**os.environ, "PYTHONPATH": str(repo)}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "results/toy.table"]
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rule toy_share:" in done.stdout + done.stderr
    assert "rule pretrain:" not in done.stdout + done.stderr
    result = json.loads((repo / "results/toy/eval/pretrain/toy_share/toy_test.json").read_text())
    assert result["metrics"] == {"share": 0.5} and result["task"] == "toy_share"
    table = (repo / "results" / "toy.table").read_text()
    assert "toy share toy_test" in table and "50.00" in table


@pytest.mark.parametrize("evaluate,key", [
    ({"wiseft": {"datasets": [{"train": "a", "test": "b"}]}}, "evaluate.wiseft.datasets.0"),
    ({"wiseft": {"datasets": [{"train": "a", "test": "b"}]},
      "finetune_eval": {"datasets": [{"train": "a", "test": "b"}], "head": "ftclip"}}, "evaluate.finetune_eval.head"),
    ({"wiseft": {"datasets": [{"train": "a", "test": "b"}], "alphas": [0, 1], "headline_alpha": 0.5},
      "finetune_eval": {"datasets": [{"train": "a", "test": "b"}], "head": "zeroshot"}}, "evaluate.wiseft.headline_alpha"),
    ({"checkpoints": [{"name": "openai", "path": "a.pt"}, {"name": "openai", "path": "b.pt"}]}, "evaluate.checkpoints"),
])
def test_evaluations_that_cannot_work_together_stop_the_parse(tmp_path, evaluate, key):
    """WiSE-FT without a zero-shot-headed fine-tune of its pair would fail only after that fine-tune's hours:
    the workflow refuses it while parsing, one line naming the file and the key."""
    from pipeline.config import ConfigError
    from pipeline.workflow import WorkflowConfig

    from _eval_fixtures import write_eval_experiment

    write_eval_experiment(tmp_path / "config", evaluate, name="pair")
    with pytest.raises(ConfigError, match=rf"pair.yaml: {key}"):
        WorkflowConfig(config_dir=tmp_path / "config").experiment("pair")
