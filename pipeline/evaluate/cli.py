"""`python -m pipeline zeroshot --checkpoint C --dataset NAME --data data/NAME/stats.json --out R.json`."""
from __future__ import annotations

import argparse
import time

import torch

from ..config import CONFIG_DIR, load_dataset
from ..errors import UserError
from ..models import context_length_of, image_size_of, tokenizer
from .assets import load_classnames, load_templates
from .checkpoint import load_for_eval
from .datasets import classification_dataset
from .results import result_record, write_result
from .zeroshot import evaluate_zeroshot


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device: {name!r} requested but no CUDA device is available")
    return name


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline zeroshot", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="final checkpoint (results/E/<stage>/final.pt)")
    p.add_argument("--dataset", required=True, help="dataset name (config/datasets/NAME.yaml names the lists)")
    p.add_argument("--data", required=True, help="data/NAME/stats.json of the prepared dataset")
    p.add_argument("--out", required=True, help="result JSON (CLIP_benchmark keys), written atomically")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0 = main process)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--config-dir", default=str(CONFIG_DIR), help="folder holding datasets/NAME.yaml")
    return p


FROM_DATA = "from_data"  # classnames value: use the prepared dataset's own class names (e.g. torchvision's)


def prompt_lists(dataset: str, config_dir: str, classes: list[str], stats_path: str) -> tuple[list[str], list[str]]:
    """Class names and templates named by the dataset config, checked against the prepared data."""
    ds = load_dataset(dataset, config_dir)
    if ds.classnames is None or ds.templates is None:
        raise UserError(f"{config_dir}/datasets/{dataset}.yaml: classnames/templates: both are needed for zero-shot")
    n_classes = len(classes)
    classnames = list(classes) if ds.classnames == FROM_DATA else load_classnames(ds.classnames)
    templates = load_templates(ds.templates)
    if len(classnames) != n_classes:
        raise UserError(f"{stats_path}: classes: {n_classes} classes, but class-name list {ds.classnames!r} "
                        f"has {len(classnames)}")
    return classnames, templates


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv[1:])
    if args.batch_size < 1 or args.workers < 0:
        raise UserError("--batch-size must be >= 1 and --workers >= 0")
    device = resolve_device(args.device)
    loaded = load_for_eval(args.checkpoint)
    dataset, classes = classification_dataset(args.data, image_size_of(loaded.model_config))
    classnames, templates = prompt_lists(args.dataset, args.config_dir, classes, args.data)
    start = time.time()
    metrics = evaluate_zeroshot(model=loaded.model, tokenizer=tokenizer(context_length_of(loaded.model_config)),
                                dataset=dataset, classnames=classnames, templates=templates,
                                batch_size=args.batch_size, workers=args.workers, device=device)
    record = result_record(dataset=args.dataset, model=loaded.experiment, pretrained=args.checkpoint,
                           task="zeroshot_classification", metrics=metrics, checkpoint=loaded.stage)
    write_result(args.out, record)
    print(f"zeroshot {args.dataset} ({len(dataset)} images, {time.time() - start:.1f} s): "
          + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return 0
