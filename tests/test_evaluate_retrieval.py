"""Retrieval recall@k on hand-made scores, and the CLI on a Karpathy-layout annotation file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.evaluate.retrieval import read_captions, recall_at_k, retrieval_metrics

from _eval_fixtures import eval_argv, save_tiny_checkpoint, write_eval_experiment


def test_recall_at_k_hand_checked():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.0, 0.6, 0.4]])
    positives = torch.eye(3, dtype=torch.bool)
    # row 0 hit at rank 1; row 1's positive (0.3) is 2nd; row 2's positive (0.4) is 2nd
    assert recall_at_k(scores, positives, 1) == pytest.approx(1 / 3)
    assert recall_at_k(scores, positives, 2) == pytest.approx(1.0)


def test_retrieval_metrics_two_captions_per_image():
    image = torch.eye(3)                                   # 3 images, orthonormal embeddings
    text = torch.tensor([[1.0, 0, 0], [0, 0, 0.9], [0, 1.0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    owner = torch.tensor([0, 0, 1, 1, 2, 2])               # caption 1 of image 0 points at image 2
    m = retrieval_metrics(image, text, owner, ks=(1, 5))
    assert m["image_retrieval_recall@1"] == pytest.approx(5 / 6)     # text -> image: one caption misses
    # image -> text: image 0's best caption is caption 0 (its own); all images hit at k=1
    assert m["text_retrieval_recall@1"] == pytest.approx(1.0)
    assert m["image_retrieval_recall@5"] == 1.0 and set(m) == {
        "image_retrieval_recall@1", "text_retrieval_recall@1", "image_retrieval_recall@5", "text_retrieval_recall@5"}


def _karpathy(tmp_path, n=6):
    root = tmp_path / "flickr" / "images"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
        images.append({"filename": f"{i}.jpg", "split": "test" if i < 4 else "train",
                       "sentences": [{"raw": f"picture number {i}"}, {"raw": f"another view {i}"}]})
    ann = tmp_path / "flickr" / "dataset_flickr30k.json"
    ann.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return ann, root


def test_retrieval_cli(tmp_path, capsys):
    from pipeline.__main__ import main

    ann, root = _karpathy(tmp_path)
    assert len(read_captions(ann, "test")) == 4 and len(read_captions(ann, None)) == 6
    ckpt = save_tiny_checkpoint(tmp_path / "ck" / "final.pt")
    out = tmp_path / "r.json"
    sets = [{"name": "flickr30k", "annotations": str(ann), "images_root": str(root)},
            {"name": "x", "annotations": str(ann), "images_root": str(root), "split": "val"}]
    exp = write_eval_experiment(tmp_path / "config", {"batch_size": 3, "retrieval": {"datasets": sets}})
    assert main(eval_argv("retrieval", exp, "flickr30k", checkpoint=ckpt, inputs={"annotations": ann},
                          outputs={"result": out})) == 0
    rec = json.loads(out.read_text())
    assert rec["task"] == "zeroshot_retrieval" and len(rec["metrics"]) == 6
    # 4 images, 8 captions: recall@5 and @10 over 4 candidate images is certain
    assert rec["metrics"]["image_retrieval_recall@5"] == 1.0 == rec["metrics"]["text_retrieval_recall@10"]
    assert main(eval_argv("retrieval", exp, "x", checkpoint=ckpt, inputs={"annotations": ann},
                          outputs={"result": out})) == 2
    assert "no images with captions in split 'val'" in capsys.readouterr().err
