"""Resumable checkpoints: tensors, numbers, strings, lists and dicts only, so that
torch.load(weights_only=True) reads them (no pickled code ever runs on load)."""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from ..models import load_checkpoint
from ..utils.io import torch_save

_NAME = re.compile(r"^step_(\d{8})\.pt$")
_PARTIAL = re.compile(r"^\.step_(\d{8})\.pt\..*\.tmp$")  # an atomic write cut by a kill


def rng_state() -> dict:
    """This process's python/numpy/torch(/cuda) RNG states as weights_only-safe values."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(w) for w in py["words"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step_{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Resumable checkpoints in step order (atomic writes: every listed file is complete)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def save(folder: Path, step: int, payload: dict, *, keep: int) -> Path:
    """Write step_XXXXXXXX.pt atomically, then delete all but the newest `keep` and the temp files of writes a
    kill cut short (never listed, never read: only their disk space is reclaimed). Rank 0 alone writes here."""
    path = checkpoint_path(folder, step)
    torch_save(payload, path)
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    for partial in (p for p in Path(folder).iterdir() if _PARTIAL.match(p.name)):
        partial.unlink(missing_ok=True)
    return path


def load_latest(folder: Path) -> dict | None:
    found = list_checkpoints(folder)
    return load_checkpoint(found[-1]) if found else None
