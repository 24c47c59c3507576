"""Where training numbers go: a JSONL file per step and epoch, TensorBoard when installed (the ``tb`` extra),
``curves.png`` rewritten at each epoch's end and at the end of the run."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

from sifar.io import atomic_write, write_json
from sifar.plots import plot_curves


TENSORBOARD_MISSING = ('--tensorboard: TensorBoard is not installed (pip install -e ".[tb]"); '
                       'metrics.jsonl and curves.png are written all the same')


SUMMED = ("wait_s",)  # step values that are amounts over the step, not states at its end


class MetricsLog:
    """Rank 0 writes ``metrics.jsonl`` (one JSON object per epoch, and per ``log_interval`` optimizer steps) and
    TensorBoard scalars (``tensorboard``: True, False, or None for "when installed")."""

    def __init__(self, output: Path, enabled: bool = True, tensorboard: bool | None = None,
                 log_interval: int = 1) -> None:
        self.output = output
        self.enabled = enabled
        self.path = output / "metrics.jsonl"
        self.log_interval = log_interval
        self._left_out: dict[str, float] = {}  # amounts of the steps a log interval left out, since the last record
        self._tensorboard = None
        if enabled and use_tensorboard(tensorboard, tensorboard_installed()):
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(output / "tensorboard"))
        elif enabled and tensorboard:
            print(TENSORBOARD_MISSING, file=sys.stderr)

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
        """Record optimizer step ``step`` if it is one of every ``log_interval``. Amounts that add up over
        steps (:data:`SUMMED`: the seconds waited for data) count the left-out steps too, so a thinned log
        still sums to the whole run's."""
        for name in SUMMED:
            if name in values:
                values[name] += self._left_out.pop(name, 0.0)
        if step % self.log_interval:
            self._left_out.update({name: values[name] for name in SUMMED if name in values})
            return
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

    def plot(self) -> None:
        """Rewrite ``curves.png`` from what is logged so far (at each epoch's end: a killed run has one)."""
        if self.enabled:
            plot_curves(read_metrics(self.path), self.output / "curves.png")

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.enabled:
            return
        write_json(self.output / "summary.json", summary)
        self.plot()
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tensorboard_installed() -> bool:
    """True when the ``tensorboard`` package (which torch's SummaryWriter needs) can be imported."""
    return importlib.util.find_spec("tensorboard") is not None


def use_tensorboard(asked: bool | None, installed: bool) -> bool:
    """Whether a run writes TensorBoard scalars: when asked (None: not said) and installed."""
    return installed and asked is not False
