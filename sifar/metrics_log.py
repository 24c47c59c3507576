"""Where training numbers go: a JSONL file per step and epoch, TensorBoard when installed, PNG plots at the end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sifar.io import atomic_write
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

    def rewind(self, step: int, epoch: int) -> None:
        """Keep only what a run resumed at ``step`` (in epoch ``epoch``) has done: records of later steps and
        epochs (logged after the checkpoint, before a crash) and a half-written last line are dropped, so
        each step appears once after the run goes on."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a crash cut short
            if (record.get("kind") == "step" and record.get("step", 0) <= step) or \
                    (record.get("kind") == "epoch" and record.get("epoch", 0) <= epoch):
                kept.append(line + "\n")
        with atomic_write(self.path, "w") as handle:
            handle.writelines(kept)

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
