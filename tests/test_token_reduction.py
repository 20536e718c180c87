"""Image token reduction: exactly which patches survive, per strategy; eval untouched; token arithmetic."""
import pytest
import torch

from pipeline.errors import UserError
from pipeline.models import create_model
from pipeline.reduction.image import (PatchReduction, apply_image_reduction, block_indices, block_shape,
                                             grid_indices, grid_tokens, kept_image_tokens, random_indices)
from types import SimpleNamespace

from pipeline.reduction import check_image

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 4},
        "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def _coded(batch: int, n: int) -> torch.Tensor:
    """[B, 1+N, 2] tokens whose feature 0 is the position (-1 for the class token), feature 1 the sample."""
    pos = torch.cat([torch.tensor([-1.0]), torch.arange(n, dtype=torch.float)])
    x = torch.stack([pos.expand(batch, -1), torch.arange(batch, dtype=torch.float)[:, None].expand(-1, n + 1)], -1)
    return x.clone()


def _survivors(module: PatchReduction, batch: int, n: int) -> list[list[int]]:
    out = module.train()(_coded(batch, n))
    assert (out[:, 0, 0] == -1).all()  # class token first, always kept
    assert (out[:, :, 1] == torch.arange(batch, dtype=torch.float)[:, None]).all()  # no mixing across samples
    return out[:, 1:, 0].long().tolist()


def test_image_tokens_match_clipa_numbers():
    # CLIPA counts the class token: I50 = 7x7 + 1, I17 = 4x4 + 1, I37 = 6x6 + 1 (resize = smaller image_size)
    assert kept_image_tokens(112, 16, "none", None, 2) + 1 == 50
    assert kept_image_tokens(64, 16, "none", None, 2) + 1 == 17
    assert kept_image_tokens(96, 16, "none", None, 2) + 1 == 37
    assert kept_image_tokens(224, 16, "none", None, 2) == 196
    assert kept_image_tokens(224, 16, "grid", None, 2) == 49
    assert kept_image_tokens(224, 16, "grid", None, 3) == 25  # 14 = 3*4 + 2: partial windows keep one patch too
    assert kept_image_tokens(224, 16, "random", 49, 2) == 49
    assert kept_image_tokens(224, 16, "block", 36, 2) == 36
    with pytest.raises(UserError, match="image_reduction.tokens"):
        check_image(_red("block", 197), where="pretrain", grid=(14, 14))
    with pytest.raises(UserError, match="image_reduction.tokens"):
        check_image(_red("random", None), where="pretrain")


def _red(strategy, tokens, grid_window=2):
    return SimpleNamespace(strategy=strategy, tokens=tokens, grid_window=grid_window)


def test_random_mask_keeps_exact_count_distinct_sorted_and_seeded():
    module = PatchReduction("random", 10, (8, 8), 2)
    torch.manual_seed(0)
    kept = _survivors(module, 4, 64)
    torch.manual_seed(0)
    assert _survivors(module, 4, 64) == kept  # torch global RNG: resume reproduces masks
    for row in kept:
        assert len(row) == 10 and row == sorted(set(row)) and all(0 <= p < 64 for p in row)
    assert len({tuple(r) for r in kept}) == 4  # per-sample masks


def test_grid_mask_one_patch_per_window_same_offset_per_sample():
    torch.manual_seed(1)
    idx = grid_indices(16, (6, 6), 2)
    assert idx.shape == (16, 9)
    offsets = set()
    for row in idx.tolist():
        cells = [(p // 6, p % 6) for p in row]
        assert sorted({(r // 2, c // 2) for r, c in cells}) == [(i, j) for i in range(3) for j in range(3)]
        within = {(r % 2, c % 2) for r, c in cells}
        assert len(within) == 1  # one random offset shared by every window of the sample
        offsets |= within
    assert offsets == {(0, 0), (0, 1), (1, 0), (1, 1)}  # all offsets occur over 16 samples


def test_grid_mask_partial_windows_clamp_to_last_row_and_column():
    # 5x5 grid, window 2: windows start at 0, 2, 4; the last window row/col is 1 patch wide
    torch.manual_seed(0)
    for row in grid_indices(32, (5, 5), 2).tolist():
        rows = sorted({p // 5 for p in row})
        cols = sorted({p % 5 for p in row})
        assert len(row) == 9 == grid_tokens((5, 5), 2)
        assert rows in ([0, 2, 4], [1, 3, 4]) and cols in ([0, 2, 4], [1, 3, 4])


def test_block_shape_rule():
    assert block_shape(36, (14, 14)) == (6, 6)
    assert block_shape(16, (14, 14)) == (4, 4)
    assert block_shape(8, (14, 14)) == (2, 4)
    assert block_shape(12, (14, 14)) == (3, 4)
    assert block_shape(37, (14, 14)) == (6, 7)  # prime: 5 full rows of 7 + 2
    assert block_shape(196, (14, 14)) == (14, 14)
    assert block_shape(30, (3, 14)) == (3, 10)  # flat grid: exact rectangle within aspect 2 impossible -> fits rows


@pytest.mark.parametrize("tokens,grid", [(36, (14, 14)), (37, (14, 14)), (8, (4, 4)), (16, (4, 4)), (5, (3, 7))])
def test_block_mask_is_contiguous_box_inside_grid(tokens, grid):
    gh, gw = grid
    h, w = block_shape(tokens, grid)
    torch.manual_seed(2)
    corners = set()
    for row in block_indices(200, grid, tokens).tolist():
        assert len(row) == tokens == len(set(row))
        rows, cols = [p // gw for p in row], [p % gw for p in row]
        top, left = min(rows), min(cols)
        corners.add((top, left))
        expected = [(top + i // w) * gw + left + i % w for i in range(tokens)]
        assert row == expected and max(rows) < gh and max(cols) < gw
    positions = (gh - h + 1) * (gw - w + 1)
    assert len(corners) == positions if positions <= 10 else len(corners) > 50  # position is uniformly random


def test_installed_on_open_clip_model_train_only():
    model = create_model(TINY)  # 32 px / patch 4 = 8x8 patches
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    before = model.encode_image(images)
    apply_image_reduction(model, "grid", None, 2)
    assert isinstance(model.visual.patch_dropout, PatchReduction)
    assert torch.allclose(model.encode_image(images), before)  # eval sees the whole image
    seen = []
    hook = model.visual.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    model.train()
    model.encode_image(images)
    hook.remove()
    assert seen[-1][:2] == (2, 1 + 16)  # class token + one patch per 2x2 window of the 8x8 grid
    assert set(model.state_dict()) == set(create_model(TINY).state_dict())  # checkpoints unchanged


def test_apply_none_and_bad_settings():
    model = create_model(TINY)
    original = model.visual.patch_dropout
    assert apply_image_reduction(model, "none", None, 2) is model and model.visual.patch_dropout is original
    grid = tuple(model.visual.grid_size)
    with pytest.raises(UserError, match="pretrain.image_reduction.tokens"):
        check_image(_red("block", 65), where="pretrain", grid=grid)
    with pytest.raises(UserError, match="image_reduction.tokens"):
        check_image(_red("grid", 10), where="pretrain", grid=grid)
    with pytest.raises(UserError, match="image_reduction.strategy"):
        check_image(_red("resize", 10), where="pretrain", grid=grid)
    apply_image_reduction(model, "random", 20, 2)
    model.train()
    assert model.visual.patch_dropout(torch.zeros(3, 65, 32)).shape == (3, 21, 32)


def test_grid_follows_square_stage_size():
    """A reducer built for 8x8 still works if a stage feeds 4x4 patches (square grid inferred)."""
    module = PatchReduction("grid", None, (8, 8), 2).train()
    assert module(torch.zeros(1, 17, 4)).shape == (1, 5, 4)
    with pytest.raises(ValueError):
        module(torch.zeros(1, 1 + 12, 4))


def test_random_mask_is_uniform_over_positions():
    torch.manual_seed(0)
    counts = torch.bincount(random_indices(2000, (4, 4), 4).flatten(), minlength=16)
    assert counts.sum() == 8000 and counts.min() > 420 and counts.max() < 580  # expected 500 each
