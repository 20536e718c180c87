"""Evaluation result records: one JSON per (checkpoint, evaluation, dataset), keyed like CLIP_benchmark's output."""
from __future__ import annotations

from ..utils.io import write_json


def result_record(*, dataset: str, model: str, pretrained: str, task: str, metrics: dict,
                  checkpoint: str) -> dict:
    return {"dataset": dataset, "model": model, "pretrained": str(pretrained), "task": task,
            # None = undefined for this dataset (e.g. acc5 with fewer than 5 classes): written as null
            "metrics": {k: v if v is None or isinstance(v, int) else float(v) for k, v in metrics.items()},
            "language": "en", "checkpoint": checkpoint}


def write_result(ctx, *, task: str, metrics: dict, model: str, pretrained: str, checkpoint: str,
                 **extra) -> dict:
    """Write ctx.outputs['result'] atomically; `extra` keys (e.g. a per-epoch history) go beside the metrics."""
    record = result_record(dataset=ctx.dataset, model=model, pretrained=pretrained, task=task, metrics=metrics,
                           checkpoint=checkpoint)
    record.update(extra)
    write_json(ctx.outputs["result"], record)
    return record
