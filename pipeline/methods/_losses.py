"""Loss terms shared by the methods. Global terms gather across ranks with gradients.

Every global term follows open_clip's ClipLoss(local_loss=True, gather_with_grad=True) form: rank r scores its own m
rows against all N = world x m columns, targets are the columns r*m ... r*m+m-1, and the loss is the
mean over local rows. With DDP's gradient averaging this equals the single-process loss on the global
batch (tests/test_methods.py checks 2 processes against 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from ..distributed import gather_with_grad, world


def _targets(rows: int, device: torch.device) -> torch.Tensor:
    rank, _ = world()
    return torch.arange(rows, device=device) + rank * rows


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (logits.argmax(dim=1) == labels).float().mean()


def wide(x: torch.Tensor) -> torch.Tensor:
    """x in at least float32: softmax and cross-entropy leave bf16/fp16, float64 (exactness tests) stays."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def cap_scale(scale: torch.Tensor, cap: float | None) -> torch.Tensor:
    """min(scale, cap) in the forward with the gradient of the uncapped scale, as the DeCLIP code's
    `logit_scale.data = clamp(logit_scale.data, max=100)` behaves (exp's backward reads its saved output,
    not the clamped data). None: no cap (open_clip, SLIP)."""
    if cap is None:
        return scale
    return scale - (scale - cap).clamp(min=0).detach()


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, *, column_grad: bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric InfoNCE on L2-normalised embeddings, with open_clip's ClipLoss logits and targets
    (local rows x gathered columns, gathers with gradients); the cross-entropies in fp32. (loss, i->t acc).

    column_grad False (method_options.clip_column_grad): the gathered columns carry no gradient at all, this
    rank's included, as SLIP's CLIPLoss (utils.all_gather_batch) trains with several processes; every
    embedding then learns only from its own row. One process keeps every gradient, as SLIP's does."""
    rank, world_size = world()
    loss_fn = ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world_size)
    if column_grad or world_size == 1:
        logits_image, logits_text = loss_fn.get_logits(image, text, logit_scale)
    else:
        all_image, all_text = gather_with_grad(image.detach()), gather_with_grad(text.detach())
        logits_image, logits_text = logit_scale * image @ all_text.T, logit_scale * text @ all_image.T
    labels = loss_fn.get_ground_truth(image.device, logits_image.shape[0])
    loss = (F.cross_entropy(wide(logits_image), labels) + F.cross_entropy(wide(logits_text), labels)) / 2
    return loss, _accuracy(logits_image, labels)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's NT-Xent over two views [m, D] each: for a row of view a, the positive is the same
    image in view b; negatives are every other image of both views in the global batch (the row
    itself is masked out). Mean of the a->b and b->a cross-entropies; (loss, a->b accuracy)."""
    a, b = F.normalize(wide(a), dim=-1), F.normalize(wide(b), dim=-1)
    all_a, all_b = gather_with_grad(a), gather_with_grad(b)
    labels = _targets(a.shape[0], a.device)
    self_mask = F.one_hot(labels, all_a.shape[0]).bool()
    aa = (a @ all_a.T / temperature).masked_fill(self_mask, float("-inf"))
    bb = (b @ all_b.T / temperature).masked_fill(self_mask, float("-inf"))
    ab = a @ all_b.T / temperature
    ba = b @ all_a.T / temperature
    logits_a = torch.cat([ab, aa], dim=1)
    loss = (F.cross_entropy(logits_a, labels) + F.cross_entropy(torch.cat([ba, bb], dim=1), labels)) / 2
    return loss, _accuracy(logits_a, labels)


def simsiam_loss(p1: torch.Tensor, z1: torch.Tensor, p2: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """SimSiam's symmetric negative cosine similarity, stop-gradient on the projections (-1 at best)."""
    d1 = F.cosine_similarity(wide(p1), wide(z2.detach()), dim=-1).mean()
    d2 = F.cosine_similarity(wide(p2), wide(z1.detach()), dim=-1).mean()
    return -(d1 + d2) / 2


def late_interaction(query: torch.Tensor, keys: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """FILIP similarity [Bq, Bk]: for each query token its best-matching key token, averaged over the
    query's tokens. Tokens are L2-normalised [B, n, D]. Keys are processed in chunks; `max(...).values`
    keeps only indices for backward, so the [Bq, chunk, nq, nk] similarity block is freed after each chunk."""
    out = []
    for start in range(0, keys.shape[0], chunk):
        sim = torch.einsum("qnd,kmd->qknm", query, keys[start:start + chunk])
        out.append(sim.max(dim=-1).values.mean(dim=-1))  # [Bq, chunk]
    return torch.cat(out, dim=1)


def select_tokens(image: torch.Tensor, text: torch.Tensor, top_k: int | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The DeCLIP benchmark's FILIP token selection (`get_weighted_dense_logits`, select_topk): per pair,
    the k image tokens of highest summed similarity to the pair's own text tokens, and the k text tokens of
    highest summed similarity to its image tokens ([B, k, D] each; all tokens when k is None or >= n).
    Per sample, so it may run per micro-batch."""
    if top_k is None:
        return image, text
    own = torch.einsum("bnd,bmd->bnm", image, text)  # [B, n_image, n_text]

    def pick(tokens: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        if top_k >= tokens.shape[1]:
            return tokens
        index = score.topk(top_k, dim=1).indices
        return tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))

    return pick(image, own.sum(dim=2)), pick(text, own.sum(dim=1))


def filip_loss(image_tokens: torch.Tensor, text_tokens: torch.Tensor, image_chosen: torch.Tensor,
               text_chosen: torch.Tensor, logit_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FILIP's token-wise symmetric InfoNCE as the DeCLIP benchmark computes it, on L2-normalised tokens:
    every local token against the chosen tokens (`select_tokens`) of every gathered sample; image->text
    logits average, over the image's tokens, the max similarity to a caption's chosen tokens, text->image the
    other way round. Only the chosen tokens are gathered. (loss, i->t accuracy)."""
    all_image, all_text = gather_with_grad(image_chosen), gather_with_grad(text_chosen)
    labels = _targets(image_tokens.shape[0], image_tokens.device)
    logits_image = logit_scale * late_interaction(image_tokens, all_text)
    logits_text = logit_scale * late_interaction(text_tokens, all_image)
    loss = (F.cross_entropy(logits_image, labels) + F.cross_entropy(logits_text, labels)) / 2
    return loss, _accuracy(logits_image, labels)


def nn_loss(images: list[torch.Tensor], neighbours: list[torch.Tensor], logit_scale: torch.Tensor
            ) -> torch.Tensor:
    """DeCLIP's nearest-neighbour supervision: each local image [m, D] (normalised) should pick the
    neighbour of its own caption among the neighbours of all global captions ([N, D] each, already
    global). Mean cross-entropy over every (image view, neighbour set) pair."""
    labels = _targets(images[0].shape[0], images[0].device)
    losses = [F.cross_entropy(wide(logit_scale * img @ nbr.to(img.dtype).T), labels)
              for img in images for nbr in neighbours]
    return torch.stack(losses).mean()


def mlm_corrupt(text: torch.Tensor, *, probability: float, vocab_size: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT-style masking of caption tokens (never SOT, EOT or padding), drawn from torch's CPU RNG
    (checkpointed by the trainer): of the chosen tokens 80% become [MASK], 10% a random word piece
    (ids 1 .. vocab-3: not padding/'!', SOT or EOT), 10% stay. Returns (input ids, [MASK] positions,
    labels with -100 where no prediction is scored)."""
    cpu = text.cpu()
    rows, length = cpu.shape
    eot = cpu.argmax(dim=-1)
    pos = torch.arange(length)[None, :]
    candidate = (pos > 0) & (pos < eot[:, None])
    chosen = (torch.rand(rows, length) < probability) & candidate
    roll = torch.rand(rows, length)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    random_ids = torch.randint(1, max(2, vocab_size - 2), (rows, length))
    input_ids = torch.where(to_random, random_ids, cpu)
    labels = torch.where(chosen, cpu, torch.full_like(cpu, -100))
    device = text.device
    return input_ids.to(device), to_mask.to(device), labels.to(device)


def mlm_loss(head: torch.nn.Module, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the MLM head at the scored positions only (a vocab-wide logit row per
    token would cost B x L x 49,408 floats). No scored token: a zero that still reaches the head."""
    scored = labels != -100
    if not bool(scored.any()):
        return head(states[:, :1]).sum() * 0.0
    return F.cross_entropy(wide(head(states[scored])), labels[scored])
