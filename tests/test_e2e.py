"""The demo workflow end to end through Snakemake, on a reduced configuration (fewer images, fewer steps)."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def reduced_config(tmp_path: Path) -> Path:
    """A copy of config/ where the demo trains on 600 images for a few dozen steps."""
    config_dir = tmp_path / "config"
    shutil.copytree(REPO / "config", config_dir)
    ds_path = config_dir / "datasets" / "fashion_mnist_demo.yaml"
    ds = yaml.safe_load(ds_path.read_text())
    ds["subset"] = 600
    ds["img2dataset"]["samples_per_shard"] = 200
    ds_path.write_text(yaml.safe_dump(ds))
    for name, subset in (("fashion_mnist_demo_test", 200), ("fashion_mnist_demo_labelled", 300)):
        path = config_dir / "datasets" / f"{name}.yaml"
        labelled = yaml.safe_load(path.read_text())
        labelled["subset"] = subset
        path.write_text(yaml.safe_dump(labelled))
    exp_path = config_dir / "experiments" / "demo.yaml"
    exp = yaml.safe_load(exp_path.read_text())
    for stage in ("pretrain", "finetune"):
        exp[stage].update(epochs=1, batch_size=64, warmup_steps=2, checkpoint_every=5, workers=0)
    exp["published"] = {"finetune": {"zeroshot": {"fashion_mnist_demo_test": 42.0}}}
    exp_path.write_text(yaml.safe_dump(exp))
    return config_dir


def snakemake(workdir: Path, config_dir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args, "--config", f"config_dir={config_dir}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def test_demo_workflow_end_to_end(tmp_path):
    config_dir = reduced_config(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    run = snakemake(work, config_dir, "results/demo.table")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]

    table = (work / "results" / "demo.table").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| pretrain") or line.startswith("| finetune")]
    assert len(rows) == 2, table
    for row in rows:
        numbers = re.findall(r"\d+\.\d+", row)
        assert numbers, row
        assert all(0.0 <= float(n) <= 100.0 for n in numbers)
    assert "42.0" in table  # the published number beside ours
    assert "linear" in table and "0-shot" in table
    with open(work / "results" / "demo.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["checkpoint"], r["task"]) for r in rows} == {
        (c, t) for c in ("pretrain", "finetune") for t in ("zeroshot_classification", "linear_probe")}
    assert all(0 <= float(r["ours_percent"]) <= 100 for r in rows)
    paper = [r for r in rows if r["paper_percent"]]
    assert [(r["checkpoint"], float(r["paper_percent"])) for r in paper] == [("finetune", 42.0)]
    assert "\\begin{tabular}" in (work / "results" / "demo.tex").read_text()
    assert (work / "results" / "demo" / "curves.png").stat().st_size > 1000

    stats = json.loads((work / "data" / "fashion_mnist_demo" / "stats.json").read_text())
    assert stats["samples"] == 600
    for stage in ("pretrain", "finetune"):
        metrics = (work / "results" / "demo" / stage / "metrics.jsonl").read_text().splitlines()
        assert metrics and all(json.loads(m)["loss"] > 0 for m in metrics)

    # nothing left to do, and an evaluation-only change does not retrain
    again = snakemake(work, config_dir, "-n", "results/demo.table")
    assert "Nothing to be done" in again.stdout + again.stderr
    exp_path = config_dir / "experiments" / "demo.yaml"
    exp = yaml.safe_load(exp_path.read_text())
    exp["evaluate"]["batch_size"] = 100
    exp_path.write_text(yaml.safe_dump(exp))
    changed = snakemake(work, config_dir, "-n", "results/demo.table")
    out = changed.stdout + changed.stderr
    assert "rule zeroshot:" in out and "rule pretrain:" not in out and "rule finetune:" not in out

    report = snakemake(work, config_dir, "--report", str(tmp_path / "report.html"), "results/demo.table")
    assert report.returncode == 0, report.stderr[-3000:]
    assert "curves.png" in (tmp_path / "report.html").read_text(errors="replace")
