"""WiSE-FT: accuracy of the weight-space interpolation (1 - alpha) * zero-shot + alpha * fine-tuned."""
from __future__ import annotations

import torch

from .loop import evaluate


def interpolate(zeroshot: dict, finetuned: dict, alpha: float) -> dict:
    """Mix floating-point tensors; integer buffers (counters) are taken from the fine-tuned model."""
    if zeroshot.keys() != finetuned.keys():
        raise ValueError("zero-shot and fine-tuned weights name different tensors")
    return {k: torch.lerp(zeroshot[k], finetuned[k], alpha) if zeroshot[k].is_floating_point() else finetuned[k]
            for k in zeroshot}


def wiseft_curve(*, model, zeroshot_state: dict, finetuned_state: dict, test_set, alphas: list[float],
                 batch_size: int, workers: int, device="cpu") -> list[tuple[float, dict]]:
    """[(alpha, test metrics)] for each alpha; `model` is loaded in place with each mixture."""
    curve = []
    for alpha in alphas:
        model.load_state_dict(interpolate(zeroshot_state, finetuned_state, alpha))
        metrics = evaluate(model.to(device), test_set, batch_size=batch_size, workers=workers, device=device)
        print(f"WiSE-FT alpha={alpha:g}: acc1={metrics['acc1']:.4f}", flush=True)
        curve.append((alpha, metrics))
    return curve


def plot_curve(curve: list[tuple[float, dict]], path, title: str) -> None:
    """Test top-1 against alpha (0 = zero-shot, 1 = fine-tuned), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...utils.io import atomic_path

    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    ax.plot([a for a, _ in curve], [100 * m["acc1"] for _, m in curve], marker="o")
    ax.set(xlabel="alpha (0 = zero-shot, 1 = fine-tuned)", ylabel="test top-1 (%)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
