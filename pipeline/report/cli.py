"""`python -m pipeline table --experiment config/experiments/E.yaml --results R.json... --out E.table --csv E.csv`."""
from __future__ import annotations

import argparse

from ..config import load_experiment
from ..utils.io import write_text
from .results import read_results
from .table import build_table, to_csv, to_markdown


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline table", description=__doc__)
    p.add_argument("--experiment", required=True, help="experiment config (config/experiments/E.yaml)")
    p.add_argument("--results", nargs="+", required=True, help="evaluation result JSONs of this experiment")
    p.add_argument("--out", required=True, help="markdown table, written atomically")
    p.add_argument("--csv", help="long-form CSV of the same numbers, written atomically")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv[1:])
    experiment = load_experiment(args.experiment, check_datasets=False)
    table = build_table(experiment=experiment, records=read_results(args.results))
    write_text(args.out, to_markdown(table))
    if args.csv:
        write_text(args.csv, to_csv(table))
    print(f"table {experiment.name}: {len(table.rows)} rows x {len(table.columns)} columns -> {args.out}")
    return 0
