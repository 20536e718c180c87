"""Evaluations of checkpoints, registered like the methods: one module in this package per evaluation.

A module declares an `Evaluation` with `register(...)`: its name (which is also its config section
`evaluate.<name>`, its Snakemake rule, its `python -m pipeline <name>` command and its results folder), the
inputs it reads besides the checkpoint, the outputs it writes, its table columns and its `run(ctx)` function.
The workflow generates one rule per registered evaluation (workflow/rules/evaluate.smk), the report reads the
columns from here, and `python -m pipeline <name>` runs it. Adding an evaluation = one module here + its
schema section + its test (docs/evaluation.md walks through it). Modules starting with `_` are shared helpers.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

_REGISTRY: dict[str, "Evaluation"] = {}


@dataclass(frozen=True)
class Context:
    """What one run of an evaluation gets: coordinates and paths from argv, its config section from the file."""
    experiment: Any                  # the whole experiment (pipeline.config view)
    settings: Any                    # experiment.evaluate.<name>
    dataset: str                     # the dataset the result is named after (the test split)
    entry: Any                       # its entry in settings.datasets (a name, a {train, test} pair, ...)
    checkpoint: Path | None          # the CLIP checkpoint evaluated (None for checkpoint-free evaluations)
    inputs: dict[str, Path]
    outputs: dict[str, Path]
    config_dir: Path
    cache_dir: Path | None = None    # per-checkpoint scratch shared by evaluations (cached features)


@dataclass(frozen=True)
class Evaluation:
    name: str
    task: str                                            # CLIP_benchmark's task name in result records
    run: Callable[[Context], None]
    # extra inputs of one dataset entry: {input name: ("stats", dataset) | ("output", evaluation, output name)
    # | ("file", path)}; the workflow turns these into paths
    inputs: Callable[[Any], dict[str, tuple]]
    outputs: dict[str, str] = field(default_factory=lambda: {"result": "json"})   # output name -> extension
    # table columns (label, metric[, key of its numbers in `published`]); the first is the headline
    columns: tuple[tuple[str, ...], ...] = ()
    published: str | None = None                         # `published` key of the headline column
    per_checkpoint: bool = True                          # False: trains its own model (no CLIP checkpoint)
    distributed: bool = False                            # runs under torchrun (settings.processes processes)
    order: int = 100                                     # where its columns go in tables (lower = further left)

    def published_metrics(self) -> dict[str, str]:
        """{key in the experiment's `published`: metric it stands beside}: the headline's key, then the keys
        further columns name (e.g. finetune_eval's last-epoch and best-epoch numbers)."""
        out = {self.published: self.columns[0][1]} if self.published and self.columns else {}
        out.update({col[2]: col[1] for col in self.columns[1:] if len(col) > 2 and col[2]})
        return out

    def dataset_name(self, entry) -> str:
        """The name results use for one entry of `evaluate.<name>.datasets`."""
        if isinstance(entry, str):
            return entry
        return entry.test if "test" in entry else entry.name


def register(evaluation: Evaluation) -> Evaluation:
    _REGISTRY[evaluation.name] = evaluation
    return evaluation


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def evaluations() -> list[Evaluation]:
    """Every registered evaluation, in name order."""
    _import_all()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get(name: str) -> Evaluation:
    _import_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown evaluation {name!r} (evaluations: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def by_task() -> dict[str, Evaluation]:
    """Evaluations keyed by the task name their result records carry, in table column order (the report's
    lookup). Evaluations sharing a task (finetune_eval, supervised_baseline) share its columns."""
    out: dict[str, Evaluation] = {}
    for e in sorted(evaluations(), key=lambda e: (e.order, e.name)):
        out.setdefault(e.task, e)
    return out


def check_experiment(experiment, source: str) -> None:
    """What the evaluations of one experiment need of each other, known before any job runs: one line naming the
    file and the key (called by the workflow at parse time and by every evaluation's command at start).
    WiSE-FT interpolates finetune_eval's zero-shot-headed model of the same pair; its headline alpha is one of its
    alphas; checkpoint rows have distinct names."""
    from ..errors import UserError

    ev = experiment.evaluate
    if ev.wiseft.datasets and ev.wiseft.headline_alpha not in ev.wiseft.alphas:
        raise UserError(f"{source}: evaluate.wiseft.headline_alpha: {ev.wiseft.headline_alpha:g} is not one of alphas")
    pairs = {(p.train, p.test) for p in ev.finetune_eval.datasets}
    for i, pair in enumerate(ev.wiseft.datasets):
        if (pair.train, pair.test) not in pairs:
            raise UserError(f"{source}: evaluate.wiseft.datasets.{i}: {pair.train} -> {pair.test} is not listed "
                            f"under evaluate.finetune_eval.datasets (WiSE-FT interpolates that fine-tune)")
        if ev.finetune_eval.head != "zeroshot":
            raise UserError(f"{source}: evaluate.finetune_eval.head: {ev.finetune_eval.head!r}, but WiSE-FT needs the "
                            f"zero-shot head (head: zeroshot) to interpolate against")
    if ev.zeroshot.scoring == "filip_tokens" and experiment.method != "filip":
        raise UserError(f"{source}: evaluate.zeroshot.scoring: filip_tokens needs the token mappings of method filip, "
                        f"this experiment trains {experiment.method}")
    names = [c.name for c in ev.checkpoints]
    if len(set(names)) != len(names):
        raise UserError(f"{source}: evaluate.checkpoints: names repeat ({', '.join(names)})")


__all__ = ["Context", "Evaluation", "by_task", "check_experiment", "evaluations", "get", "register"]
