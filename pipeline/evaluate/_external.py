"""The checkpoint an evaluation reads: one of the experiment's own (results/E/<stage>/final.pt)."""
from __future__ import annotations


def load_evaluated(ctx):
    """LoadedCheckpoint of ctx.checkpoint (model in eval mode, its config, experiment and row name)."""
    from ..models import load_model

    return load_model(ctx.checkpoint)
