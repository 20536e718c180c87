"""CLIP loss: 2 gloo processes with local loss + gather-with-grad == 1 process on the same global batch."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from _train_fixtures import TINY_MODEL
from pipeline.methods import create_method
from pipeline.models import create_model
from pipeline.train.loop import TrainModule

GLOBAL_BATCH = 8


def global_batch() -> dict:
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=g),
            "text": torch.randint(1, 1000, (GLOBAL_BATCH, 12), generator=g)}


def build() -> TrainModule:
    torch.manual_seed(0)
    model = create_model(TINY_MODEL)
    return TrainModule(model, create_method("clip", model, {}))


def loss_and_grads(module, batch) -> tuple[float, dict]:
    from pipeline import distributed

    out = module(batch)
    out["loss"].backward()
    loss = float(distributed.mean_across(out["loss"].detach()))
    inner = module.module if hasattr(module, "module") else module
    return loss, {n: p.grad.clone() for n, p in inner.named_parameters() if p.grad is not None}


def _worker(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    rows = GLOBAL_BATCH // world_size
    batch = {k: v[rank * rows:(rank + 1) * rows] for k, v in global_batch().items()}
    module = torch.nn.parallel.DistributedDataParallel(build())
    loss, grads = loss_and_grads(module, batch)
    torch.save({"loss": loss, "grads": grads}, os.path.join(folder, f"rank{rank}.pt"))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    loss, grads = loss_and_grads(build(), global_batch())
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert abs(got["loss"] - loss) < 1e-5
        assert got["grads"].keys() == grads.keys()
        for name, grad in grads.items():  # DDP averaged grads == single-process full-batch grads
            torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_loss_is_symmetric_infonce():
    module = build()
    batch = global_batch()
    image, text, scale = module.model(batch["image"], batch["text"])
    logits = scale * image @ text.T
    labels = torch.arange(GLOBAL_BATCH)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(module(batch)["loss"], expected)
