"""DeCLIP (Li et al. 2022): CLIP supervision plus supervision found inside the pairs.

Loss = w.clip x multi-view CLIP + w.nn x nearest-neighbour + w.simsiam x SimSiam + w.mlm x MLM
(published weights 0.4 / 0.2 / 0.2 / 0.2; method_options.declip_weights):
- multi-view CLIP: 2 augmented image views (batch["views"], MoCo-v2 crops) x {caption, augmented
  caption (batch["text_aug"], see pipeline/data/views.py)}: the mean of the 4 CLIP losses.
- SimSiam between the two views' embeddings (3-layer projector, 2-layer predictor, stop-gradient).
- MLM: 15% of caption tokens masked BERT-style; a linear head predicts their ids from the text
  tower's token states (after ln_final, before pooling). As in the DeCLIP reference code, the masked
  caption's forward also gives the caption embedding used by the CLIP and NN terms (one text pass).
- NN: each caption's (and augmented caption's) nearest neighbour in a FIFO bank of past text
  embeddings stands in for it as a CLIP target (image -> neighbour direction). As in the DeCLIP code
  every rank keeps its own bank (`nn_queue_size` per rank, random unit vectors at the start) of its own
  local captions: the lookups of a step see the bank from before that step, the neighbours are gathered
  across ranks as CLIP columns, then the rank's augmented captions and captions are queued.
A term whose weight is 0 is skipped and its head not built. batch["image"] is not used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..distributed import gather_with_grad
from . import Method, register
from ._heads import FeatureQueue, mlp, sync_batchnorm
from ._losses import cap_scale, clip_loss, mlm_loss, nn_loss, simsiam_loss
from ._options import resolve_options
from ._towers import (embed_dim, encode_image_parts, encode_text_parts, masked_caption, text_width, unwrap,
                      vocab_size)
from .simclr import two_views


@register("declip")
class DeCLIP(Method):
    image_views = 2
    text_augment = True
    view_crop_scale = (0.2, 1.0)  # DeCLIP's MOCOV2 views

    def __init__(self, model: torch.nn.Module, options: dict | None = None):
        super().__init__(model, resolve_options(options))
        self.weights = {k: float(v) for k, v in self.options["declip_weights"].items()}
        dim = embed_dim(model)
        if self.weights["simsiam"] > 0:
            hidden, bottleneck = self.options["simsiam_dim"], self.options["simsiam_pred_dim"]
            synced = self.options["sync_batchnorm"]
            self.projector = sync_batchnorm(mlp(dim, hidden, hidden, layers=3, last_bn=True), synced)
            self.predictor = sync_batchnorm(mlp(hidden, bottleneck, hidden, layers=2, last_bn=False), synced)
        if self.weights["mlm"] > 0:
            self.mlm_head = nn.Linear(text_width(model), vocab_size(model))
            self.mask_embedding = nn.Parameter(torch.randn(text_width(model)) * 0.02)
        if self.weights["nn"] > 0:
            self.queue = FeatureQueue(self.options["nn_queue_size"], dim)
        if self.weights["clip"] == 0 and self.weights["nn"] == 0:
            unwrap(model).logit_scale.requires_grad_(False)  # no term uses the temperature

    def encode_caption(self, model: torch.nn.Module, text: torch.Tensor):
        """(embedding, token states, MLM labels or None): masked when the MLM term is on."""
        if self.weights["mlm"] == 0:
            embed, states = encode_text_parts(model, text)
            return embed, states, None
        return masked_caption(model, text, probability=self.options["mlm_probability"],
                              mask_embedding=self.mask_embedding)

    def terms(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
              ) -> tuple[dict[str, torch.Tensor], dict]:
        """(unweighted loss terms and logged scalars, intermediate tensors for DeFILIP)."""
        if "text_aug" not in batch:
            raise UserError("batch.text_aug: DeCLIP needs the augmented caption (loader text_augment)")
        view_a, view_b = two_views(batch)
        image = encode_image_parts(model, torch.cat([view_a, view_b]))
        embed_a, embed_b = image.embed.split(view_a.shape[0])
        text_embed, states, labels = self.encode_caption(model, batch["text"])
        aug_embed, _ = encode_text_parts(model, batch["text_aug"])
        images = [F.normalize(embed_a, dim=-1), F.normalize(embed_b, dim=-1)]
        texts = [F.normalize(text_embed, dim=-1), F.normalize(aug_embed, dim=-1)]
        scale = cap_scale(unwrap(model).logit_scale.exp(), self.options["logit_scale_cap"])
        out: dict[str, torch.Tensor] = {"logit_scale": scale.detach()}
        if self.weights["clip"] > 0:
            pairs = [clip_loss(i, t, scale, column_grad=True) for i in images for t in texts]
            out["clip_loss"] = torch.stack([p[0] for p in pairs]).mean()
            out["acc_image_to_text"] = pairs[0][1]
        if self.weights["simsiam"] > 0:
            z_a, z_b = self.projector(embed_a), self.projector(embed_b)
            out["simsiam_loss"] = simsiam_loss(self.predictor(z_a), z_a, self.predictor(z_b), z_b)
        if self.weights["mlm"] > 0:
            out["mlm_loss"] = mlm_loss(self.mlm_head, states, labels)
        if self.weights["nn"] > 0:
            out["nn_loss"] = self.nn_term(images, texts, scale)
        parts = {"image_hidden": image.hidden[:view_a.shape[0]], "text_states": states}
        return out, parts

    def nn_term(self, images: list[torch.Tensor], texts: list[torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
        """NN loss against this rank's bank as it was before this step; then this rank's augmented captions
        and captions are queued, in the DeCLIP code's order."""
        neighbours = [gather_with_grad(self.queue.nearest(t)) for t in texts]
        loss = nn_loss(images, neighbours, scale)
        if self.training:
            for t in reversed(texts):
                self.queue.push(t)
        return loss

    def weighted(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        keys = {"clip": "clip_loss", "nn": "nn_loss", "simsiam": "simsiam_loss", "mlm": "mlm_loss",
                "filip": "filip_loss"}
        return sum(self.weights[w] * out[k] for w, k in keys.items() if k in out)

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out, _ = self.terms(model, batch)
        loss = self.weighted(out)
        return {"loss": loss, **{k: v.detach() for k, v in out.items()}}

