"""`python -m pipeline check-config <experiment>`: validate and print the resolved config as JSON."""
from __future__ import annotations

import argparse
import json

from . import load_experiment, to_dict


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline check-config")
    parser.add_argument("experiment", help="experiment name (config/experiments/<name>.yaml) or path")
    args = parser.parse_args(argv[1:])
    print(json.dumps(to_dict(load_experiment(args.experiment)), indent=2))
    return 0
