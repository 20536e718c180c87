"""`python -m pipeline <evaluation> --experiment E.yaml --dataset D [--checkpoint C] --input NAME=PATH ...
--output NAME=PATH ... [--cache-dir DIR]`: one evaluation of one dataset entry.

argv carries only coordinates and paths; every setting is read from the experiment's `evaluate.<evaluation>`
section (and `evaluate.batch_size` / `evaluate.workers`). The Snakemake rule generated for the evaluation
passes exactly the inputs and outputs the evaluation declares.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import experiment_source
from ..errors import UserError
from . import Context, check_experiment, get


def _pairs(items: list[str] | None, flag: str) -> dict[str, Path]:
    out = {}
    for item in items or ():
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise UserError(f"{flag}: expected NAME=PATH, got {item!r}")
        out[name] = Path(path)
    return out


def parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m pipeline {name}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="config/experiments/E.yaml (or an experiment name)")
    p.add_argument("--dataset", required=True, help="the dataset entry evaluated (its test split's name)")
    p.add_argument("--checkpoint", type=Path, help="the CLIP checkpoint (results/E/<stage>/final.pt)")
    p.add_argument("--input", action="append", metavar="NAME=PATH", help="an input the evaluation reads")
    p.add_argument("--output", action="append", metavar="NAME=PATH", help="an output it writes")
    p.add_argument("--cache-dir", type=Path, help="per-checkpoint scratch folder (cached features)")
    return p


def context(name: str, argv: list[str]) -> Context:
    """Parse one evaluation's argv and check it against the evaluation's declaration and config section."""
    evaluation = get(name)
    args = parser(name).parse_args(argv)
    experiment, config_dir = experiment_source(args.experiment)
    settings = getattr(experiment.evaluate, name)
    check_experiment(experiment, f"{config_dir}/experiments/{experiment.name}.yaml")
    where = f"{config_dir}/experiments/{experiment.name}.yaml: evaluate.{name}.datasets"
    entries = [e for e in settings.datasets if evaluation.dataset_name(e) == args.dataset]
    if not entries:
        raise UserError(f"{where}: no entry for dataset {args.dataset!r}")
    inputs, outputs = _pairs(args.input, "--input"), _pairs(args.output, "--output")
    wanted_inputs = set(evaluation.inputs(entries[0]))
    if set(inputs) != wanted_inputs or set(outputs) != set(evaluation.outputs):
        raise UserError(f"{name}: expects --input {sorted(wanted_inputs)} and --output {sorted(evaluation.outputs)}, "
                        f"got {sorted(inputs)} and {sorted(outputs)}")
    if evaluation.per_checkpoint and args.checkpoint is None:
        raise UserError(f"{name}: --checkpoint is required")
    return Context(experiment=experiment, settings=settings, dataset=args.dataset, entry=entries[0],
                   checkpoint=args.checkpoint, inputs=inputs, outputs=outputs, config_dir=config_dir,
                   cache_dir=args.cache_dir)


def main(argv: list[str]) -> int:
    ctx = context(argv[0], argv[1:])
    get(argv[0]).run(ctx)
    return 0
