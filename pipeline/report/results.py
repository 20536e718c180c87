"""Reading evaluation result JSONs (CLIP_benchmark keys) back, with one-line errors naming file and key."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..utils.io import read_json

REQUIRED = ("dataset", "model", "task", "metrics", "checkpoint")


def read_result(path: str | Path) -> dict:
    path = Path(path)
    record = read_json(path, "result file")
    if not isinstance(record, dict):
        raise UserError(f"{path}: expected a JSON object")
    for key in REQUIRED:
        if key not in record:
            raise UserError(f"{path}: {key}: missing")
    if not isinstance(record["metrics"], dict):
        raise UserError(f"{path}: metrics: expected an object of metric -> value")
    return record


def read_results(paths) -> list[tuple[Path, dict]]:
    """Records in the order given; the same (checkpoint, task, dataset) twice is an error."""
    seen: dict[tuple, Path] = {}
    out = []
    for path in map(Path, paths):
        record = read_result(path)
        key = (record["checkpoint"], record["task"], record["dataset"])
        if key in seen:
            raise UserError(f"{path}: duplicates {seen[key]} (checkpoint, task, dataset = {key})")
        seen[key] = path
        out.append((path, record))
    return out
