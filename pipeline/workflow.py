"""What the Snakemake rules ask of the configs: paths, fingerprints, resources, evaluation targets.

Kept here (not in workflow/rules/common.smk) so it is importable and unit-tested without Snakemake.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Optional

from .config import (CONFIG_DIR, Dataset, Experiment, dataset_path, experiment_path, load_dataset,
                     load_experiment, to_dict)

CHECKPOINTS = ("pretrain", "finetune")


class WorkflowConfig:
    """Experiments and datasets of one config folder, each loaded and validated once."""

    def __init__(self, config_dir: Path = CONFIG_DIR,
                 validate: Optional[Callable[[str, Path], None]] = None):
        self.config_dir = Path(config_dir)
        self._validate = validate
        self._experiments: dict[str, Experiment] = {}
        self._datasets: dict[str, Dataset] = {}

    # ---- loading
    def experiment_file(self, name: str) -> str:
        return str(experiment_path(name, self.config_dir))

    def dataset_file(self, name: str) -> str:
        return str(dataset_path(name, self.config_dir))

    def experiment(self, name: str) -> Experiment:
        if name not in self._experiments:
            path = experiment_path(name, self.config_dir)
            exp = load_experiment(path, self.config_dir)
            if self._validate is not None:
                self._validate("experiment", path)
            self._experiments[name] = exp
        return self._experiments[name]

    def dataset(self, name: str) -> Dataset:
        if name not in self._datasets:
            path = dataset_path(name, self.config_dir)
            ds = load_dataset(path, self.config_dir)
            if self._validate is not None:
                self._validate("dataset", path)
            self._datasets[name] = ds
        return self._datasets[name]

    # ---- per-rule answers
    def checkpoints(self, name: str) -> list[str]:
        """Checkpoints the table evaluates: pretrain, and finetune when that stage is enabled."""
        exp = self.experiment(name)
        return [c for c in CHECKPOINTS if exp.stage(c).enabled]

    def train_stats(self, name: str) -> str:
        return f"data/{self.experiment(name).data.train}/stats.json"

    def fingerprint(self, name: str, stage: str) -> str:
        """JSON of exactly the settings a stage's output depends on (Snakemake's params rerun trigger):
        editing evaluation or table settings never retrains, editing pretrain settings retrains both stages."""
        exp = to_dict(self.experiment(name))
        training = ("method", "method_options", "data", "model", "pretrain")
        keys = {"pretrain": training, "finetune": training + ("finetune",),
                "table": ("description", "published")}[stage]
        return json.dumps({k: exp.get(k) for k in keys}, sort_keys=True)

    def resources(self, name: str, stage: str, attempt: int = 1) -> dict:
        """Cluster resources of a training stage; runtime grows with the retry attempt."""
        res = self.experiment(name).stage(stage).resources
        out = {"nodes": res.nodes, "cpus_per_task": res.cpus_per_task, "mem_mb": res.mem_mb,
               "runtime": res.runtime_min * attempt, "tasks_per_node": 1}
        if res.gpus_per_node:
            out["gpu"] = res.gpus_per_node
        return out

    def eval_results(self, name: str) -> list[str]:
        exp = self.experiment(name)
        return [f"results/{name}/eval/{ckpt}/zeroshot/{ds}.json"
                for ckpt in self.checkpoints(name) for ds in exp.evaluate.zeroshot]

    def dataset_fingerprint(self, name: str) -> str:
        """JSON of a dataset's config (its data rule's params rerun trigger)."""
        return json.dumps(to_dict(self.dataset(name)), sort_keys=True)


def requested(targets) -> tuple[list[str], list[str]]:
    """Experiment and dataset names named by target paths, so their configs are checked at parse
    time and a bad one stops the run with one line instead of an input-function traceback."""
    experiments, datasets = [], []
    for target in targets:
        target = str(target)
        match = re.match(r"^(?:\./)?results/([^/]+?)(?:\.table|\.csv|\.tex|/.*)$", target)
        if match and match.group(1) != "tables":
            experiments.append(match.group(1))
        match = re.match(r"^(?:\./)?data/([^/]+)/", target)
        if match:
            datasets.append(match.group(1))
    return experiments, datasets
