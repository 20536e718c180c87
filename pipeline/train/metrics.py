"""Training logs beside the checkpoints: metrics.jsonl, tensorboard events, loss.png."""
from __future__ import annotations

import json
from pathlib import Path

from ..utils.io import append_line, atomic_path, read_jsonl, write_text


class MetricsLog:
    """Appends one JSON line per logged step (live progress); on resume, lines past the resumed
    step (written after the checkpoint by the killed run) are dropped first."""

    def __init__(self, folder: Path, *, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = Path(folder) / "metrics.jsonl"
        self.records: list[dict] = []
        if not enabled:
            return
        if self.path.is_file():
            # a partial last line (an append cut by a kill or a full disk) is dropped, not trusted
            self.records = [r for r in read_jsonl(self.path) if r["step"] <= resume_step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        from torch.utils.tensorboard import SummaryWriter

        self.board = SummaryWriter(str(Path(folder) / "tensorboard"), purge_step=resume_step + 1)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.records.append(record)
        append_line(self.path, json.dumps(record))
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.board.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.board.close()
            plot_loss(self.records, Path(self.path.parent) / "loss.png")


def plot_loss(records: list[dict], path: Path) -> None:
    """Loss and learning rate against samples seen."""
    if not records:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["samples"] for r in records], [r["loss"] for r in records], label="loss")
    ax.set_xlabel("samples seen")
    ax.set_ylabel("loss")
    lr_ax = ax.twinx()
    lr_ax.plot([r["samples"] for r in records], [r["lr"] for r in records], color="tab:orange", alpha=0.5)
    lr_ax.set_ylabel("learning rate")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
