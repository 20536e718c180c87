"""What the Snakemake rules ask of the configs: path patterns, fingerprints, resources, argv, evaluation targets.

Kept here (not in workflow/rules/common.smk) so it is importable and unit-tested without Snakemake. Every path
pattern is written once, in PATHS; every rule has the same shape (named inputs, outputs, log, params with a
fingerprint and the argv, threads, resources, `python -m pipeline <rule> <argv>`), and its pieces come from
here. Rules of the evaluations are generated from the registry in pipeline.evaluate.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Optional

from .config import (CONFIG_DIR, ConfigError, Dataset, Experiment, dataset_path, experiment_path, list_experiments,
                     load_dataset, load_experiment, read_yaml, split_replicate, to_dict)

CHECKPOINTS = ("pretrain", "finetune")
# Snakemake patterns: {name} experiment, {stage} training stage, {ckpt} evaluated checkpoint, {dataset},
# {evaluation}, {group}; ext: file extension. Logs mirror outputs under logs/.
PATHS = {
    "stats": "data/{dataset}/stats.json",
    "data_log": "logs/data/{dataset}.log",
    "checkpoint": "results/{name}/{stage}/final.pt",
    "metrics": "results/{name}/{stage}/metrics.jsonl",
    "train_log": "logs/{name}/{stage}.log",
    "eval": "results/{name}/eval/{ckpt}/{evaluation}/{dataset}.{ext}",
    "eval_log": "logs/{name}/eval/{ckpt}/{evaluation}/{dataset}.log",
    "baseline": "results/{name}/eval/{evaluation}/{dataset}.{ext}",  # evaluations that train their own model
    "baseline_log": "logs/{name}/eval/{evaluation}/{dataset}.log",
    "features": "results/{name}/eval/{ckpt}/features",
    "curves": "results/{name}/curves.png",
    "curves_log": "logs/{name}/curves.log",
    "table": "results/{name}.{ext}",
    "table_log": "logs/{name}/table.log",
    "group_table": "results/tables/{group}.{ext}",
    "group_log": "logs/tables/{group}.log",
    "findings": "results/tables/findings.{ext}",
    "findings_log": "logs/tables/findings.log",
}
TRAIN_RESOURCES = ("nodes", "tasks", "cpus_per_task", "mem_mb", "runtime", "slurm_extra")
EVAL_RESOURCES = ("cpus_per_task", "mem_mb", "runtime", "slurm_extra")


def fill(pattern: str, **values) -> str:
    """`pattern` with the named placeholders filled; the others stay Snakemake wildcards."""
    for key, value in values.items():
        pattern = pattern.replace("{" + key + "}", str(value))
    return pattern


def path(kind: str, **values) -> str:
    return fill(PATHS[kind], **values)


class WorkflowConfig:
    """Experiments and datasets of one config folder, each loaded and validated once."""

    def __init__(self, config_dir: Path = CONFIG_DIR, validate: Optional[Callable[[str, Path], None]] = None,
                 gpu_type: str | None = None, error: type[Exception] = ConfigError):
        self.config_dir = Path(config_dir)
        self._validate = validate
        self.gpu_type = gpu_type
        self._error = error  # what a bad config raises (Snakemake's WorkflowError inside the workflow)
        self._experiments: dict[str, Experiment] = {}
        self._datasets: dict[str, Dataset] = {}

    # ---- loading
    def experiment_file(self, name: str) -> str:
        """The --experiment coordinate of a stage: the file, with `@k` for replicate k."""
        replicate = split_replicate(name)[1]
        return str(experiment_path(name, self.config_dir)) + (f"@{replicate}" if replicate else "")

    def experiment(self, name: str) -> Experiment:
        """The validated experiment, pre-flighted (pipeline.preflight: the jobs' own builders on the meta device,
        the training and evaluation settings' cross-checks), so a bad one stops the parse with one line."""
        if name not in self._experiments:
            exp = self._load("experiment", name, experiment_path,
                             lambda file, config_dir: load_experiment(self.experiment_file(name), config_dir))
            self._preflight(exp, self.experiment_file(name))
            self._experiments[name] = exp
        return self._experiments[name]

    def _preflight(self, exp: Experiment, source: str) -> None:
        from .errors import UserError
        from .preflight import check_experiment

        try:
            check_experiment(exp, source)
        except UserError as exc:
            raise (ConfigError if self._error is ConfigError else self._error)(str(exc)) from None

    def dataset(self, name: str) -> Dataset:
        if name not in self._datasets:
            self._datasets[name] = self._load("dataset", name, dataset_path, load_dataset)
        return self._datasets[name]

    def _load(self, kind: str, name: str, locate, load):
        try:
            file = locate(name, self.config_dir)
            loaded = load(file, self.config_dir)
        except ConfigError as exc:
            if self._error is ConfigError:
                raise
            raise self._error(str(exc)) from None
        if self._validate is not None:
            self._validate(kind, file)
        return loaded

    # ---- what rules of every stage share
    def checkpoints(self, name: str) -> list[str]:
        """Checkpoints the table evaluates: pretrain, and finetune when that stage is enabled."""
        exp = self.experiment(name)
        return [c for c in CHECKPOINTS if exp.stage(c).enabled]

    def eval_rows(self, name: str) -> list[str]:
        """Rows the evaluations run on: the enabled stages, then the files named in evaluate.checkpoints."""
        return self.checkpoints(name) + [c.name for c in self.experiment(name).evaluate.checkpoints]

    def checkpoint_file(self, name: str, row: str) -> str:
        """A row's checkpoint: results/<name>/<stage>/final.pt, or the evaluate.checkpoints entry's own path."""
        files = {c.name: c.path for c in self.experiment(name).evaluate.checkpoints}
        return files[row] if row in files else path("checkpoint", name=name, stage=row)

    def _gpus(self, count: int) -> str:
        return f"--gpus-per-node={self.gpu_type + ':' if self.gpu_type else ''}{count}"

    def resource_values(self, kind: str, w, attempt: int = 1) -> dict:
        """sbatch resources (snakemake-executor-plugin-slurm names) of one job; runtime grows with the attempt.
        Training: one task per node, each a torchrun, GPUs per node through slurm_extra (the plugin's `gpu` is a
        job total). Evaluations share evaluate.resources. Data: the dataset's img2dataset processes."""
        if kind == "data":
            return {"cpus_per_task": self.dataset(w.dataset).img2dataset.processes, "mem_mb": 4000,
                    "runtime": 120 * attempt}
        if kind in CHECKPOINTS:
            res = self.experiment(w.name).stage(kind).resources
            extra = "--ntasks-per-node=1" + (f" {self._gpus(res.gpus_per_node)}" if res.gpus_per_node else "")
            return {"nodes": res.nodes, "tasks": res.nodes, "cpus_per_task": res.cpus_per_task,
                    "mem_mb": res.mem_mb, "runtime": res.runtime_min * attempt, "slurm_extra": extra}
        res = self.experiment(w.name).evaluate.resources
        return {"cpus_per_task": res.cpus_per_task, "mem_mb": res.mem_mb, "runtime": res.runtime_min * attempt,
                "slurm_extra": self._gpus(res.gpus) if res.gpus else ""}

    def resources(self, kind: str) -> dict:
        """The `resources:` of a rule of `kind` (data, pretrain, finetune or evaluate): one function per key."""
        keys = {"data": ("cpus_per_task", "mem_mb", "runtime")}.get(
            kind, TRAIN_RESOURCES if kind in CHECKPOINTS else EVAL_RESOURCES)
        return {key: (lambda w, attempt, key=key: self.resource_values(kind, w, attempt)[key]) for key in keys}

    def threads(self, kind: str) -> Callable:
        return lambda w: self.resource_values(kind, w)["cpus_per_task"]

    # ---- training
    def train_stats(self, name: str) -> str:
        return path("stats", dataset=self.experiment(name).data.train)

    def fingerprint(self, name: str, stage: str) -> str:
        """JSON of exactly the settings a stage's output depends on (Snakemake's params rerun trigger):
        editing evaluation or table settings never retrains, editing pretrain settings retrains both stages."""
        exp = to_dict(self.experiment(name))
        training = ("method", "method_options", "data", "model", "pretrain")
        keys = {"pretrain": training, "finetune": training + ("finetune",),
                "table": ("description", "published", "groups")}[stage]
        return json.dumps({k: exp.get(k) for k in keys}, sort_keys=True)

    def train_args(self, stage: str) -> Callable:
        def args(w, input, output) -> list[str]:
            out = ["--experiment", self.experiment_file(w.name), "--train-data", input.data, "--out", output[0]]
            return out + (["--init", input.init] if stage == "finetune" else [])
        return args

    # ---- evaluations (one generated rule each)
    def eval_outputs(self, evaluation: str) -> dict[str, str]:
        from .evaluate import get

        ev = get(evaluation)
        kind = "eval" if ev.per_checkpoint else "baseline"
        return {out: path(kind, evaluation=evaluation, ext=ext) for out, ext in ev.outputs.items()}

    def eval_log(self, evaluation: str) -> str:
        from .evaluate import get

        return path("eval_log" if get(evaluation).per_checkpoint else "baseline_log", evaluation=evaluation)

    def _entry(self, name: str, evaluation: str, dataset: str):
        from .evaluate import get

        ev = get(evaluation)
        for entry in getattr(self.experiment(name).evaluate, evaluation).datasets:
            if ev.dataset_name(entry) == dataset:
                return ev, entry
        raise ConfigError(f"{self.experiment_file(name)}: evaluate.{evaluation}.datasets: no entry {dataset!r}")

    def eval_inputs(self, evaluation: str) -> Callable:
        """Input function of an evaluation's rule: the checkpoint (if it evaluates one) + what it declares."""
        def inputs(w) -> dict[str, str]:
            ev, entry = self._entry(w.name, evaluation, w.dataset)
            out = {"checkpoint": self.checkpoint_file(w.name, w.ckpt)} if ev.per_checkpoint else {}
            for key, (kind, *ref) in ev.inputs(entry).items():
                if kind == "stats":
                    out[key] = path("stats", dataset=ref[0])
                elif kind == "output":
                    out[key] = fill(self.eval_outputs(ref[0])[ref[1]], name=w.name, ckpt=w.ckpt, dataset=w.dataset)
                else:
                    out[key] = ref[0]
            return out
        return inputs

    def eval_args(self, evaluation: str) -> Callable:
        def args(w, input, output) -> list[str]:
            out = ["--experiment", self.experiment_file(w.name), "--dataset", w.dataset]
            for key, value in input.items():
                out += ["--checkpoint", value] if key == "checkpoint" else ["--input", f"{key}={value}"]
            out += [a for key, value in output.items() for a in ("--output", f"{key}={value}")]
            if hasattr(w, "ckpt"):
                out += ["--cache-dir", path("features", name=w.name, ckpt=w.ckpt)]
            return out
        return args

    def eval_fingerprint(self, evaluation: str) -> Callable:
        """JSON of the evaluation's section and the shared evaluate settings (rerun trigger)."""
        def fingerprint(w) -> str:
            ev = to_dict(self.experiment(w.name).evaluate)
            return json.dumps({evaluation: ev[evaluation], "batch_size": ev["batch_size"], "workers": ev["workers"]},
                              sort_keys=True)
        return fingerprint

    def eval_results(self, name: str) -> list[str]:
        """Every evaluation result the table of experiment `name` reads, one per (checkpoint, evaluation, dataset)."""
        from .evaluate import evaluations

        exp, registered = self.experiment(name), sorted(evaluations(), key=lambda e: (e.order, e.name))
        out = []
        for ckpt in self.eval_rows(name):
            for ev in (e for e in registered if e.per_checkpoint):
                result = fill(self.eval_outputs(ev.name)["result"], name=name, ckpt=ckpt)
                out += [fill(result, dataset=ev.dataset_name(d)) for d in getattr(exp.evaluate, ev.name).datasets]
        for ev in (e for e in registered if not e.per_checkpoint):
            result = fill(self.eval_outputs(ev.name)["result"], name=name)
            out += [fill(result, dataset=ev.dataset_name(d)) for d in getattr(exp.evaluate, ev.name).datasets]
        return out

    # ---- tables
    def group_members(self, group: str) -> list[str]:
        """Experiments whose `groups` list names `group` (results/tables/<group>.table)."""
        # membership from each file's own `groups` list: only the members are loaded and pre-flighted (seconds each)
        members = [n for n in list_experiments(self.config_dir)
                   if group in ((read_yaml(experiment_path(n, self.config_dir)) or {}).get("groups") or [])]
        for name in members:
            self.experiment(name)
        if not members:
            raise ConfigError(f"{self.config_dir}/experiments: no experiment lists group {group!r} in `groups`")
        return members

    def findings_inputs(self, spec_file: Path) -> dict[str, str]:
        """The findings table's inputs (config/findings.yaml): KEY -> file for every claim term and replicate
        (pipeline.report.findings.needs); a term naming an evaluation its experiment does not run is one line."""
        from .evaluate import get
        from .report.findings import TRAIN, load_spec, needs

        out = {}
        for need in needs(load_spec(spec_file)):
            exp = self.experiment(need.experiment)
            if need.source == TRAIN:
                out[need.key] = path("checkpoint", name=need.experiment, stage=need.checkpoint)
                continue
            ev = get(need.source)
            if need.dataset not in [ev.dataset_name(d) for d in getattr(exp.evaluate, need.source).datasets]:
                raise self._error(f"{spec_file}: {need.key}: experiment {split_replicate(need.experiment)[0]} does "
                                  f"not evaluate {need.dataset} (evaluate.{need.source}.datasets)")
            result = self.eval_outputs(need.source)["result"]
            out[need.key] = fill(result, name=need.experiment, ckpt=need.checkpoint, dataset=need.dataset)
        return out

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
