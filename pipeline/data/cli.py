"""`python -m pipeline data --dataset NAME --out data/NAME/stats.json [--config-dir config]`."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import CONFIG_DIR, load_dataset
from .build import build_dataset


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline data",
                                     description="Build data/NAME (shards or image folder) and its stats.json.")
    parser.add_argument("--dataset", required=True, help="config/datasets/<NAME>.yaml")
    parser.add_argument("--out", required=True, help="stats.json to write; its folder is the dataset's data folder")
    parser.add_argument("--config-dir", default=str(CONFIG_DIR),
                        help="config folder; relative sources resolve against its parent (the repository root)")
    args = parser.parse_args(argv[1:])
    config_dir = Path(args.config_dir).resolve()
    dataset = load_dataset(args.dataset, config_dir)
    out = Path(args.out)
    started = time.time()
    build_dataset(dataset=dataset, data_dir=out.parent, base_dir=config_dir.parent, stats_path=out)
    print(f"data stage for {dataset.name} took {time.time() - started:.1f}s", flush=True)
    return 0
