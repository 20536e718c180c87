"""CLIPA token reduction in training: image patch masks and text token selection, in one place.

- image.py:  patch masks (random / grid / block) installed at open_clip's `visual.patch_dropout`;
             CLIPA's "resize" is the stage's smaller image_size itself.
- text.py:   captions -> exactly `text_length` ids (truncate / random / block / syntax).
- syntax.py: the offline part-of-speech priority of the syntax mask.
`check_image` and `check_text` are the one validation of a stage's reduction settings: the config loader
calls them when a file is read, and the code that builds the mask or the tokenizer calls them again with
what it then knows (the patch grid of the model it built, the context length). This module
imports no torch, so checking a config stays cheap.
"""
from __future__ import annotations

from ..errors import UserError

IMAGE_STRATEGIES = ("none", "random", "grid", "block")
TEXT_STRATEGIES = ("truncate", "random", "block", "syntax")

__all__ = ["IMAGE_STRATEGIES", "TEXT_STRATEGIES", "check_image", "check_text"]


def check_image(image_reduction, *, where: str, grid: tuple[int, int] | None = None) -> None:
    """One-line UserError (prefixed `where`, e.g. 'file: pretrain') for image settings that cannot run;
    without `grid` only what the settings say by themselves is checked."""
    strategy, tokens = image_reduction.strategy, image_reduction.tokens
    if strategy not in IMAGE_STRATEGIES:
        raise UserError(f"{where}.image_reduction.strategy: unknown {strategy!r}, expected one of "
                        f"{', '.join(IMAGE_STRATEGIES)}")
    if strategy in ("random", "block") and tokens is None:
        raise UserError(f"{where}.image_reduction.tokens: required by strategy {strategy!r}")
    if strategy in ("none", "grid") and tokens is not None:
        raise UserError(f"{where}.image_reduction.tokens: not used by strategy {strategy!r}")
    if strategy == "grid" and image_reduction.grid_window < 2:
        raise UserError(f"{where}.image_reduction.grid_window: must be >= 2, got {image_reduction.grid_window!r}")
    if grid is not None and strategy in ("random", "block") and not 1 <= tokens <= grid[0] * grid[1]:
        raise UserError(f"{where}.image_reduction.tokens: the {strategy} mask needs 1 <= tokens <= "
                        f"{grid[0] * grid[1]} (patches at this stage's image size), got {tokens!r}")


def check_text(text_reduction: str, *, where: str, context_length: int | None = None) -> None:
    """One-line UserError for a text reduction that cannot run (unknown strategy, fewer than 3 positions)."""
    if text_reduction not in TEXT_STRATEGIES:
        raise UserError(f"{where}.text_reduction: unknown {text_reduction!r}, expected one of "
                        f"{', '.join(TEXT_STRATEGIES)}")
    if context_length is not None and (not isinstance(context_length, int) or context_length < 3):
        raise UserError(f"{where}.text_length: must be an integer >= 3 (SOT, one token, EOT), "
                        f"got {context_length!r}")
