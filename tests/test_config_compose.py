"""Experiment files that build on others (`base:`) and replicates of an experiment at other seeds (`E@k`)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, load_experiment, to_dict
from pipeline.workflow import WorkflowConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def config_dir(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path / "config"


def write(config_dir, name, raw):
    (config_dir / "experiments" / f"{name}.yaml").write_text(yaml.safe_dump(raw))


def test_base_merges_mappings_replaces_values_and_keeps_groups_per_file(config_dir):
    write(config_dir, "child", {"base": "demo_clip", "groups": ["mine"], "method": "slip",
                                "pretrain": {"lr": 2.0e-3, "betas": [0.9, 0.95]}})
    child, parent = load_experiment("child", config_dir), load_experiment("demo_clip", config_dir)
    assert (child.method, child.pretrain.lr, child.pretrain.betas) == ("slip", 2.0e-3, (0.9, 0.95))
    assert child.pretrain.batch_size == parent.pretrain.batch_size == 128  # inherited key by key
    assert child.model.config == parent.model.config and child.groups == ("mine",)
    write(config_dir, "grandchild", {"base": "child"})
    assert load_experiment("grandchild", config_dir).groups == ()  # groups are never inherited
    assert to_dict(load_experiment("grandchild", config_dir))["pretrain"] == to_dict(child)["pretrain"]


def test_bad_bases_are_one_line(config_dir):
    write(config_dir, "a", {"base": "b"})
    write(config_dir, "b", {"base": "a"})
    with pytest.raises(ConfigError, match=r"base: experiments build on each other in a circle \(a -> b -> a\)"):
        load_experiment("a", config_dir)
    write(config_dir, "c", {"base": "no_such"})
    with pytest.raises(ConfigError, match="no experiment named 'no_such'"):
        load_experiment("c", config_dir)


def test_replicates_shift_every_seed_and_keep_the_rest(config_dir):
    base, rep = load_experiment("findings_ftclip", config_dir), load_experiment("findings_ftclip@2", config_dir)
    assert rep.name == "findings_ftclip@2"
    a, b = to_dict(base), to_dict(rep)
    assert b["pretrain"]["seed"] == a["pretrain"]["seed"] + 2 and b["finetune"]["seed"] == a["finetune"]["seed"] + 2
    for section in ("linear_probe", "finetune_eval", "supervised_baseline"):  # seeds left at the default too
        assert b["evaluate"][section]["seed"] == a["evaluate"][section]["seed"] + 2, section
    for d in (a, b):
        for stage in ("pretrain", "finetune"):
            d[stage].pop("seed")
        for section in d["evaluate"].values():
            if isinstance(section, dict):
                section.pop("seed", None)
        d.pop("name")
    assert a == b  # nothing but the seeds differs
    wf = WorkflowConfig(config_dir)
    assert wf.experiment_file("findings_ftclip@2").endswith("findings_ftclip.yaml@2")
    assert wf.experiment("findings_ftclip@2").name == "findings_ftclip@2"
