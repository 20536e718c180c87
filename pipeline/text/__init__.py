"""Caption -> token ids at an exact context length, with CLIPA's text token reduction strategies.

`build_text_transform(strategy, context_length)` returns a callable list[str] -> LongTensor[B, L]:
[SOT] kept tokens... [EOT], zero padded, L == context_length. Strategies: truncate (first tokens),
random (random subset, order kept), block (random contiguous span), syntax (nouns, then adjectives,
then verbs, then the rest; offline part-of-speech tagger, see pipeline.text.syntax).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

from ..errors import UserError
from .reduction import RANDOM_STRATEGIES, check_length, pack

STRATEGIES = ("truncate", "random", "block", "syntax")


@functools.lru_cache(maxsize=1)
def _bpe():
    """open_clip's BPE tokenizer, built once per process (encode, its BPE tables for the syntax mask, SOT/EOT)."""
    from ..models.factory import tokenizer
    return tokenizer(77)


class TextTransform:
    """Picklable (for DataLoader workers) caption tokenizer with one reduction strategy."""

    def __init__(self, strategy: str, context_length: int):
        if strategy not in STRATEGIES:
            raise UserError(f"text strategy: unknown {strategy!r}, expected one of {', '.join(STRATEGIES)}")
        check_length(context_length)
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
