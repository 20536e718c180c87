"""Reporting: result JSONs + the experiment's published numbers -> markdown / CSV / LaTeX tables."""
from .render import to_csv, to_latex, to_markdown
from .results import read_result, read_results
from .table import Table, build_table, merge_tables

__all__ = ["Table", "build_table", "merge_tables", "read_result", "read_results", "to_csv", "to_latex",
           "to_markdown"]
