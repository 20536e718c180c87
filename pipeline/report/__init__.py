"""Reporting: result JSONs + the experiment's published numbers -> markdown / CSV tables."""
from .results import read_result, read_results
from .table import TASKS, Table, build_table, to_csv, to_markdown

__all__ = ["TASKS", "Table", "build_table", "read_result", "read_results", "to_csv", "to_markdown"]
