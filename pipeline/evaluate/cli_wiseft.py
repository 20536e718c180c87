"""`python -m pipeline wiseft --checkpoint C --finetuned M.pt --dataset NAME --test-data TE/stats.json
--out R.json --plot P.png [--alphas 0 0.1 ... 1] [--ema]`: WiSE-FT weight-space ensembles.

M.pt is finetune-eval's --save-model output, fine-tuned with --head-init zeroshot from the same checkpoint.
"""
from __future__ import annotations

import argparse

import torch

from ..config import CONFIG_DIR
from ..errors import UserError
from ..models import image_size_of
from .checkpoint import load_for_eval
from .cli import prompt_lists, resolve_device
from .datasets import classification_dataset
from .finetune.ftclip import build_classifier
from .finetune.wiseft import plot_curve, wiseft_curve
from .results import result_record, write_result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline wiseft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="the CLIP checkpoint the fine-tuning started from")
    p.add_argument("--finetuned", required=True, help="weights saved by finetune-eval --save-model")
    p.add_argument("--dataset", required=True, help="dataset name (class names and templates, result name)")
    p.add_argument("--test-data", required=True, help="stats.json of the test split")
    p.add_argument("--out", required=True, help="result JSON, written atomically")
    p.add_argument("--plot", help="PNG of top-1 against alpha")
    p.add_argument("--alphas", type=float, nargs="+", default=[round(0.1 * i, 1) for i in range(11)])
    p.add_argument("--headline-alpha", type=float, default=0.5, help="alpha reported as acc1 (WiSE-FT uses 0.5)")
    p.add_argument("--ema", action="store_true", help="interpolate towards the EMA weights instead")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--config-dir", default=str(CONFIG_DIR))
    return p


def _finetuned_state(path: str, use_ema: bool, model_config: dict) -> dict:
    from ..models import load_checkpoint

    blob = load_checkpoint(path)
    if blob.get("kind") != "ftclip_vit":
        raise UserError(f"{path}: kind: not a finetune-eval --save-model file")
    if blob.get("head_init") != "zeroshot":
        raise UserError(f"{path}: head_init: WiSE-FT needs a fine-tuning started from the zero-shot head")
    if blob.get("model_config") != model_config:
        raise UserError(f"{path}: model_config: differs from the --checkpoint's; not the same starting point")
    if use_ema and blob.get("ema") is None:
        raise UserError(f"{path}: ema: this fine-tuning kept no EMA weights")
    return blob["ema"] if use_ema else blob["model"]


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv[1:])
    if any(not 0 <= a <= 1 for a in args.alphas) or args.headline_alpha not in args.alphas:
        raise UserError("--alphas: each in [0, 1], and --headline-alpha must be one of them")
    device = resolve_device(args.device)
    loaded = load_for_eval(args.checkpoint)
    finetuned = _finetuned_state(args.finetuned, args.ema, loaded.model_config)
    test_set, classes = classification_dataset(args.test_data, image_size_of(loaded.model_config))
    classnames, templates = prompt_lists(args.dataset, args.config_dir, classes, args.test_data)
    vit = build_classifier(clip_model=loaded.model, model_config=loaded.model_config, classnames=classnames,
                           templates=templates, head_init="zeroshot", seed=0)
    zeroshot = {k: v.clone() for k, v in vit.state_dict().items()}
    with torch.no_grad():
        curve = wiseft_curve(model=vit, zeroshot_state=zeroshot, finetuned_state=finetuned, test_set=test_set,
                             alphas=args.alphas, batch_size=args.batch_size, workers=args.workers, device=device)
    by_alpha = {a: m for a, m in curve}
    best = max(curve, key=lambda am: am[1]["acc1"])
    metrics = dict(by_alpha[args.headline_alpha])
    metrics.update({f"acc1@alpha={a:g}": m["acc1"] for a, m in curve})
    metrics.update(alpha=args.headline_alpha, best_alpha=best[0], best_acc1=best[1]["acc1"])
    write_result(args.out, result_record(dataset=args.dataset, model=loaded.experiment, pretrained=args.checkpoint,
                                         task="wiseft", metrics=metrics, checkpoint=loaded.stage))
    if args.plot:
        plot_curve(curve, args.plot, f"WiSE-FT {loaded.experiment} / {args.dataset}")
    print(f"wiseft {args.dataset}: acc1@{args.headline_alpha:g}={metrics['acc1']:.4f}, best alpha {best[0]:g}")
    return 0
