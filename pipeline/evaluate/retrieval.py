"""Zero-shot image-text retrieval (COCO / Flickr30k, Karpathy-split layout): recall@k both ways.

Key names follow CLIP_benchmark: image_retrieval_recall@k = text -> image (an image is retrieved for each
caption), text_retrieval_recall@k = image -> text (a hit when any of the image's captions is in the top k).
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UserError
from ..utils.io import read_json


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
