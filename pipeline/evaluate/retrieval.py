"""Zero-shot image-text retrieval (COCO / Flickr30k, Karpathy-split layout): recall@k both ways.

Key names follow CLIP_benchmark: image_retrieval_recall@k = text -> image (an image is retrieved for each
caption), text_retrieval_recall@k = image -> text (a hit when any of the image's captions is in the top k).
The caption sets are read in place: each `evaluate.retrieval.datasets` entry names its annotation file and
image folder.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UserError
from ..utils.io import read_json
from . import Context, Evaluation, register


def read_captions(annotations: str | Path, split: str | None) -> list[tuple[str, list[str]]]:
    """[(image path relative to the images root, [captions])] from Karpathy's dataset_{coco,flickr30k}.json
    ({"images": [{"filepath"?, "filename", "split", "sentences": [{"raw"}]}]}) or a plain
    [{"image": path, "captions": [...]}] list."""
    path = Path(annotations)
    data = read_json(path, "caption annotations")
    if isinstance(data, dict) and "images" in data:
        items = [(str(Path(im.get("filepath", "")) / im["filename"]), [s["raw"] for s in im["sentences"]])
                 for im in data["images"] if split is None or im.get("split") == split]
    elif isinstance(data, list):
        items = [(im["image"], list(im["captions"])) for im in data]
    else:
        raise UserError(f"{path}: expected Karpathy's {{'images': [...]}} or a list of {{image, captions}}")
    items = [(img, caps) for img, caps in items if caps]
    if not items:
        raise UserError(f"{path}: split: no images with captions" + (f" in split {split!r}" if split else ""))
    return items


class ImageList(Dataset):
    def __init__(self, root: Path, files: list[str], transform):
        self.root, self.files, self.transform = Path(root), files, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        path = self.root / self.files[i]
        try:
            image = Image.open(path).convert("RGB")
        except Exception as exc:
            raise UserError(f"{path}: unreadable image ({type(exc).__name__})") from None
        return self.transform(image), i


def recall_at_k(scores: torch.Tensor, positives: torch.Tensor, k: int) -> float:
    """Fraction of queries (rows) with at least one positive among their k best-scored candidates."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return positives.gather(1, top).any(dim=1).double().mean().item()


def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                      ks=(1, 5, 10)) -> dict[str, float]:
    """image_emb [N, D], text_emb [M, D] normalised; text_to_image [M] = index of each caption's image."""
    scores = text_emb @ image_emb.T                                    # [M, N]
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(len(text_to_image)), text_to_image] = True
    out = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = recall_at_k(scores, positives, k)
        out[f"text_retrieval_recall@{k}"] = recall_at_k(scores.T, positives.T, k)
    return out


@torch.no_grad()
def text_embeddings(model, tokenizer, captions: list[str], batch_size: int, device) -> torch.Tensor:
    chunks = [model.encode_text(tokenizer(captions[i:i + batch_size]).to(device), normalize=True).float().cpu()
              for i in range(0, len(captions), batch_size)]
    return torch.cat(chunks)


def run(ctx: Context) -> None:
    from ..models import context_length_of, image_size_of, tokenizer
    from ._external import load_evaluated
    from ._datasets import eval_transform
    from ._features import eval_device, image_features
    from ._records import write_result

    entry, ev, device = ctx.entry, ctx.experiment.evaluate, eval_device()
    items = read_captions(ctx.inputs["annotations"], entry.split or None)
    loaded = load_evaluated(ctx)
    model = loaded.model.to(device).eval()
    start = time.time()
    images = ImageList(entry.images_root, [img for img, _ in items], eval_transform(image_size_of(loaded.model_config)))
    image_emb, _ = image_features(model, images, ev.batch_size, ev.workers, device, desc="retrieval images",
                                 features="embedding")
    captions = [c for _, caps in items for c in caps]
    owner = torch.tensor([i for i, (_, caps) in enumerate(items) for _ in caps])
    text_emb = text_embeddings(model, tokenizer(context_length_of(loaded.model_config)), captions,
                               ev.batch_size, device)
    metrics = retrieval_metrics(image_emb, text_emb, owner)
    write_result(ctx, task=EVALUATION.task, metrics=metrics, model=loaded.experiment, pretrained=ctx.checkpoint,
                 checkpoint=loaded.stage)
    print(f"retrieval {ctx.dataset} ({len(items)} images, {len(captions)} captions, {time.time() - start:.1f} s): "
          + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.endswith("@1")))


EVALUATION = register(Evaluation(
    name="retrieval", order=50, task="zeroshot_retrieval", run=run,
    inputs=lambda entry: {"annotations": ("file", entry.annotations)},
    columns=(("T→I R@1", "image_retrieval_recall@1"), ("I→T R@1", "text_retrieval_recall@1")),
    published="retrieval"))
