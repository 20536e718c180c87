"""Image token reduction (CLIPA): keep an exact number of patch tokens per image while training.

The reducer is installed at `model.visual.patch_dropout`. open_clip's VisionTransformer calls that module in
`_embeds` on [B, 1+N, D] tokens (class token first, then the N patches in raster order) right after the position
embedding is added and before ln_pre, so kept patches carry their positions. It is the identity in eval mode: zero-shot
evaluation always sees the whole image. It has no parameters, so checkpoints are unchanged by it.

Strategies (N = gh x gw patch grid, T kept patch tokens, the class token is always kept on top):
- none:   nothing installed. CLIPA's "resize" is a smaller stage image_size (fewer patches), not a mask.
Settings are validated once, by pipeline.reduction.check.
- random: a uniformly random subset of T patches per sample.
- grid:   one patch per k x k window (k = grid_window). Per sample one random offset (dy, dx) in [0, k)^2 is drawn and
          used in every window, so the survivors form a regular lattice (strided sub-sampling). Windows tile the grid
          from the top-left; when gh or gw is not divisible by k the last row/column of windows is partial (size
          s < k) and its patch sits at min(offset, s - 1), so every window, partial or not, keeps exactly one patch:
          T = ceil(gh / k) * ceil(gw / k).
- block:  one contiguous block of T patches at a uniformly random position per sample; its shape is `block_shape`.
Random draws use torch's global RNG (the generator of the tokens' device), so restoring RNG state on resume
reproduces the masks.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UserError
from . import IMAGE_STRATEGIES  # noqa: F401  (re-exported)


def grid_shape(image_size: int, patch_size: int) -> tuple[int, int]:
    """Patch rows and columns for a square image (open_clip floors partial patches away)."""
    return image_size // patch_size, image_size // patch_size


def grid_tokens(grid: tuple[int, int], window: int) -> int:
    """Patches kept by the grid mask: one per (possibly partial) window."""
    return math.ceil(grid[0] / window) * math.ceil(grid[1] / window)


def block_shape(tokens: int, grid: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the box holding a block of `tokens` patches.

    If tokens = rows x cols has a factorisation that fits the grid with an aspect ratio of at most 2, the most
    square one is used (ties: wider) and the block is an exact rectangle (36 -> 6x6, 8 -> 2x4, 12 -> 3x4).
    Otherwise cols = clip(ceil(sqrt(tokens)), ceil(tokens / gh), gw), rows = ceil(tokens / cols), and the block is
    the first `tokens` patches of that box in raster order: full rows plus a left-aligned partial last row
    (37 on 14x14 -> 6 rows x 7 cols box, 5 full rows + 2).
    """
    gh, gw = grid
    exact = [(h, tokens // h) for h in range(1, gh + 1) if tokens % h == 0 and tokens // h <= gw]
    exact = [(h, w) for h, w in exact if max(h, w) <= 2 * min(h, w)]
    if exact:
        return min(exact, key=lambda hw: (abs(hw[0] - hw[1]), hw[0]))
    cols = min(gw, max(math.ceil(tokens / gh), math.ceil(math.sqrt(tokens))))
    return math.ceil(tokens / cols), cols


def kept_image_tokens(image_size: int, patch_size: int, strategy: str, tokens: int | None, grid_window: int) -> int:
    """Patch tokens (class token aside) one training image contributes; CLIPA's I-number is this + 1."""
    grid = grid_shape(image_size, patch_size)
    if strategy == "grid":
        return grid_tokens(grid, grid_window)
    return grid[0] * grid[1] if strategy == "none" else tokens


def _check_tokens(tokens: int | None, full: int, strategy: str) -> None:
    if tokens is None or not 1 <= tokens <= full:
        raise UserError(f"image_reduction.tokens: the {strategy} mask needs 1 <= tokens <= {full} "
                        f"(patches at this stage's image size), got {tokens!r}")


def random_indices(batch: int, grid: tuple[int, int], tokens: int, device=None) -> torch.LongTensor:
    """[B, T] raster indices of a random patch subset per sample, ascending."""
    noise = torch.rand(batch, grid[0] * grid[1], device=device)
    return noise.argsort(dim=1)[:, :tokens].sort(dim=1).values


def grid_indices(batch: int, grid: tuple[int, int], window: int, device=None) -> torch.LongTensor:
    """[B, T] raster indices of one patch per window, same random in-window offset for all windows of a sample."""
    gh, gw = grid
    dy = torch.randint(0, window, (batch, 1), device=device)
    dx = torch.randint(0, window, (batch, 1), device=device)
    rows = (torch.arange(0, gh, window, device=device) + dy).clamp(max=gh - 1)  # [B, nh]
    cols = (torch.arange(0, gw, window, device=device) + dx).clamp(max=gw - 1)  # [B, nw]
    return (rows[:, :, None] * gw + cols[:, None, :]).flatten(1)


def block_indices(batch: int, grid: tuple[int, int], tokens: int, device=None) -> torch.LongTensor:
    """[B, T] raster indices of a block of `block_shape(tokens, grid)` at a random position per sample."""
    gh, gw = grid
    h, w = block_shape(tokens, grid)
    top = torch.randint(0, gh - h + 1, (batch, 1), device=device)
    left = torch.randint(0, gw - w + 1, (batch, 1), device=device)
    within = torch.arange(tokens, device=device)
    return (top + within // w) * gw + left + within % w


class PatchReduction(nn.Module):
    """Drop-in for open_clip's patch_dropout: keeps the class token and an exact set of patches in training."""

    def __init__(self, strategy: str, tokens: int | None, grid: tuple[int, int], grid_window: int):
        super().__init__()
        self.strategy, self.tokens, self.grid, self.grid_window = strategy, tokens, tuple(grid), grid_window

    def _grid_for(self, n: int) -> tuple[int, int]:
        """The stored grid, or a square one if the stage feeds a different (square) image size."""
        if self.grid[0] * self.grid[1] == n:
            return self.grid
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"PatchReduction: {n} patch tokens fit neither grid {self.grid} nor a square grid")
        return side, side

    def kept_indices(self, batch: int, grid: tuple[int, int], device=None) -> torch.LongTensor:
        """[B, T] raster indices (into the patch tokens, class token excluded) that survive."""
        if self.strategy == "grid":
            return grid_indices(batch, grid, self.grid_window, device)
        _check_tokens(self.tokens, grid[0] * grid[1], self.strategy)
        if self.strategy == "random":
            return random_indices(batch, grid, self.tokens, device)
        return block_indices(batch, grid, self.tokens, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        cls_token, patches = x[:, :1], x[:, 1:]
        idx = self.kept_indices(x.shape[0], self._grid_for(patches.shape[1]), x.device)
        kept = patches.gather(1, idx.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return torch.cat([cls_token, kept], dim=1)

    def extra_repr(self) -> str:
        return f"strategy={self.strategy}, tokens={self.tokens}, grid={self.grid}, grid_window={self.grid_window}"


def apply_image_reduction(model: nn.Module, strategy: str, tokens: int | None, grid_window: int) -> nn.Module:
    """Install the patch mask of `strategy` at model.visual.patch_dropout (none: model untouched); returns model.
    The settings were checked by pipeline.reduction.check against this tower's grid."""
    if strategy == "none":
        return model
    visual = getattr(model, "visual", None)
    if visual is None or not hasattr(visual, "patch_dropout") or not hasattr(visual, "grid_size"):
        raise UserError(f"image_reduction.strategy: {strategy!r} needs an open_clip VisionTransformer image tower "
                        f"(got {type(visual).__name__})")
    # a new module starts in train mode; follow the tower's mode so an eval model stays unmasked
    visual.patch_dropout = PatchReduction(strategy, tokens, tuple(visual.grid_size), grid_window).train(visual.training)
    return model
