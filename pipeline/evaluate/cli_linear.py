"""`python -m pipeline linear-probe --checkpoint C --dataset NAME --train-data TR/stats.json
--test-data TE/stats.json --out R.json [--cache-dir DIR]`: logistic regression on frozen features."""
from __future__ import annotations

import argparse
import time

from ..errors import UserError
from .checkpoint import load_for_eval
from .cli import resolve_device
from .features import cached_features
from .linear_probe import linear_probe
from .results import result_record, write_result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline linear-probe", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="final checkpoint (results/E/<stage>/final.pt)")
    p.add_argument("--dataset", required=True, help="name written into the result (the test set's name)")
    p.add_argument("--train-data", required=True, help="stats.json of the training split")
    p.add_argument("--test-data", required=True, help="stats.json of the test split")
    p.add_argument("--out", required=True, help="result JSON, written atomically")
    p.add_argument("--cache-dir", help="folder for cached features (reused while checkpoint and data are unchanged)")
    p.add_argument("--c-values", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3],
                   help="inverse L2 strengths swept on the validation split")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of train held out to choose C")
    p.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations per fit")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split and the solver")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv[1:])
    if not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction: {args.val_fraction} must lie strictly between 0 and 1")
    if any(c <= 0 for c in args.c_values):
        raise UserError("--c-values: every C must be > 0")
    device = resolve_device(args.device)
    loaded = load_for_eval(args.checkpoint)
    start = time.time()
    common = dict(model=loaded.model, model_config=loaded.model_config, checkpoint=args.checkpoint,
                  cache_dir=args.cache_dir, batch_size=args.batch_size, workers=args.workers, device=device)
    train_x, train_y, train_classes = cached_features(stats_path=args.train_data, **common)
    test_x, test_y, test_classes = cached_features(stats_path=args.test_data, **common)
    if train_classes != test_classes:
        raise UserError(f"{args.test_data}: classes: differ from {args.train_data}'s (same label space needed)")
    metrics = linear_probe(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                           num_classes=len(train_classes), c_values=args.c_values, val_fraction=args.val_fraction,
                           max_iter=args.max_iter, seed=args.seed)
    write_result(args.out, result_record(dataset=args.dataset, model=loaded.experiment, pretrained=args.checkpoint,
                                         task="linear_probe", metrics=metrics, checkpoint=loaded.stage))
    print(f"linear probe {args.dataset} ({len(train_y)} train / {len(test_y)} test, {time.time() - start:.1f} s): "
          f"lp_acc1={metrics['lp_acc1']:.4f} (C={metrics['C']:g})")
    return 0
