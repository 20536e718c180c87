"""Resumable checkpoints of the supervised fine-tuning loop: one per finished epoch, atomic, weights_only-safe.

A checkpoint holds everything the next epoch depends on: weights, EMA, optimizer state (ZeRO 0: the whole torch
optimizer, written by rank 0; ZeRO 1/2: each rank's own partition), torch's GradScaler of an fp16 run,
DeepSpeed's step counters, the history and the best-on-validation weights so far. The RNGs need no state: every
epoch reseeds them from (seed, epoch, rank) (loop._seed_epoch), so resuming at an epoch boundary replays the
uninterrupted run exactly. A checkpoint written for other settings or another process count is ignored, not
resumed. Files: <dir>/state.pt (+ <dir>/optimizer-rank<r>.pt for ZeRO 1/2); a new one replaces the old by rename,
so a kill during a write leaves the previous one whole.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ...utils.io import torch_load, torch_save


def _safe_globals():
    """The DeepSpeed data classes a ZeRO 1/2 optimizer state holds besides tensors and numbers: allowed by name
    for torch.load(weights_only=True), nothing else."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


def fingerprint(settings: dict, world: int, train_size: int) -> str:
    return json.dumps({"settings": settings, "world": world, "train_size": train_size}, sort_keys=True)


def _load(path: Path):
    return torch_load(path, "fine-tuning checkpoint", safe_globals=_safe_globals())


def save_partition(folder: Path, optimizer_state: dict, *, rank: int, epoch: int) -> None:
    """ZeRO 1/2: this rank's optimizer partition after `epoch` (written before state.pt names that epoch)."""
    torch_save(optimizer_state, folder / f"optimizer-rank{rank}-epoch{epoch}.pt")


def save_state(folder: Path, state: dict) -> None:
    """Rank 0: the epoch's state (weights, EMA, counters, history; the optimizer too under ZeRO 0)."""
    torch_save(state, folder / "state.pt")


def prune(folder: Path, *, rank: int, epoch: int) -> None:
    """Drop this rank's optimizer partitions of earlier epochs (after every rank wrote the new state.pt)."""
    for old in folder.glob(f"optimizer-rank{rank}-epoch*.pt"):
        if old.name != f"optimizer-rank{rank}-epoch{epoch}.pt":
            old.unlink(missing_ok=True)


def load(folder: Path, *, expected: str, rank: int, zero_stage: int) -> tuple[dict, dict] | None:
    """(state, optimizer state) of the last finished epoch, or None when there is nothing to resume."""
    path = folder / "state.pt"
    if not path.is_file():
        return None
    try:
        state = _load(path)
    except Exception as exc:  # unreadable: start over rather than trust it
        print(f"finetune: ignoring unreadable checkpoint {path} ({type(exc).__name__})", file=sys.stderr)
        return None
    if state.get("fingerprint") != expected:
        print(f"finetune: {path} was written for other settings; starting over", file=sys.stderr)
        return None
    if zero_stage == 0:
        return state, state["optimizer"]
    part = folder / f"optimizer-rank{rank}-epoch{state['epoch']}.pt"
    if not part.is_file():
        print(f"finetune: {part} missing; starting over", file=sys.stderr)
        return None
    return state, _load(part)


def clear(folder: Path) -> None:
    """Remove the checkpoints once the outputs are written (rank 0, after the last barrier)."""
    shutil.rmtree(folder, ignore_errors=True)
