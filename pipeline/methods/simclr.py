"""SimCLR (Chen et al. 2020) as SLIP trains it: image tower only, NT-Xent between two views.

The head is SLIP's 3-layer MLP (Linear-BN-ReLU, Linear-BN-ReLU, Linear; 4096 hidden, 256 out) on the
image tower's pooled feature before the joint-space projection (SLIP puts it on the ViT class token).
Both views go through the tower in one pass; the head runs per view so its BatchNorm statistics are
per view, as in SLIP. Under more than one process the head's BatchNorm is synced.
"""
from __future__ import annotations

import torch

from ..errors import UserError
from . import Method, register
from ._heads import mlp, sync_batchnorm
from ._losses import nt_xent
from ._options import resolve_options
from ._towers import encode_image_parts, image_width, unwrap


def freeze_except_image_tower(model: torch.nn.Module) -> None:
    """SimCLR trains no text tower, projection or temperature: they get requires_grad=False, so the
    optimizer skips them and DDP expects no gradient for them (no find_unused_parameters needed)."""
    for name, param in unwrap(model).named_parameters():
        if not name.startswith("visual.") or name == "visual.proj":
            param.requires_grad_(False)


def two_views(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    views = batch.get("views")
    if views is None or views.dim() != 5 or views.shape[1] < 2:
        shape = None if views is None else tuple(views.shape)
        raise UserError(f"batch.views: expected [B, 2, 3, H, W] augmented views, got {shape}")
    return views[:, 0], views[:, 1]


class SimCLRTerm(Method):
    """The SimCLR loss and head, shared by SimCLR and SLIP."""

    image_views = 2
    view_crop_scale = (0.08, 1.0)  # loader hook: RandomResizedCrop area range of the views

    def __init__(self, model: torch.nn.Module, options: dict | None = None):
        super().__init__(model, resolve_options(options))
        self.temperature = float(self.options["ssl_temperature"])
        self.ssl_head = sync_batchnorm(mlp(image_width(model), self.options["ssl_mlp_dim"],
                                           self.options["ssl_emb_dim"], layers=3, last_bn=False),
                                       self.options["sync_batchnorm"])

    def ssl_term(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(NT-Xent loss, accuracy) of the two augmented views."""
        view_a, view_b = two_views(batch)
        pooled = encode_image_parts(model, torch.cat([view_a, view_b])).pooled
        pooled_a, pooled_b = pooled.split(view_a.shape[0])
        return nt_xent(self.ssl_head(pooled_a), self.ssl_head(pooled_b), self.temperature)


@register("simclr")
class SimCLR(SimCLRTerm):
    def __init__(self, model: torch.nn.Module, options: dict | None = None):
        super().__init__(model, options)
        freeze_except_image_tower(model)

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss, acc = self.ssl_term(model, batch)
        return {"loss": loss, "ssl_loss": loss.detach(), "ssl_acc": acc}
