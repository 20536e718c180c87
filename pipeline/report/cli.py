"""`python -m pipeline table --experiment config/experiments/E.yaml --results R.json... --out E.table
[--csv E.csv] [--tex E.tex]` and `python -m pipeline table_group --group G --experiments A.yaml B.yaml
--results R.json... --out results/tables/G.table [--csv] [--tex]`."""
from __future__ import annotations

import argparse

from ..config import load_experiment
from ..errors import UserError
from ..utils.io import write_text
from .render import to_csv, to_latex, to_markdown
from .results import read_results
from .table import build_table, merge_tables


def parser(group: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m pipeline {'table_group' if group else 'table'}", description=__doc__)
    if group:
        p.add_argument("--group", required=True, help="name of the comparison (table title)")
        p.add_argument("--experiments", nargs="+", required=True, help="experiment configs compared")
    else:
        p.add_argument("--experiment", required=True, help="experiment config (config/experiments/E.yaml)")
    p.add_argument("--results", nargs="+", required=True, help="evaluation result JSONs")
    p.add_argument("--out", required=True, help="markdown table, written atomically")
    p.add_argument("--csv", help="long-form CSV of the same numbers")
    p.add_argument("--tex", help="LaTeX (booktabs) tabular of the same table")
    return p


def _write(table, args) -> None:
    write_text(args.out, to_markdown(table))
    if args.csv:
        write_text(args.csv, to_csv(table))
    if args.tex:
        write_text(args.tex, to_latex(table))
    print(f"table {table.title}: {len(table.rows)} rows x {len(table.columns)} columns -> {args.out}")


def main(argv: list[str]) -> int:
    group = argv[0] == "table_group"
    args = parser(group).parse_args(argv[1:])
    records = read_results(args.results) if not group else None
    if not group:
        experiment = load_experiment(args.experiment, check_datasets=False)
        _write(build_table(experiment=experiment, records=records), args)
        return 0
    experiments = [load_experiment(e, check_datasets=False) for e in args.experiments]
    names = [e.name for e in experiments]
    by_model: dict[str, list] = {n: [] for n in names}
    for path in args.results:
        for p, rec in read_results([path]):
            if rec["model"] not in by_model:
                raise UserError(f"{p}: model: {rec['model']!r} is not one of the group's experiments ({', '.join(names)})")
            by_model[rec["model"]].append((p, rec))
    for name, recs in by_model.items():
        keys = [(r["checkpoint"], r["task"], r["dataset"]) for _, r in recs]
        if len(keys) != len(set(keys)):
            raise UserError(f"results: experiment {name!r} has the same (checkpoint, task, dataset) twice")
    tables = [build_table(experiment=e, records=by_model[e.name]) for e in experiments]
    _write(merge_tables(args.group, tables), args)
    return 0
