"""`python -m pipeline <stage> [args]`: one entry per Snakemake rule; each stage module has main(argv)."""
from __future__ import annotations

import importlib
import sys

# stage -> module whose main(argv) runs it (imported lazily: torch is slow to import)
STAGES = {
    "data": "pipeline.data.cli",
    "pretrain": "pipeline.train.cli",
    "finetune": "pipeline.train.cli",
    "zeroshot": "pipeline.evaluate.cli",
    "linear-probe": "pipeline.evaluate.cli_linear",
    "finetune-eval": "pipeline.evaluate.cli_finetune",
    "wiseft": "pipeline.evaluate.cli_wiseft",
    "supervised-baseline": "pipeline.evaluate.cli_supervised",
    "retrieval": "pipeline.evaluate.cli_retrieval",
    "table": "pipeline.report.cli",
    "table-group": "pipeline.report.cli",
    "curves": "pipeline.report.curves",
    "check-config": "pipeline.config.cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STAGES:
        known = ", ".join(STAGES)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"pipeline: unknown stage {argv[0]!r} (stages: {known})", file=sys.stderr)
            return 2
        print(f"usage: python -m pipeline <stage> [args]\nstages: {known}")
        return 0
    from .errors import run_main

    return run_main(importlib.import_module(STAGES[argv[0]]).main, argv)


if __name__ == "__main__":
    sys.exit(main())
