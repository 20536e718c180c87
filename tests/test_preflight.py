"""Pre-flight: values a training job would refuse at its start stop `check-config` and `snakemake -n` with one line
naming the file and the key; generated mutations of every shipped experiment are rejected there or train a step.

CLIPFORGE_MUTATIONS=N widens the random sample of mutations (CLIPFORGE_MUTATION_SEED picks another);
`python tests/_mutations.py` runs all of them (docs/robustness.md has the counts).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import _mutations as mutations
from pipeline.__main__ import main as pipeline_main

REPO = Path(__file__).resolve().parents[1]

# (changes to demo.yaml, the key the one-line error must name, a phrase of its reason)
SEMANTIC = [
    ([("model.name", "ViT-B-16-nope")], "model.name", "unknown model config"),
    ([("pretrain.image_reduction.strategy", "random"), ("pretrain.image_reduction.tokens", 50)],
     "pretrain.image_reduction.tokens", "1 <= tokens <= 16"),
    ([("model.name", "RN50"), ("pretrain.image_reduction.strategy", "grid")],
     "pretrain.image_reduction.strategy", "VisionTransformer"),
    ([("method", "simclr"), ("model.name", "RN50")], "model.vision_cfg", "VisionTransformer"),
    ([("model.config.text_cfg.heads", 3)], "model", "divisible by num_heads"),
    ([("model.config.text_cfg.context_length", 2), ("pretrain.text_length", None)], "pretrain.text_length", ">= 3"),
    ([("pretrain.enabled", False)], "pretrain.enabled", "starts from the pretrain checkpoint"),
    ([("model.config.vision_cfg.patch_size", 32)], "pretrain.image_size", "smaller than one patch"),
]


@pytest.mark.parametrize("changes,key,reason", SEMANTIC, ids=[c[1] for c in SEMANTIC])
def test_check_config_rejects_what_a_job_would_refuse(tmp_path, capsys, changes, key, reason):
    path = mutations.write_config(tmp_path / "config", "mine", mutations.apply(mutations.shipped()["demo"], changes))
    assert pipeline_main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: {key}: "), err
    assert reason in err[0], err


def test_snakemake_dry_run_stops_at_parse_time(tmp_path):
    config = tmp_path / "config"
    changes = [("pretrain.image_reduction.strategy", "block"), ("pretrain.image_reduction.tokens", 17)]
    path = mutations.write_config(config, "demo", mutations.apply(mutations.shipped()["demo"], changes))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"), "--directory",
                             str(tmp_path), "results/demo.table", "--config", f"config_dir={config}"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {path}: pretrain.image_reduction.tokens: the block mask needs 1 <= tokens <= 16 "
                      f"(patches at this stage's image size), got 17"], result.stderr
    assert "Traceback" not in result.stderr


def test_the_job_refuses_with_the_same_function(tmp_path):
    """The training job itself (no pre-flight in between) stops on the same check with the same key."""
    from _train_fixtures import write_shards
    from pipeline.config import experiment_from_dict
    from pipeline.errors import UserError
    from pipeline.train.loop import train

    changes = [("pretrain.image_reduction.strategy", "random"), ("pretrain.image_reduction.tokens", 50)]
    exp = experiment_from_dict(mutations.apply(mutations.shipped()["demo"], changes), "demo", "demo.yaml")
    stats = write_shards(tmp_path / "data", shards=1, per_shard=8)
    with pytest.raises(UserError, match=r"^pretrain.image_reduction.tokens: the random mask needs 1 <= tokens <= 16"):
        train(experiment=exp, stage_name="pretrain", train_data=stats, out=tmp_path / "final.pt")


def _what_the_builds_depend_on(name: str) -> str:
    """Experiments differing only in schedule, seed or length build the same things (SLIP's ep25/50/100)."""
    import json

    from pipeline.config import load_experiment, to_dict

    exp = to_dict(load_experiment(name))
    built = ("image_size", "text_length", "batch_size", "grad_accum_steps", "processes", "image_reduction",
             "text_reduction", "enabled", "resources")
    stages = {s: {k: exp[s][k] for k in built} for s in ("pretrain", "finetune")}
    return json.dumps([exp["method"], exp["method_options"], exp["model"], stages], sort_keys=True)


def test_every_shipped_experiment_passes_the_preflight():
    from pipeline.config import list_experiments
    from pipeline.preflight import load_checked

    distinct = {_what_the_builds_depend_on(name): name for name in list_experiments()}
    assert len(distinct) >= 10
    for name in sorted(distinct.values()):
        load_checked(name)


def test_generated_mutations_are_rejected_before_any_job_or_train_one_step(tmp_path):
    from _train_fixtures import write_shards

    count = int(os.environ.get("CLIPFORGE_MUTATIONS", "9"))
    seed = int(os.environ.get("CLIPFORGE_MUTATION_SEED", "0"))
    # two thirds from the keys whose values depend on the model and on each other, the rest from all keys
    todo = mutations.sample(count - count // 3, seed, combined=True) + mutations.sample(count // 3, seed)
    stats = write_shards(tmp_path / "data" / "tiny", shards=4, per_shard=36)
    outcomes, failed = {"rejected": 0, "trained": 0}, []
    for name, changes in todo:
        outcome, message = mutations.check(name, changes, tmp_path, stats)
        if outcome == "FAILED":
            failed.append(f"{name} {changes}: {message}")
            continue
        outcomes[outcome] += 1
        if outcome == "rejected":  # one line, naming the file and a key
            assert "\n" not in message and ".yaml: " in message and ": " in message.split(".yaml: ", 1)[1], message
    print(f"{len(todo)} mutations (seed {seed}): {outcomes}")
    assert not failed, "accepted by the pre-flight, refused by the job:\n" + "\n".join(failed)
    assert outcomes["rejected"] and outcomes["trained"], outcomes  # the sample exercises both sides
