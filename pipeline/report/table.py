"""Results tables: one row per checkpoint (or method), one column per (task, metric, dataset), in percent.

A cell reads `ours (paper)` where the experiment's `published` section gives a reference number for that
column (each evaluation names which `published` key stands beside which of its columns).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..evaluate import by_task


def tasks() -> dict[str, tuple[dict[str, str], list[tuple[str, str]]]]:
    """result task -> ({key in `published`: metric}, [(column label, metric)]), in column order; the first metric
    is the headline. Read from the evaluation registry (pipeline.evaluate): each evaluation declares its columns."""
    return {task: (e.published_metrics(), [tuple(c[:2]) for c in e.columns]) for task, e in by_task().items()}


ROW_ORDER = ("pretrain", "finetune")
Column = tuple[str, str, str]  # (task, metric, dataset)


@dataclass
class Table:
    title: str
    description: str
    columns: list[Column] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    ours: dict[tuple, float] = field(default_factory=dict)    # (row, *column) -> percent
    paper: dict[tuple, float] = field(default_factory=dict)


def _add(items: list, x) -> None:
    if x not in items:
        items.append(x)


def row_label(record: dict) -> str:
    """The checkpoint; a baseline trained from random init says so."""
    label = record["checkpoint"]
    return f"{label} (random init)" if record.get("pretrained") == "random init" else label


def _add_record(table: Table, path: Path, rec: dict, columns: list, rows: list) -> None:
    known = tasks()
    if rec["task"] not in known:
        raise UserError(f"{path}: task: {rec['task']!r} has no table column (known: {', '.join(known)})")
    row = row_label(rec)
    for i, (_, metric) in enumerate(known[rec["task"]][1]):
        value = rec["metrics"].get(metric)
        if value is None and i > 0:
            continue  # optional extra column (e.g. no EMA kept)
        if not isinstance(value, (int, float)):
            raise UserError(f"{path}: metrics.{metric}: missing or not a number")
        col = (rec["task"], metric, rec["dataset"])
        _add(columns, col)
        table.ours[(row, *col)] = 100.0 * value
    _add(rows, row)


def build_table(*, experiment, records: list[tuple[Path, dict]]) -> Table:
    """Collect our numbers (result records of this experiment) and the paper's (experiment.published)."""
    table = Table(title=experiment.name, description=" ".join(experiment.description.split()))
    columns, rows = [], []
    for path, rec in records:
        if rec["model"] != experiment.name:
            raise UserError(f"{path}: model: result of experiment {rec['model']!r}, table is for {experiment.name!r}")
        _add_record(table, path, rec, columns, rows)
    known = tasks()
    by_published = {pub: (task, metric) for task, (pubs, _) in known.items() for pub, metric in pubs.items()}
    for stage, published in (experiment.published or {}).items():
        for pub_task, per_dataset in published.items():
            task, metric = by_published[pub_task]
            for dataset, value in per_dataset.items():
                _add(columns, (task, metric, dataset))
                _add(rows, stage)
                table.paper[(stage, task, metric, dataset)] = float(value)
    first = [r for r in ROW_ORDER if r in rows]
    table.rows = first + [r for r in rows if r not in first]
    task_order = list(known)
    metric_order = {t: [m for _, m in cols] for t, (_, cols) in known.items()}
    table.columns = sorted(columns, key=lambda c: (task_order.index(c[0]), c[2], metric_order[c[0]].index(c[1])))
    return table


def column_label(col: Column) -> str:
    task, metric, dataset = col
    label = dict((m, lab) for lab, m in tasks()[task][1])[metric]
    return f"{label} {dataset}"


def cell(table: Table, row: str, col: Column) -> str:
    ours, paper = table.ours.get((row, *col)), table.paper.get((row, *col))
    text = "–" if ours is None else f"{ours:.2f}"
    return text if paper is None else f"{text} ({paper:.1f})"


def merge_tables(title: str, tables: list[Table]) -> Table:
    """Group comparison: rows `experiment / checkpoint` of several tables, columns united."""
    out = Table(title=title, description="; ".join(f"{t.title}: {t.description}" for t in tables if t.description))
    for t in tables:
        for col in t.columns:
            _add(out.columns, col)
        for row in t.rows:
            label = f"{t.title} / {row}"
            out.rows.append(label)
            for key, value in t.ours.items():
                if key[0] == row:
                    out.ours[(label, *key[1:])] = value
            for key, value in t.paper.items():
                if key[0] == row:
                    out.paper[(label, *key[1:])] = value
    task_order = list(tasks())
    out.columns.sort(key=lambda c: (task_order.index(c[0]), c[2]))
    return out
