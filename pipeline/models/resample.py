"""Carry weights across image sizes and context lengths (CLIPA: pretrain small, finetune full).

open_clip's resize_pos_embed (bicubic over the patch grid, class token kept) and
resize_text_pos_embed (linear over positions) rewrite a state dict in place for a target model;
this module applies both and checks that everything else still fits.
"""
from __future__ import annotations

import torch
from open_clip.model import resize_pos_embed, resize_text_pos_embed

from ..errors import UserError


def resample_state_dict(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of `state_dict` whose image and text position embeddings match `model`'s sizes."""
    state = dict(state_dict)
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    return state


def load_resampled(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Load weights trained at another image size / context length into `model` (strict)."""
    state = resample_state_dict(state_dict, model)
    expected = model.state_dict()
    wrong = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    if wrong:
        raise UserError(f"{source}: model: tensors {', '.join(wrong[:4])} do not fit the model config "
                        "(only image/text position embeddings can be resampled)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{source}: model: missing {missing[:4]} / unexpected {unexpected[:4]} weights "
                        "for this model config")
