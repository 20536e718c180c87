"""The Snakemake wiring: fingerprints, parse-time config checks, the DAG of a dry run, quoting."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import yaml

from pipeline.workflow import WorkflowConfig, requested

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def copy_config(tmp_path) -> Path:
    dest = tmp_path / "config"
    shutil.copytree(REPO / "config", dest)
    return dest


def dry_run(target, config_dir=None, extra=()):
    """`snakemake -n` in an empty working directory: what a fresh clone would plan, whatever the checkout has
    already run (after `./clipforge demo`, the repository's own results/ would make every job up to date)."""
    workdir = tempfile.mkdtemp(prefix="dry_run_")
    cmd = SNAKEMAKE + ["-n", "-s", str(REPO / "Snakefile"), "--directory", workdir, target, *extra,
                       "--config", f"config_dir={config_dir or REPO / 'config'}"]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_requested_targets():
    names, datasets = requested(["results/demo.table", "results/x/pretrain/final.pt", "data/cc3m/stats.json",
                                 "results/tables/g.table", "--cores"])
    assert names == ["demo", "x"]
    assert datasets == ["cc3m"]


def test_fingerprints_separate_training_from_evaluation(tmp_path):
    config_dir = copy_config(tmp_path)
    wf = WorkflowConfig(config_dir)
    before = {s: wf.fingerprint("demo", s) for s in ("pretrain", "finetune", "table")}
    path = config_dir / "experiments" / "demo.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["evaluate"]["batch_size"] = 7
    path.write_text(yaml.safe_dump(raw))
    after_eval = {s: WorkflowConfig(config_dir).fingerprint("demo", s) for s in before}
    assert after_eval == before  # an evaluation setting never retrains
    raw["finetune"]["lr"] = 1e-5
    path.write_text(yaml.safe_dump(raw))
    after_ft = {s: WorkflowConfig(config_dir).fingerprint("demo", s) for s in before}
    assert after_ft["pretrain"] == before["pretrain"]
    assert after_ft["finetune"] != before["finetune"]
    assert json.loads(after_ft["finetune"])["finetune"]["lr"] == 1e-5


def test_evaluation_fingerprint_follows_its_own_section(tmp_path):
    config_dir = copy_config(tmp_path)
    w = SimpleNamespace(name="demo")
    before = {e: WorkflowConfig(config_dir).eval_fingerprint(e)(w) for e in ("zeroshot", "linear_probe")}
    path = config_dir / "experiments" / "demo.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["evaluate"]["linear_probe"]["max_iter"] = 7
    path.write_text(yaml.safe_dump(raw))
    after = {e: WorkflowConfig(config_dir).eval_fingerprint(e)(w) for e in before}
    assert after["zeroshot"] == before["zeroshot"] and after["linear_probe"] != before["linear_probe"]


def test_resources_grow_with_attempt():
    wf, w = WorkflowConfig(), SimpleNamespace(name="demo")
    first, second = wf.resource_values("pretrain", w, 1), wf.resource_values("pretrain", w, 2)
    assert second["runtime"] == 2 * first["runtime"]
    assert first["nodes"] == 1 and "gpu" not in first
    rules = wf.resources("finetune")
    assert set(rules) == {"nodes", "tasks", "cpus_per_task", "mem_mb", "runtime", "slurm_extra"}
    assert rules["runtime"](w, 3) == 3 * wf.resource_values("finetune", w)["runtime"]
    assert set(wf.resources("evaluate")) == {"cpus_per_task", "mem_mb", "runtime", "slurm_extra"}


def test_rules_have_one_shape_and_one_spelling():
    """Every rule runs `python -m pipeline <its own name>`; one rule per registered evaluation."""
    from pipeline.__main__ import stages
    from pipeline.evaluate import evaluations

    result = dry_run("results/demo.table", extra=("--printshellcmds", "--forceall"))
    assert result.returncode == 0, result.stderr
    names = {line.split()[-1].rstrip(":") for line in result.stdout.splitlines()
             if line.startswith(("rule ", "localrule "))}
    for line in result.stdout.splitlines():
        if " -m pipeline " in line:
            rule = line.split(" -m pipeline ")[1].split()[0]
            assert rule in names and rule in stages(), line
    rules = (REPO / "workflow" / "rules" / "evaluate.smk").read_text()
    assert "for _evaluation in evaluations():" in rules
    assert {e.name for e in evaluations()} >= {"zeroshot", "linear_probe", "finetune_eval", "wiseft",
                                                "supervised_baseline", "retrieval"}


def test_dry_run_shows_the_whole_chain():
    result = dry_run("results/demo.table")
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout + result.stderr
    for rule in ("data", "pretrain", "finetune", "zeroshot", "table"):
        assert f"rule {rule}:" in out or f"localrule {rule}:" in out, rule


def test_one_stage_is_its_own_target():
    result = dry_run("results/demo/pretrain/final.pt")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "rule pretrain:" in out and "rule finetune:" not in out and "rule zeroshot:" not in out


def test_unknown_experiment_is_one_line_listing_the_known_ones():
    result = dry_run("results/no_such_experiment.table")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "no_such_experiment" in errors[0] and "demo" in errors[0]
    assert "Traceback" not in result.stderr


def test_invalid_config_stops_before_any_job(tmp_path):
    config_dir = copy_config(tmp_path)
    path = config_dir / "experiments" / "demo.yaml"
    path.write_text(path.read_text().replace("batch_size: 128", "batch_size: many", 1))
    result = dry_run("results/demo.table", config_dir)
    assert result.returncode != 0
    assert f"error: {path}: pretrain.batch_size: 'many' is not of type 'integer'" in result.stderr


def test_values_reach_the_shell_quoted(tmp_path):
    """A config value with a space and a ';' must arrive as one argument, never run as shell."""
    config_dir = tmp_path / "my config;touch HACKED"
    shutil.copytree(REPO / "config", config_dir)
    result = dry_run("results/demo/pretrain/final.pt", config_dir, extra=("--printshellcmds",))
    assert result.returncode == 0, result.stderr
    assert "'" + str(config_dir / "experiments" / "demo.yaml") + "'" in result.stdout


def test_group_table_collects_every_member_experiment():
    result = dry_run("results/tables/demo_methods.table")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for method in ("clip", "simclr", "slip", "declip", "filip"):
        assert f"results/demo_{method}/pretrain/final.pt" in out, method
    assert "rule table_group:" in out or "localrule table_group:" in out
