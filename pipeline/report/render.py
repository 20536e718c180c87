"""A Table as markdown, long-form CSV and LaTeX (booktabs)."""
from __future__ import annotations

import csv
import io

from .table import Table, cell, column_label

NOTE = "Percent (top-1 accuracy; recall@1 for retrieval). Cells with a published number read: ours (paper)."
BEST_NOTE = ("† best epoch: ours is the epoch a validation part held out from train scored highest, scored once on "
             "test; a paper number there is the paper's own maximum over epochs on its test split (FT-CLIP's and "
             "BEiT's \"Max accuracy\").")


def notes(table: Table) -> list[str]:
    """The legend lines a table needs."""
    return [NOTE] + ([BEST_NOTE] if any("†" in column_label(c) for c in table.columns) else [])


def to_markdown(table: Table) -> str:
    head = ["checkpoint"] + [column_label(c) for c in table.columns]
    lines = [f"# {table.title}", ""]
    if table.description:
        lines += [table.description, ""]
    lines += [line for note in notes(table) for line in (note, "")]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join([row] + [cell(table, row, c) for c in table.columns]) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Long form: one line per (row, task, metric, dataset) with a number; empty where one side is absent."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["experiment", "checkpoint", "task", "dataset", "metric", "ours_percent", "paper_percent"])
    for row in table.rows:
        for task, metric, dataset in table.columns:
            key = (row, task, metric, dataset)
            ours, paper = table.ours.get(key), table.paper.get(key)
            if ours is None and paper is None:
                continue
            writer.writerow([table.title, row, task, dataset, metric,
                             "" if ours is None else f"{ours:.4f}", "" if paper is None else f"{paper:g}"])
    return buf.getvalue()


def tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("–", "--"), ("→", r"$\to$"), ("†", r"$^\dagger$")):
        text = text.replace(a, b)
    return text


def to_latex(table: Table) -> str:
    """A booktabs tabular; ours (paper) kept as in the markdown table."""
    cols = "l" + "r" * len(table.columns)
    head = " & ".join(["checkpoint"] + [tex_escape(column_label(c)) for c in table.columns])
    lines = [f"% {table.title}: {' '.join(notes(table))}", r"\begin{tabular}{" + cols + "}", r"\toprule",
             head + r" \\", r"\midrule"]
    for row in table.rows:
        cells = [tex_escape(row)] + [tex_escape(cell(table, row, c)) for c in table.columns]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


__all__ = ["to_csv", "to_latex", "to_markdown"]
