"""Heads and state the self-supervised methods add to the towers: MLPs, synced BatchNorm, a queue.

Heads are submodules of the Method (the trainer optimises and checkpoints them with the model); the
queue is made of buffers, so it is saved in `state_dict` and a resumed run continues with it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import world


def mlp(in_dim: int, hidden: int, out: int, *, layers: int, last_bn: bool) -> nn.Sequential:
    """Linear-BN-ReLU blocks, then a last Linear (followed by a BN when `last_bn`).

    SimCLR/SLIP head: 3 layers, no last BN. SimSiam projector: 3 layers with last BN; predictor:
    2 layers without (BN on the predictor output destabilises SimSiam)."""
    dims = [in_dim] + [hidden] * (layers - 1)
    blocks: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        blocks += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    blocks.append(nn.Linear(dims[-1], out))
    if last_bn:
        blocks.append(nn.BatchNorm1d(out))
    return nn.Sequential(*blocks)


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the global batch on CPU processes (gloo), where torch's SyncBatchNorm refuses to
    run (and DDP refuses to wrap it): per-feature sums over ranks through a differentiable all_reduce,
    so 2 CPU processes normalise exactly like 1. Same state as BatchNorm1d: checkpoints stay portable."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or world()[1] == 1:
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        x = input.float()
        c = x.shape[1]
        stats = all_reduce(torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])]))
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * count / (count - 1).clamp_min(1))
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y.to(input.dtype)


def sync_batchnorm(module: nn.Module, synced: bool) -> nn.Module:
    """With more than one process, BatchNorm layers normalise over the global batch (SLIP's heads are
    synced): torch.nn.SyncBatchNorm.convert_sync_batchnorm when training runs on GPUs (the trainer's device
    rule: CUDA whenever available), GlobalBatchNorm1d on CPU. Identity for one process, or when `synced`
    is False (method_options.sync_batchnorm: the DeCLIP code's statistics are per GPU)."""
    if world()[1] == 1 or not synced:
        return module
    if torch.cuda.is_available():
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for m in module.modules():
        if type(m) is nn.BatchNorm1d:
            m.__class__ = GlobalBatchNorm1d  # same state, forward that syncs over gloo
    return module


class FeatureQueue(nn.Module):
    """FIFO bank of L2-normalised features for nearest-neighbour lookup (DeCLIP's NN supervision), one per
    rank, as DeCLIP's NNMemoryBankModule (lightly's): each rank pushes only its own local rows, so a bank of
    `size` holds the last size / (rows pushed per step) steps of that rank, the history the recipe had
    (65,536 per rank, 256 captions a step: 256 steps). Like lightly's it starts full of random unit vectors
    (drawn from torch's RNG), so the first steps' neighbours are noise until real features replace them.
    The banks differ between ranks (`rank_local`): the trainer checkpoints every rank's."""

    rank_local = True

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size = int(size)
        self.register_buffer("features", F.normalize(torch.randn(self.size, dim), dim=-1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> None:
        x = F.normalize(x.detach().to(self.features.dtype), dim=-1)[-self.size:]
        n, ptr = x.shape[0], int(self.ptr)
        first = min(n, self.size - ptr)
        self.features[ptr:ptr + first] = x[:first]
        self.features[:n - first] = x[first:]
        self.ptr.fill_((ptr + n) % self.size)

    @torch.no_grad()
    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """For each row of x, the queued feature of highest cosine similarity ([n, dim], no grad)."""
        query = F.normalize(x.detach().to(self.features.dtype), dim=-1)
        return self.features[(query @ self.features.T).argmax(dim=1)]
