"""Training curves of an experiment's stages in one figure (for the results table and `snakemake --report`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError
from ..utils.io import atomic_path


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: metrics file not found")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}: line {number}: not JSON") from None
    return rows


def plot_curves(*, metrics: dict[str, list[dict]], out: str | Path, title: str) -> None:
    """Loss and logit scale against samples seen; one line per stage, stages laid end to end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_scale) = plt.subplots(1, 2, figsize=(10, 3.5))
    offset = 0
    for stage, rows in metrics.items():
        if not rows:
            continue
        x = [offset + r["samples"] for r in rows]
        ax_loss.plot(x, [r["loss"] for r in rows], label=stage)
        ax_scale.plot(x, [r.get("logit_scale", float("nan")) for r in rows], label=stage)
        offset = x[-1]
    ax_loss.set(xlabel="samples seen", ylabel="training loss", title=title)
    ax_scale.set(xlabel="samples seen", ylabel="logit scale")
    if metrics:
        ax_loss.legend()
    else:  # every row comes from evaluate.checkpoints: nothing was trained here
        ax_loss.text(0.5, 0.5, "no training stage", ha="center", va="center", transform=ax_loss.transAxes)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline curves")
    parser.add_argument("--metrics", nargs="*", required=True,
                        help="STAGE=metrics.jsonl, in stage order (none: an experiment that only evaluates files)")
    parser.add_argument("--title", required=True, help="figure title (the experiment name)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv[1:])
    metrics = {}
    for item in args.metrics:
        stage, sep, path = item.partition("=")
        if not sep:
            raise UserError(f"--metrics: expected STAGE=PATH, got {item!r}")
        metrics[stage] = read_metrics(path)
    plot_curves(metrics=metrics, out=args.out, title=args.title)
    print(f"wrote {args.out}")
    return 0
