"""Results tables: one row per checkpoint, one column per (task, dataset), top-1 in percent.

A cell reads `ours (paper)` where the experiment's `published` section gives a reference number.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

# result task -> (key in `published`, column label, headline metric)
TASKS = {
    "zeroshot_classification": ("zeroshot", "0-shot", "acc1"),
}
ROW_ORDER = ("pretrain", "finetune")


@dataclass
class Table:
    title: str
    description: str
    columns: list[tuple[str, str]] = field(default_factory=list)        # (task, dataset)
    rows: list[str] = field(default_factory=list)                       # checkpoint labels
    ours: dict[tuple[str, str, str], float] = field(default_factory=dict)   # (row, task, dataset) -> percent
    paper: dict[tuple[str, str, str], float] = field(default_factory=dict)


def _ordered(items, first):
    first = [x for x in first if x in items]
    return first + [x for x in items if x not in first]


def build_table(*, experiment, records: list[tuple[Path, dict]]) -> Table:
    """Collect our numbers (from result records) and the paper's (from experiment.published)."""
    table = Table(title=experiment.name, description=" ".join(experiment.description.split()))
    columns, rows = [], []
    for path, rec in records:
        if rec["task"] not in TASKS:
            raise UserError(f"{path}: task: {rec['task']!r} has no table column (known: {', '.join(TASKS)})")
        if rec["model"] != experiment.name:
            raise UserError(f"{path}: model: result of experiment {rec['model']!r}, table is for {experiment.name!r}")
        metric = TASKS[rec["task"]][2]
        if not isinstance(rec["metrics"].get(metric), (int, float)):
            raise UserError(f"{path}: metrics.{metric}: missing or not a number")
        key = (rec["task"], rec["dataset"])
        columns += [key] if key not in columns else []
        rows += [rec["checkpoint"]] if rec["checkpoint"] not in rows else []
        table.ours[(rec["checkpoint"], *key)] = 100.0 * rec["metrics"][metric]
    by_published = {pub: task for task, (pub, _, _) in TASKS.items()}
    for stage, tasks in (experiment.published or {}).items():
        for pub_task, per_dataset in tasks.items():
            for dataset, value in per_dataset.items():
                key = (by_published[pub_task], dataset)
                columns += [key] if key not in columns else []
                rows += [stage] if stage not in rows else []
                table.paper[(stage, *key)] = float(value)
    table.rows = _ordered(rows, ROW_ORDER)
    table.columns = sorted(columns, key=lambda c: list(TASKS).index(c[0]))
    return table


def _cell(table: Table, row: str, col: tuple[str, str]) -> str:
    ours, paper = table.ours.get((row, *col)), table.paper.get((row, *col))
    text = "–" if ours is None else f"{ours:.2f}"
    return text if paper is None else f"{text} ({paper:.1f})"


def to_markdown(table: Table) -> str:
    head = ["checkpoint"] + [f"{TASKS[t][1]} {d}" for t, d in table.columns]
    lines = [f"# {table.title}", ""]
    if table.description:
        lines += [table.description, ""]
    lines += ["Top-1 accuracy (%). Cells with a published number read: ours (paper).", "",
              "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join([row] + [_cell(table, row, c) for c in table.columns]) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Long form: one line per (checkpoint, task, dataset); empty where a number is absent."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["experiment", "checkpoint", "task", "dataset", "metric", "ours_percent", "paper_percent"])
    for row in table.rows:
        for task, dataset in table.columns:
            ours, paper = table.ours.get((row, task, dataset)), table.paper.get((row, task, dataset))
            if ours is None and paper is None:
                continue
            writer.writerow([table.title, row, task, dataset, TASKS[task][2],
                             "" if ours is None else f"{ours:.4f}", "" if paper is None else f"{paper:g}"])
    return buf.getvalue()
