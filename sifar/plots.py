"""PNG plots of a run: loss and accuracy curves, and a confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Training loss per step and validation top-1/top-5 per epoch, side by side."""
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch" and "top1" in r]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    loss_ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1)
    loss_ax.set(xlabel="optimizer step", ylabel="training loss", title="loss")
    for key in ("top1", "top5"):
        acc_ax.plot([r["epoch"] for r in epochs], [r[key] for r in epochs], marker="o", label=key)
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy", ylim=(0, 100))
    acc_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str = "confusion") -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted)."""
    counts = np.asarray(matrix, dtype=float)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.35 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 60:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
