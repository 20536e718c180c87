"""Position-embedding resampling: a model trained at 16 px / 8 tokens loads and runs at 28 px / 24 tokens."""
from __future__ import annotations

import pytest
import torch

from _train_fixtures import TINY_MODEL
from pipeline.errors import UserError
from pipeline.models import create_model, resolve_model_config
from pipeline.models.resample import load_resampled, resample_state_dict


def model_at(image_size, context_length, **vision):
    cfg = resolve_model_config(None, TINY_MODEL, image_size=image_size, context_length=context_length)
    cfg["vision_cfg"].update(vision)
    return create_model(cfg)


def test_resampled_weights_load_and_run_at_the_new_size():
    small, big = model_at(16, 8), model_at(28, 24)
    state = resample_state_dict(small.state_dict(), big)
    assert state["visual.positional_embedding"].shape == (7 * 7 + 1, 32)
    assert state["positional_embedding"].shape == (24, 32)
    torch.testing.assert_close(state["visual.positional_embedding"][0], small.visual.positional_embedding[0])
    load_resampled(big, small.state_dict())
    torch.testing.assert_close(big.visual.conv1.weight, small.visual.conv1.weight)
    image, text, _ = big.eval()(torch.randn(2, 3, 28, 28), torch.randint(1, 500, (2, 24)))
    assert image.shape == text.shape == (2, 16) and torch.isfinite(image).all()


def test_same_size_is_an_exact_copy():
    a, b = model_at(16, 12), model_at(16, 12)
    load_resampled(b, a.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_other_architecture_is_a_user_error():
    with pytest.raises(UserError, match="ckpt.pt: model"):
        load_resampled(model_at(16, 8, width=64), model_at(16, 8).state_dict(), source="ckpt.pt")
