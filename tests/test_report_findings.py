"""The findings table: claims over replicated experiments, mean and spread, holds / does not hold."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.errors import UserError
from pipeline.report import findings

REPO = Path(__file__).resolve().parents[1]

SPEC = {
    "replicates": 2,
    "dataset": "d",
    "claims": [
        {"id": "ordered", "paper": "P", "statement": "A beats B", "kind": "order",
         "terms": [{"label": "A", "experiment": "a", "checkpoint": "pretrain", "measure": "zeroshot.acc1"},
                   {"label": "B", "experiment": "b", "checkpoint": "pretrain", "measure": "zeroshot.acc1"}]},
        {"id": "faster", "paper": "P", "statement": "A is 2x faster", "kind": "ratio", "threshold": 2.0,
         "terms": [{"label": "A", "experiment": "a", "checkpoint": "pretrain", "measure": "samples_per_s"},
                   {"label": "B", "experiment": "b", "checkpoint": "pretrain", "measure": "samples_per_s"}]},
        {"id": "close", "paper": "P", "statement": "B within 1 point of A", "kind": "within", "gap": 1.0,
         "terms": [{"label": "B", "experiment": "b", "checkpoint": "pretrain", "measure": "zeroshot.acc1"},
                   {"label": "A", "experiment": "a", "checkpoint": "pretrain", "measure": "zeroshot.acc1"}]},
        {"id": "chance", "paper": "P", "statement": "B is chance", "kind": "at_most", "threshold": 15,
         "terms": [{"label": "B", "experiment": "b", "checkpoint": "pretrain", "measure": "zeroshot.acc1"}]},
    ],
}


def _files(tmp_path, acc, speed):
    """acc / speed: {experiment name with replicate: value}; writes results and metrics, returns KEY -> path."""
    files = {}
    for name, value in acc.items():
        path = tmp_path / name / "zs.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"metrics": {"acc1": value}}))
        files[f"{name}|pretrain|zeroshot|d"] = path
    for name, rate in speed.items():
        final = tmp_path / name / "pretrain" / "final.pt"
        final.parent.mkdir(parents=True, exist_ok=True)
        records = [{"step": 1, "samples_per_s": 1.0}] + [{"step": s, "samples_per_s": rate} for s in (2, 3, 4)]
        (final.parent / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        files[f"{name}|pretrain|train|d"] = final
    return files


def test_verdicts_means_and_spreads(tmp_path):
    spec_file = tmp_path / "findings.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    spec = findings.load_spec(spec_file)
    assert len(findings.needs(spec)) == 8  # 2 experiments x 2 replicates x (zeroshot, train)
    files = _files(tmp_path, {"a": 0.80, "a@1": 0.82, "b": 0.795, "b@1": 0.805},
                   {"a": 300.0, "a@1": 320.0, "b": 100.0, "b@1": 110.0})
    rows = {r["claim"]: r for r in findings.build_rows(spec, files)}
    assert rows["ordered"]["verdict"] == "holds"  # 81.0 >= 80.0
    a = rows["ordered"]["terms"][0]
    assert a.mean == pytest.approx(81.0) and a.spread == pytest.approx(1.41421356, rel=1e-6)
    assert "A: 81.0 ± 1.4 % (n=2)" in rows["ordered"]["measured"]
    assert rows["faster"]["verdict"] == "holds" and "ratio 2.95x" in rows["faster"]["test"]  # 310 / 105, warm-up dropped
    assert rows["close"]["verdict"] == "holds" and "1.0 points below A" in rows["close"]["test"]  # 80.0 vs 81.0
    assert rows["chance"]["verdict"] == "does not hold"  # 80% is far above chance
    text = findings.to_markdown(spec, list(rows.values()))
    assert "| P | **ordered**: A beats B |" in text and "holds" in text
    worse = _files(tmp_path / "worse", {"a": 0.70, "a@1": 0.72, "b": 0.795, "b@1": 0.805},
                   {"a": 1.0, "a@1": 1.0, "b": 1.0, "b@1": 1.0})
    rows = {r["claim"]: r for r in findings.build_rows(spec, worse)}
    assert rows["ordered"]["verdict"] == rows["faster"]["verdict"] == "does not hold"  # 71 < 80; 1x < 2x
    assert rows["close"]["verdict"] == "holds" and "9.0 points above A" in rows["close"]["test"]  # within any gap
    del worse["b@1|pretrain|zeroshot|d"]
    with pytest.raises(UserError, match=r"no --input for b@1\|pretrain\|zeroshot\|d"):
        findings.build_rows(spec, worse)


def test_bad_spec_is_one_line(tmp_path):
    bad = dict(SPEC, claims=[dict(SPEC["claims"][0], kind="bigger")])
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(UserError, match=r"f.yaml: claims.0.kind: 'bigger' is not one of"):
        findings.load_spec(tmp_path / "f.yaml")


@pytest.mark.slow
def test_dry_run_lists_every_replicated_run(tmp_path):
    """`snakemake -n results/tables/findings.table` plans every arm twice (E and E@1) and the findings rule (in an
    empty working directory, so results already in the checkout do not hide jobs)."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "results/tables/findings.table", "--config", f"config_dir={REPO / 'config'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert "localrule findings:" in out or "rule findings:" in out
    for name in ("demo", "demo@1", "demo_slip@1", "findings_clipa_full@1", "findings_ftclip@1"):
        assert f"results/{name}/pretrain/final.pt" in out, name
    assert "results/findings_ftclip@1/eval/supervised_baseline/fashion_mnist_demo_test.json" in out
    assert "--experiment " in out and "demo.yaml@1" in out
