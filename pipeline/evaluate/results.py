"""Evaluation result records: one JSON per (checkpoint, task, dataset), keyed like CLIP_benchmark's output."""
from __future__ import annotations

from pathlib import Path

from ..utils.io import write_json


def result_record(*, dataset: str, model: str, pretrained: str, task: str, metrics: dict,
                  checkpoint: str) -> dict:
    return {"dataset": dataset, "model": model, "pretrained": str(pretrained), "task": task,
            "metrics": {k: v if isinstance(v, int) else float(v) for k, v in metrics.items()},
            "language": "en", "checkpoint": checkpoint}


def write_result(path: str | Path, record: dict) -> None:
    write_json(path, record)
