"""`python -m pipeline pretrain|finetune --experiment E.yaml --train-data data/D/stats.json --out .../final.pt
[--init pretrain/final.pt]`: one training stage (the command line re-runs it under torchrun: pipeline.launch)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import experiment_source
from ..errors import UserError
from .checks import check_training

STAGES = ("pretrain", "finetune")


def parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m pipeline {stage}", description=__doc__)
    p.add_argument("--experiment", required=True, help="config/experiments/E.yaml (or an experiment name)")
    p.add_argument("--train-data", required=True, type=Path, help="data/D/stats.json written by the data stage")
    p.add_argument("--out", required=True, type=Path, help="final checkpoint; logs and checkpoints/ go beside it")
    p.add_argument("--init", type=Path, help="checkpoint to start from (finetune: pretrain/final.pt)")
    return p


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in STAGES:
        raise UserError(f"training stage: expected one of {', '.join(STAGES)}, got {argv[:1]}")
    stage, args = argv[0], parser(argv[0]).parse_args(argv[1:])
    experiment, _ = experiment_source(args.experiment)
    if not experiment.stage(stage).enabled:
        raise UserError(f"{args.experiment}: {stage}.enabled: the stage is disabled")
    if stage == "finetune" and args.init is None:
        raise UserError(f"{args.experiment}: finetune: --init (the pretrain final.pt) is required")
    if not args.train_data.is_file():
        raise UserError(f"{args.train_data}: --train-data stats not found (run the data stage first)")
    if args.init is not None and not args.init.is_file():
        raise UserError(f"{args.init}: --init checkpoint not found")
    check_training(experiment, stage, where=args.experiment)
    from .loop import train  # torch is slow to import: only after the arguments are known to be good

    train(experiment=experiment, stage_name=stage, train_data=args.train_data, out=args.out, init=args.init)
    return 0
