"""`python -m pipeline <stage> [args]`: one entry per Snakemake rule, spelled as the rule and its config section.

Stages with a process group (pretrain, finetune and the distributed evaluations) re-run themselves under
torchrun (pipeline.launch); every evaluation registered in pipeline.evaluate is a stage of its own.
"""
from __future__ import annotations

import importlib
import sys

# stage -> module whose main(argv) runs it (imported lazily: torch is slow to import)
STAGES = {
    "data": "pipeline.data.cli",
    "pretrain": "pipeline.train.cli",
    "finetune": "pipeline.train.cli",
    "table": "pipeline.report.cli",
    "table_group": "pipeline.report.cli",
    "findings": "pipeline.report.findings",
    "curves": "pipeline.report.curves",
    "check-config": "pipeline.preflight",
}
EVALUATION_CLI = "pipeline.evaluate._cli"


def stages() -> dict[str, str]:
    """Every stage and the module running it: the fixed ones, then one per registered evaluation."""
    from .evaluate import evaluations

    return {**STAGES, **{e.name: EVALUATION_CLI for e in evaluations()}}


def main(argv: list[str] | None = None, *, launch: bool = False) -> int:
    """Run one stage. `launch` (the command line) re-runs a distributed stage under torchrun; called in-process
    (tests), every stage runs here as a single process."""
    argv = list(sys.argv[1:] if argv is None else argv)
    known = stages() if argv and argv[0] not in STAGES else STAGES
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in known:
        names = ", ".join(stages())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"pipeline: unknown stage {argv[0]!r} (stages: {names})", file=sys.stderr)
            return 2
        print(f"usage: python -m pipeline <stage> [args]\nstages: {names}")
        return 0
    from . import launch as launcher
    from .errors import run_main

    if launch and launcher.inside_launch():
        launcher.die_with_launcher()
    elif launch and launcher.is_distributed(argv[0]):
        return run_main(launcher.main, argv)
    return run_main(importlib.import_module(known[argv[0]]).main, argv)


if __name__ == "__main__":
    sys.exit(main(launch=True))
