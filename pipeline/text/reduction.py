"""Text token reduction to an exact context length: which word-piece tokens of a caption to keep.

Every strategy maps a caption's BPE ids (without SOT/EOT) to at most `keep` ids, order preserved;
the transform then writes [SOT] kept... [EOT] and zero padding. Randomness comes from torch's global
RNG so the trainer's RNG checkpoint makes a resumed run draw the same masks.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import UserError


def truncate_ids(ids: list[int], keep: int) -> list[int]:
    """The first `keep` tokens (open_clip's default)."""
    return ids[:keep]


def random_ids(ids: list[int], keep: int) -> list[int]:
    """A uniformly random subset of `keep` tokens, original order kept."""
    if len(ids) <= keep:
        return list(ids)
    chosen = torch.randperm(len(ids))[:keep].sort().values.tolist()
    return [ids[i] for i in chosen]


def block_ids(ids: list[int], keep: int) -> list[int]:
    """A contiguous span of `keep` tokens starting at a uniformly random offset."""
    if len(ids) <= keep:
        return list(ids)
    start = int(torch.randint(0, len(ids) - keep + 1, ()).item())
    return ids[start:start + keep]


def priority_ids(ids: list[int], priorities: list[int], keep: int) -> list[int]:
    """The `keep` tokens with the lowest priority value; ties go to the earlier position; order kept."""
    if len(ids) <= keep:
        return list(ids)
    ranked = sorted(range(len(ids)), key=lambda i: (priorities[i], i))[:keep]
    return [ids[i] for i in sorted(ranked)]


def pack(token_lists: list[list[int]], context_length: int, sot: int, eot: int) -> torch.LongTensor:
    """[SOT] tokens [EOT] then zeros, exactly context_length wide (lists already fit)."""
    out = torch.zeros(len(token_lists), context_length, dtype=torch.long)
    for row, ids in enumerate(token_lists):
        seq = [sot] + ids + [eot]
        out[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def check_length(context_length: int) -> None:
    if not isinstance(context_length, int) or context_length < 3:
        raise UserError(f"text context_length: must be an integer >= 3 (SOT, one token, EOT), got {context_length!r}")


SelectFn = Callable[[list[int], int], list[int]]
RANDOM_STRATEGIES: dict[str, SelectFn] = {"truncate": truncate_ids, "random": random_ids, "block": block_ids}
