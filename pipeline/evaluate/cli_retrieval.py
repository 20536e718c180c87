"""`python -m pipeline retrieval --checkpoint C --dataset NAME --annotations dataset_flickr30k.json
--images-root DIR [--split test] --out R.json`: zero-shot image <-> text recall@1/5/10."""
from __future__ import annotations

import argparse
import time

import torch

from ..models import context_length_of, image_size_of, tokenizer
from .checkpoint import load_for_eval
from .cli import resolve_device
from .datasets import eval_transform
from .results import result_record, write_result
from .retrieval import ImageList, read_captions, retrieval_metrics, text_embeddings
from .zeroshot import image_features


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline retrieval", description=__doc__)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", required=True, help="name written into the result (e.g. flickr30k, mscoco)")
    p.add_argument("--annotations", required=True, help="Karpathy split JSON or a list of {image, captions}")
    p.add_argument("--images-root", required=True, help="folder the annotation image paths are relative to")
    p.add_argument("--split", default="test", help="Karpathy split to use ('' = every image)")
    p.add_argument("--out", required=True, help="result JSON, written atomically")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv[1:])
    device = resolve_device(args.device)
    items = read_captions(args.annotations, args.split or None)
    loaded = load_for_eval(args.checkpoint)
    model = loaded.model.to(device).eval()
    start = time.time()
    images = ImageList(args.images_root, [img for img, _ in items], eval_transform(image_size_of(loaded.model_config)))
    image_emb, _ = image_features(model, images, args.batch_size, args.workers, device, desc="retrieval images")
    captions = [c for _, caps in items for c in caps]
    owner = torch.tensor([i for i, (_, caps) in enumerate(items) for _ in caps])
    text_emb = text_embeddings(model, tokenizer(context_length_of(loaded.model_config)), captions,
                               args.batch_size, device)
    metrics = retrieval_metrics(image_emb, text_emb, owner)
    write_result(args.out, result_record(dataset=args.dataset, model=loaded.experiment, pretrained=args.checkpoint,
                                         task="zeroshot_retrieval", metrics=metrics, checkpoint=loaded.stage))
    print(f"retrieval {args.dataset} ({len(items)} images, {len(captions)} captions, {time.time() - start:.1f} s): "
          + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.endswith("@1")))
    return 0
