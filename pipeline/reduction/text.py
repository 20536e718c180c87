"""Caption -> token ids at an exact context length, with CLIPA's text token reduction strategies.

`build_text_transform(strategy, context_length)` returns a callable list[str] -> LongTensor[B, L]:
[SOT] kept tokens... [EOT], zero padded, L == context_length. Strategies: truncate (first tokens),
random (random subset, order kept), block (random contiguous span), syntax (nouns, then adjectives,
then verbs, then the rest; offline part-of-speech tagger, see pipeline.reduction.syntax).

Every strategy maps a caption's BPE ids (without SOT/EOT) to at most `keep` ids, order preserved.
Randomness comes from torch's global RNG so the trainer's RNG checkpoint makes a resumed run draw
the same masks.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

from . import TEXT_STRATEGIES as STRATEGIES
from . import check_text


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


SelectFn = Callable[[list[int], int], list[int]]
RANDOM_STRATEGIES: dict[str, SelectFn] = {"truncate": truncate_ids, "random": random_ids, "block": block_ids}


@functools.lru_cache(maxsize=1)
def _bpe():
    """open_clip's BPE tokenizer, built once per process (encode, its BPE tables for the syntax mask, SOT/EOT)."""
    from ..models.factory import tokenizer
    return tokenizer(77)


class TextTransform:
    """Picklable (for DataLoader workers) caption tokenizer with one reduction strategy."""

    def __init__(self, strategy: str, context_length: int):
        check_text(strategy, where="text", context_length=context_length)
        self.strategy = strategy
        self.context_length = context_length
        if strategy == "syntax":  # load now: a missing tagger fails early, and forked loader workers inherit it
            from .syntax import load_tagger
            load_tagger()

    def __call__(self, texts: list[str]) -> torch.LongTensor:
        if isinstance(texts, str):
            texts = [texts]
        tok = _bpe()
        keep = self.context_length - 2
        if self.strategy == "syntax":
            from .syntax import syntax_ids
            kept = [syntax_ids(text, tok, keep) for text in texts]
        else:
            select = RANDOM_STRATEGIES[self.strategy]
            kept = [select(tok.encode(text), keep) for text in texts]
        return pack(kept, self.context_length, tok.sot_token_id, tok.eot_token_id)

    def __repr__(self) -> str:
        return f"TextTransform(strategy={self.strategy!r}, context_length={self.context_length})"


def build_text_transform(strategy: str, context_length: int) -> Callable[[list[str]], torch.LongTensor]:
    """A caption batch tokenizer reducing every caption to exactly `context_length` ids."""
    return TextTransform(strategy, context_length)


__all__ = ["STRATEGIES", "TextTransform", "build_text_transform"]
