"""Tests that kill the mutants mutmut left alive in pipeline/reduction (docs/robustness.md, "Mutation testing"):
non-square patch grids, the block shape rule at its edges, mask kinds not swapped, token bounds inclusive, RNG
untouched when nothing is dropped, the tagger's tie-break and weights, priorities of words after the first."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.reduction import image, text


def test_grid_is_whole_patches_per_side():
    assert image.grid_shape(224, 16) == (14, 14) and image.grid_shape(30, 16) == (1, 1)
    assert all(type(side) is int for side in image.grid_shape(100, 16))


def test_grid_tokens_and_kept_tokens_on_a_non_square_grid():
    assert image.grid_tokens((3, 5), 2) == 2 * 3
    assert image.kept_image_tokens(28, 4, "none", None, 2) == 49


@pytest.mark.parametrize("tokens,grid,shape", [
    (2, (4, 4), (1, 2)),     # ties go to the wider box, a one-row block allowed
    (2, (2, 2), (1, 2)),     # a block as wide as the grid
    (3, (4, 4), (2, 2)),     # 1x3 is too elongated (aspect > 2): the first 3 of a 2x2 box
    (9, (2, 8), (2, 5)),     # no exact factorisation fits 2 rows: never taller than the grid
    (72, (8, 12), (8, 9)),   # the most square exact box, not the first
])
def test_block_shape_edges(tokens, grid, shape):
    assert image.block_shape(tokens, grid) == shape


def test_random_indices_stay_inside_a_non_square_grid():
    torch.manual_seed(0)
    idx = image.random_indices(256, (3, 5), 4)
    assert idx.max().item() == 14 and idx.min().item() == 0


def _is_box(row: torch.Tensor, grid: tuple[int, int], shape: tuple[int, int]) -> bool:
    r, c = row // grid[1], row % grid[1]
    return (r.max() - r.min() + 1, c.max() - c.min() + 1) == shape and len(set(row.tolist())) == shape[0] * shape[1]


def test_block_and_random_masks_are_not_swapped():
    torch.manual_seed(0)
    block = image.PatchReduction("block", 4, (4, 4), 2).kept_indices(32, (4, 4))
    assert all(_is_box(row, (4, 4), (2, 2)) for row in block)
    scattered = image.PatchReduction("random", 4, (4, 4), 2).kept_indices(32, (4, 4))
    assert not all(_is_box(row, (4, 4), (2, 2)) for row in scattered)


def test_a_stored_non_square_grid_is_used():
    torch.manual_seed(0)
    mask = image.PatchReduction("block", 8, (2, 8), 2).train()
    tokens = torch.arange(17, dtype=torch.float32).repeat(16, 1)[..., None]  # class token + 2 x 8 patches
    kept = mask(tokens)[:, 1:, 0].long() - 1
    assert all(_is_box(row, (2, 8), (2, 4)) for row in kept)
    assert {int(row.min()) for row in kept} > {0}  # the box moves along the 8 columns


@pytest.mark.parametrize("tokens,ok", [(0, False), (1, True), (16, True), (17, False)])
def test_token_bounds_are_inclusive(tokens, ok):
    mask = image.PatchReduction("random", tokens, (4, 4), 2)
    if ok:
        assert mask.kept_indices(2, (4, 4)).shape == (2, tokens)
    else:
        with pytest.raises(UserError, match=rf"the random mask needs 1 <= tokens <= 16 .* got {tokens}"):
            mask.kept_indices(2, (4, 4))


class _Visual(nn.Module):
    def __init__(self, **attrs):
        super().__init__()
        for key, value in attrs.items():
            setattr(self, key, value)


@pytest.mark.parametrize("visual", [None, _Visual(patch_dropout=nn.Identity()), _Visual(grid_size=(4, 4))])
def test_reduction_needs_a_tower_with_patches(visual):
    model = nn.Module() if visual is None else _Wrapper(visual)
    name = "NoneType" if visual is None else "_Visual"
    with pytest.raises(UserError, match=rf"'random' needs an open_clip VisionTransformer image tower \(got {name}\)"):
        image.apply_image_reduction(model, "random", 4, 2)


class _Wrapper(nn.Module):
    def __init__(self, visual):
        super().__init__()
        self.visual = visual


@pytest.mark.parametrize("select", [text.random_ids, text.block_ids])
def test_nothing_dropped_draws_nothing(select):
    """A caption that already fits takes no random draw: the masks after it stay those of the recorded RNG."""
    torch.manual_seed(0)
    assert select([5, 6, 7], 3) == [5, 6, 7]
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))


def test_text_transform_takes_one_string_and_names_its_setting():
    assert text.TextTransform("truncate", 6)("a photo of a cat").shape == (1, 6)
    with pytest.raises(UserError, match=r"^text.text_length: must be an integer >= 3"):
        text.TextTransform("truncate", 2)


class _FakePerceptron:
    """The attributes FastTagger reads from NLTK's PerceptronTagger."""

    def __init__(self, weights: dict, classes: set):
        self.classes = classes
        self.model = type("Model", (), {"weights": weights})()


def test_fast_tagger_weights_and_tie_break():
    from pipeline.reduction.syntax import FastTagger

    tagger = FastTagger(_FakePerceptron({"bias": {"NN": 0.5, "VB": 0.2}, "w=run": {"VB": 1.0}}, {"NN", "VB", "JJ"}))
    assert tagger._predict({"bias": 1, "w=run": 1}) == "VB"
    assert tagger._predict({"bias": 1}) == "NN"
    tied = FastTagger(_FakePerceptron({"f": {"AA": 1.0, "BB": 1.0}}, {"AA", "BB"}))
    assert tied._predict({"f": 1}) == "BB"  # NLTK: max of (score, label): the alphabetically last


def test_syntax_priorities_of_later_words():
    """Priorities are per character offset: a word's priority must land on that word even far into the caption."""
    from pipeline.reduction.syntax import syntax_ids
    from pipeline.reduction.text import _bpe

    tok = _bpe()
    caption = "we saw that the very big red dog quickly runs away"
    kept = syntax_ids(caption, tok, 3)
    assert kept == [tok.encode(w)[0] for w in ("big", "red", "dog")]


def test_syntax_with_a_character_whose_lower_case_is_longer():
    """'İ' lower-cases to two characters: unreduced ids equal open_clip's encode, and a reduced caption still gives
    each word its own priority (the noun after it is kept, the adjectives next)."""
    from pipeline.reduction.syntax import syntax_ids
    from pipeline.reduction.text import _bpe

    tok = _bpe()
    caption = "İzmir has a big red dog"
    assert syntax_ids(caption, tok, 100) == tok.encode(caption)
    izmir = tok.encode("İzmir")
    kept = syntax_ids(caption, tok, len(izmir) + 2)
    assert kept == izmir + tok.encode("big") + tok.encode("dog") or kept == izmir + tok.encode("red dog"), kept


def test_fallback_tagger_missing_is_one_line(monkeypatch):
    import importlib.util

    import nltk.tag.perceptron

    from pipeline.reduction import syntax

    def no_nltk_data(*args, **kwargs):
        raise LookupError("averaged_perceptron_tagger_eng")

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(nltk.tag.perceptron, "PerceptronTagger", no_nltk_data)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "textblob_aptagger" else real_find_spec(name, *a))
    syntax.load_tagger.cache_clear()
    try:
        with pytest.raises(UserError, match=r"no POS tagger .*: textblob_aptagger is not installed$"):
            syntax.load_tagger()
    finally:
        syntax.load_tagger.cache_clear()


def test_non_square_grid_bounds_and_the_grid_mismatch_message():
    mask = image.PatchReduction("random", 17, (2, 8), 2)
    with pytest.raises(UserError, match="1 <= tokens <= 16"):
        mask.kept_indices(2, (2, 8))
    with pytest.raises(ValueError, match="15 patch tokens fit neither grid"):
        image.PatchReduction("random", 4, (4, 4), 2).train()(torch.zeros(2, 16, 3))


def test_syntax_punctuation_next_to_a_word_keeps_its_own_priority():
    """A '#' touching 'dog' (no space between) must not borrow the noun's priority."""
    from pipeline.reduction.syntax import syntax_ids
    from pipeline.reduction.text import _bpe

    tok = _bpe()
    kept = syntax_ids("a photo of #dog running fast", tok, 3)
    assert kept == [tok.encode(w)[0] for w in ("photo", "dog", "running")], kept


@pytest.mark.skipif(not torch.cuda.is_available(), reason="device placement is only visible on a GPU")
@pytest.mark.parametrize("strategy,tokens", [("random", 4), ("grid", None), ("block", 4)])
def test_masks_are_drawn_on_the_tokens_device(strategy, tokens):
    """Kills the mutants that drop `device=` (on a CPU-only machine they are equivalent)."""
    x = torch.randn(2, 17, 8, device="cuda")
    mask = image.PatchReduction(strategy, tokens, (4, 4), 2).train()
    assert mask.kept_indices(2, (4, 4), x.device).device.type == "cuda"
    assert mask(x).device.type == "cuda"
