"""Where training numbers go: a JSONL file per step and epoch, TensorBoard when installed, PNG plots at the end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sifar.plots import plot_curves


class MetricsLog:
    """Rank 0 writes ``metrics.jsonl`` (one JSON object per step or epoch) and TensorBoard scalars."""

    def __init__(self, output: Path, enabled: bool = True) -> None:
        self.output = output
        self.enabled = enabled
        self.path = output / "metrics.jsonl"
        self._tensorboard = _tensorboard_writer(output / "tensorboard") if enabled else None

    def _write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def step(self, step: int, **values: float) -> None:
        self._write({"kind": "step", "step": step, **values})
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(f"train/{name}", value, step)

    def epoch(self, epoch: int, **values: Any) -> None:
        self._write({"kind": "epoch", "epoch": epoch, **values})
        if self._tensorboard is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(f"val/{name}", value, epoch)

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.enabled:
            return
        (self.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_curves(read_metrics(self.path), self.output / "curves.png")
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(folder))
