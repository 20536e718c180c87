"""What the Snakemake rules ask of the configs: paths, fingerprints, resources, evaluation targets.

Kept here (not in workflow/rules/common.smk) so it is importable and unit-tested without Snakemake.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Optional

from .config import (CONFIG_DIR, ConfigError, Dataset, Experiment, dataset_path, experiment_path, load_dataset,
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
                "table": ("description", "published", "groups")}[stage]
        return json.dumps({k: exp.get(k) for k in keys}, sort_keys=True)

    def resources(self, name: str, stage: str, attempt: int = 1, gpu_type: str | None = None) -> dict:
        """sbatch resources of a training stage (snakemake-executor-plugin-slurm names): one task per
        node, each a torchrun; GPUs per node through slurm_extra (the plugin's `gpu` is a job total);
        runtime grows with the retry attempt."""
        res = self.experiment(name).stage(stage).resources
        extra = "--ntasks-per-node=1"
        if res.gpus_per_node:
            extra += f" --gpus-per-node={gpu_type + ':' if gpu_type else ''}{res.gpus_per_node}"
        return {"nodes": res.nodes, "tasks": res.nodes, "cpus_per_task": res.cpus_per_task,
                "mem_mb": res.mem_mb, "runtime": res.runtime_min * attempt, "slurm_extra": extra}

    def eval_resources(self, name: str, attempt: int = 1, gpu_type: str | None = None) -> dict:
        """sbatch resources of every evaluation job of an experiment; runtime grows with the attempt."""
        res = self.experiment(name).evaluate.resources
        out = {"cpus_per_task": res.cpus_per_task, "mem_mb": res.mem_mb, "runtime": res.runtime_min * attempt,
               "slurm_extra": ""}
        if res.gpus:
            out["slurm_extra"] = f"--gpus-per-node={gpu_type + ':' if gpu_type else ''}{res.gpus}"
        return out

    def eval_results(self, name: str) -> list[str]:
        """Every evaluation JSON the table of experiment `name` reads, one per (checkpoint, task, dataset)."""
        ev = self.experiment(name).evaluate
        out = []
        for ckpt in self.checkpoints(name):
            base = f"results/{name}/eval/{ckpt}"
            out += [f"{base}/zeroshot/{ds}.json" for ds in ev.zeroshot]
            out += [f"{base}/linear_probe/{p.test}.json" for p in ev.linear_probe.datasets]
            out += [f"{base}/finetune/{p.test}.json" for p in ev.finetune_eval.datasets]
            out += [f"{base}/wiseft/{p.test}.json" for p in ev.wiseft.datasets]
            out += [f"{base}/retrieval/{r.name}.json" for r in ev.retrieval.datasets]
        out += [f"results/{name}/eval/resnet50/finetune/{p.test}.json" for p in ev.supervised_baseline.datasets]
        return out

    def train_split(self, name: str, task: str, test: str) -> str:
        """Stats file of the training split paired with test set `test` in evaluate.<task>.datasets."""
        for pair in getattr(self.experiment(name).evaluate, task).datasets:
            if pair.test == test:
                return f"data/{pair.train}/stats.json"
        raise ConfigError(f"{self.experiment_file(name)}: evaluate.{task}.datasets: no pair with test {test!r}")

    def retrieval_set(self, name: str, dataset: str):
        for entry in self.experiment(name).evaluate.retrieval.datasets:
            if entry.name == dataset:
                return entry
        raise ConfigError(f"{self.experiment_file(name)}: evaluate.retrieval.datasets: no entry {dataset!r}")

    def finetune_eval_args(self, name: str) -> list[str]:
        """evaluate.finetune_eval as command-line arguments of `python -m pipeline finetune-eval`."""
        ft = self.experiment(name).evaluate.finetune_eval
        args = ["--epochs", ft.epochs, "--batch-size", ft.batch_size, "--grad-accum-steps", ft.grad_accum_steps,
                "--lr", ft.lr, "--min-lr", ft.min_lr, "--warmup-epochs", ft.warmup_epochs,
                "--weight-decay", ft.weight_decay, "--layer-decay", ft.layer_decay,
                "--ema-decay", ft.ema_decay or 0, "--label-smoothing", ft.label_smoothing,
                "--randaugment", ft.randaugment, "--reprob", ft.reprob, "--crop-min", ft.crop_min,
                "--mixup", ft.mixup, "--cutmix", ft.cutmix, "--head-init", ft.head_init,
                "--zero-stage", ft.zero_stage, "--precision", ft.precision, "--workers", ft.workers,
                "--seed", ft.seed]
        if ft.grad_clip:
            args += ["--grad-clip", ft.grad_clip]
        return [str(a) for a in args]

    def supervised_args(self, name: str) -> list[str]:
        sb = self.experiment(name).evaluate.supervised_baseline
        args = ["--epochs", sb.epochs, "--batch-size", sb.batch_size, "--lr", sb.lr,
                "--head-lr-scale", sb.head_lr_scale, "--weight-decay", sb.weight_decay,
                "--image-size", sb.image_size, "--workers", sb.workers, "--seed", sb.seed]
        if sb.weights:
            args += ["--weights", sb.weights]
        if sb.augment:
            args += ["--augment"]
        return [str(a) for a in args]

    def group_members(self, group: str) -> list[str]:
        """Experiments whose `groups` list names `group` (results/tables/<group>.table)."""
        from .config import list_experiments

        members = [n for n in list_experiments(self.config_dir) if group in self.experiment(n).groups]
        if not members:
            raise ConfigError(f"{self.config_dir}/experiments: no experiment lists group {group!r} in `groups`")
        return members

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
