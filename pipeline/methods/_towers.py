"""Per-token and pre-projection features from open_clip's towers, in one forward pass.

open_clip's `encode_image` / `encode_text` return only the pooled, projected embedding. SimCLR's head
wants the image tower's pooled feature before the projection (as SLIP's head sits on the ViT's class
token), FILIP wants every patch and word token, and MLM wants the text tower's token states. The
functions below run the towers' own modules in the same order as open_clip 3.3's
`VisionTransformer.forward` and `CLIP.encode_text`, so `embed` equals `encode_image`/`encode_text`
exactly (tests/test_methods.py checks that) while the intermediate tensors are kept:

- image: `visual._embeds` (patchify, class token, positions, patch_dropout, ln_pre) ->
  `visual.transformer` (its output: `hidden`, class token first, before ln_post) -> `visual._pool` gives
  (pooled, tokens) after ln_post; embed = pooled @ proj.
- text: token_embedding (+ optional replacement of masked positions) + positional_embedding ->
  transformer (causal mask) -> ln_final gives the token states; the EOT state @ text_projection is
  the embedding. States are "model.transformer outputs after ln_final, before pooling".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from open_clip.transformer import text_global_pool

from ..errors import UserError
from ._losses import mlm_corrupt


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The open_clip model inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@dataclass
class ImageParts:
    pooled: torch.Tensor  # [B, width] pooled feature before the projection
    embed: torch.Tensor  # [B, embed_dim] == model.encode_image(images)
    tokens: torch.Tensor  # [B, N, width] patch tokens after ln_post (N shrinks under patch dropout)
    hidden: torch.Tensor  # [B, 1 + N, width] transformer output before ln_post, class token first


def _vit(model: torch.nn.Module):
    visual = unwrap(model).visual
    if not all(hasattr(visual, a) for a in ("_embeds", "_pool", "transformer")):
        raise UserError(f"model.vision_cfg: this method needs an open_clip VisionTransformer image tower, "
                        f"got {type(visual).__name__}")
    return visual


def encode_image_parts(model: torch.nn.Module, images: torch.Tensor) -> ImageParts:
    visual = _vit(model)
    hidden = visual.transformer(visual._embeds(images))
    pooled, tokens = visual._pool(hidden)
    embed = pooled @ visual.proj if visual.proj is not None else pooled
    return ImageParts(pooled=pooled, embed=embed, tokens=tokens, hidden=hidden)


def image_width(model: torch.nn.Module) -> int:
    """Width of `ImageParts.pooled`."""
    visual = _vit(model)
    return int(visual.proj.shape[0]) if visual.proj is not None else int(visual.output_dim)


def embed_dim(model: torch.nn.Module) -> int:
    return int(unwrap(model).visual.output_dim)


@dataclass
class _TextTower:
    token_embedding: torch.nn.Module
    positional_embedding: torch.Tensor
    transformer: torch.nn.Module
    ln_final: torch.nn.Module
    text_projection: object
    attn_mask: torch.Tensor | None
    pool_type: str
    eos_id: int | None


def _text_tower(model: torch.nn.Module) -> _TextTower:
    """The text modules of open_clip's CLIP (on the model) or CustomTextCLIP (model.text)."""
    m = unwrap(model)
    if hasattr(m, "token_embedding") and hasattr(m, "transformer"):
        pool, eos = m.text_pool_type, getattr(m, "text_eos_id", None)
    else:
        m = getattr(m, "text", None)
        if m is None or not hasattr(m, "token_embedding") or getattr(m, "cls_emb", None) is not None:
            raise UserError("model.text_cfg: this method needs open_clip's causal text transformer "
                            "(no Hugging Face tower, no class-token text pooling)")
        pool, eos = m.pool_type, getattr(m, "eos_id", None)
    return _TextTower(m.token_embedding, m.positional_embedding, m.transformer, m.ln_final,
                      m.text_projection, m.attn_mask, pool, eos)


def _project_text(tower: _TextTower, x: torch.Tensor) -> torch.Tensor:
    proj = tower.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def encode_text_parts(model: torch.nn.Module, text: torch.Tensor, *, input_ids: torch.Tensor | None = None,
                      replace: torch.Tensor | None = None, replacement: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(embed [B, E] == model.encode_text(text), token states [B, L, width] after ln_final).

    MLM corrupts the input without touching pooling: `input_ids` are embedded instead of `text`,
    positions where `replace` is True get the vector `replacement` (a learned [MASK] embedding:
    open_clip's vocabulary has no mask token), and the EOT position is still found in `text`."""
    tower = _text_tower(model)
    cast = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(text if input_ids is None else input_ids).to(cast)
    if replace is not None:
        x = torch.where(replace[..., None], replacement.to(cast).expand_as(x), x)
    length = text.shape[1]
    x = x + tower.positional_embedding[:length].to(cast)
    mask = tower.attn_mask[:length, :length] if tower.attn_mask is not None else None
    x = tower.transformer(x, attn_mask=mask)
    states = tower.ln_final(x)
    pooled = text_global_pool(states, text, tower.pool_type, eos_token_id=tower.eos_id)
    return _project_text(tower, pooled), states


def text_width(model: torch.nn.Module) -> int:
    return int(_text_tower(model).token_embedding.embedding_dim)


def vocab_size(model: torch.nn.Module) -> int:
    return int(_text_tower(model).token_embedding.num_embeddings)


def hidden_width(model: torch.nn.Module) -> int:
    """Width of `ImageParts.hidden` (the ViT's transformer width)."""
    return int(_vit(model).class_embedding.shape[0])


def masked_caption(model: torch.nn.Module, text: torch.Tensor, *, probability: float,
                   mask_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embedding, token states, MLM labels) of the caption corrupted BERT-style (`_losses.mlm_corrupt`):
    DeCLIP's masked caption, which feeds its CLIP, NN and MLM terms (and the DeCLIP benchmark's FILIP)."""
    ids, replace, labels = mlm_corrupt(text, probability=probability, vocab_size=vocab_size(model))
    embed, states = encode_text_parts(model, text, input_ids=ids, replace=replace, replacement=mask_embedding)
    return embed, states, labels
