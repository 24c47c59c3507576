"""Multi-view evaluation: softmax averaged over clips x crops, top-1/top-5, per-class accuracy, confusion.

Every sample is counted exactly once whatever the number of ranks: the loader gives each rank a disjoint
part of the data, and the ranks sum their confusion matrices (no padding duplicates in the totals).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal

import torch

from sifar.checkpoint import EMA_HELP, TrainedModel, load_trained
from sifar.config_fields import help_field, validate
from sifar.data import build_loader
from sifar.data.clip import ClipSettings, ViewSettings
from sifar.data.pipeline import LoaderSettings
from sifar.data.sampling import Mode
from sifar.data.transforms import device_clips
from sifar.distributed import all_reduce_sum
from sifar.io import write_json
from sifar.models import compile_model
from sifar.models.window_attention import ATTENTION_HELP, AttentionImpl
from sifar.precision import PRECISION_HELP, Precision, autocast_for
from sifar.progress import progress_bar

FrameOrder = Literal["normal", "reverse", "shuffle"]


@dataclass
class EvalResult:
    """Totals over the whole evaluation set (all ranks)."""

    confusion: torch.Tensor  # (classes, classes) int64, rows: true class, columns: top-1 prediction
    top5_correct: int
    unlabeled: int
    videos_per_s: float = 0.0  # this rank's speed after its first batch (compilation and warm-up excluded)

    @property
    def num_samples(self) -> int:
        return int(self.confusion.sum())

    @property
    def evaluated(self) -> int:
        """Videos evaluated, labelled or not (what coverage compares with the manifest)."""
        return self.num_samples + self.unlabeled

    @property
    def top1(self) -> float:
        return 100.0 * float(self.confusion.diag().sum()) / max(self.num_samples, 1)

    @property
    def top5(self) -> float:
        return 100.0 * self.top5_correct / max(self.num_samples, 1)

    def per_class(self) -> list[float | None]:
        totals = self.confusion.sum(1)
        return [None if t == 0 else 100.0 * float(self.confusion[i, i]) / float(t) for i, t in enumerate(totals)]

    def summary(self) -> dict[str, Any]:
        return {"top1": round(self.top1, 4), "top5": round(self.top5, 4), "num_samples": self.num_samples,
                "unlabeled": self.unlabeled, "videos_per_s": round(self.videos_per_s, 2)}


class IncompleteEvaluationError(ValueError):
    """Fewer videos were evaluated than the manifest lists (and a partial evaluation was not allowed)."""


@dataclass
class Coverage:
    """What an evaluation read of what the manifest lists, summed over all ranks and workers."""

    shards: list[tuple[str, int | None, int]]  # (shard, samples the manifest lists or None, samples read)
    skipped: int  # read, but dropped: frames that do not decode or are missing

    @property
    def expected(self) -> int | None:
        counts = [expected for _, expected, _ in self.shards]
        return None if any(count is None for count in counts) else sum(counts)

    def short_shards(self) -> list[tuple[str, int, int]]:
        """(shard, expected, read) of every shard read short of its manifest count."""
        return [(url, expected, read) for url, expected, read in self.shards
                if expected is not None and read < expected]

    def summary(self, evaluated: int) -> dict[str, Any]:
        return {"expected": self.expected, "evaluated": evaluated, "skipped": self.skipped,
                "short_shards": [{"shard": url, "expected": expected, "read": read}
                                 for url, expected, read in self.short_shards()]}


def evaluation_coverage(loader: Any, device: torch.device) -> Coverage:
    """The :class:`Coverage` of the evaluation ``loader`` has just run (on every rank: it all-reduces)."""
    reads = loader.shard_reads()
    stats = loader.stats
    counts = torch.tensor([read for _, _, read in reads] + [stats["bad_samples"] + stats["missing_frames"]],
                          dtype=torch.int64, device=device)
    all_reduce_sum(counts)
    totals = counts.tolist()
    return Coverage([(url, expected, read) for (url, expected, _), read in zip(reads, totals)], totals[-1])


def check_coverage(coverage: Coverage, evaluated: int, allow_partial: bool = False) -> None:
    """IncompleteEvaluationError when fewer videos were evaluated than the manifest lists, naming the shards
    that came up short (expected against read) and the samples skipped, unless ``allow_partial``."""
    expected = coverage.expected
    if allow_partial or expected is None or evaluated >= expected:
        return
    short = coverage.short_shards()
    shards = "; ".join(f"{url}: {read} of {count} read" for url, count, read in short[:10])
    more = f" and {len(short) - 10} more" if len(short) > 10 else ""
    raise IncompleteEvaluationError(
        f"evaluated {evaluated} of the {expected} videos the manifest lists: "
        + (f"{len(short)} shard(s) came up short ({shards}{more})" if short else "no shard came up short")
        + f"; {coverage.skipped} sample(s) skipped as undecodable or missing frames. "
        "Pass --allow-partial to accept a partial evaluation.")


def check_same_classes(expected: list[str], found: list[str] | None, expected_from: str, found_from: str) -> None:
    """ValueError naming the first difference between two class lists; ``found`` None (no manifest) passes.

    The number alone is not enough: the same names in another order would mislabel every prediction.
    """
    if found is None or list(found) == list(expected):
        return
    if len(found) != len(expected):
        raise ValueError(f"{found_from} has {len(found)} classes but {expected_from} has {len(expected)}")
    index = next(i for i, (a, b) in enumerate(zip(expected, found)) if a != b)
    raise ValueError(f"the class lists differ: class {index} is {found[index]!r} in {found_from} but "
                     f"{expected[index]!r} in {expected_from}; shard the split with the same class list "
                     f"(sifar-tools shard --classes <the training manifest>)")


def reorder_frames(frames: torch.Tensor, order: FrameOrder, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """Reverse or shuffle the time axis (dim -4) of (..., T, C, H, W) clips (paper Table 9)."""
    if order == "normal":
        return frames
    time_dim = frames.ndim - 4
    if order == "reverse":
        return frames.flip(time_dim)
    permutation = torch.randperm(frames.shape[time_dim], generator=generator)
    return frames.index_select(time_dim, permutation.to(frames.device))


def pad_clips(clips: torch.Tensor, size: int) -> torch.Tensor:
    """``clips`` with zero clips appended along dim 0 up to ``size``."""
    missing = size - clips.shape[0]
    return clips if missing <= 0 else torch.cat([clips, clips.new_zeros(missing, *clips.shape[1:])])


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable, device: torch.device, num_classes: int,
             precision: str = "auto", order: FrameOrder = "normal", seed: int = 0,
             pad: bool | None = None, progress: bool = False) -> EvalResult:
    """Evaluate ``model`` over ``loader`` (frames (B, V, T, C, H, W) or (B, T, C, H, W)); sums over ranks.
    ``progress``: a progress bar of batches where stderr is a terminal.

    ``pad`` (default: on CUDA): run a batch smaller than the largest so far padded with zero clips up to it
    (their outputs dropped), so the model sees one shape. Each loader worker ends its share on a partial
    batch, and on a GPU every new shape costs a compile of a ``torch.compile``-d model or of FlexAttention's
    kernels: on an H100, a compiled SIFAR-B-12 evaluated 320 videos with 14 workers at 3.2 clips/s unpadded.
    """
    pad = device.type == "cuda" if pad is None else pad
    padded_clips = 0
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    counts = torch.zeros(2, dtype=torch.int64, device=device)  # top-5 correct, unlabeled
    generator = torch.Generator().manual_seed(seed)
    speed = Throughput(device)
    for frames, labels, _keys in progress_bar(loader, progress, desc=f"evaluating ({order} frames)", unit="batch"):
        if frames.ndim == 5:
            frames = frames.unsqueeze(1)
        batch, views = frames.shape[:2]
        frames = reorder_frames(frames, order, generator)
        clips = device_clips(frames.flatten(0, 1), device, model.mean, model.std)
        if pad:
            padded_clips = max(padded_clips, len(clips))
            clips = pad_clips(clips, padded_clips)
        with autocast_for(device, precision):
            logits = model(clips)[:batch * views]
        probs = logits.float().softmax(-1).view(batch, views, -1).mean(1)
        # Label checks and masks are made on the CPU labels: no device-to-host sync per batch.
        if labels.numel() and int(labels.max()) >= num_classes:
            raise ValueError(f"label {int(labels.max())} is outside the model's {num_classes} classes")
        labeled = labels >= 0  # unlabeled (-1) samples of test splits count in no total
        counts[1] += int((~labeled).sum())
        targets = labels.clamp(min=0).to(device, non_blocking=True)
        weight = labeled.to(device, non_blocking=True).long()
        confusion.index_put_((targets, probs.argmax(-1)), weight, accumulate=True)
        top5 = probs.topk(min(5, num_classes), dim=-1).indices
        counts[0] += ((top5 == targets[:, None]).any(-1).long() * weight).sum()
        speed.done(batch)
    videos_per_s = speed.per_second()
    all_reduce_sum(confusion)
    all_reduce_sum(counts)
    return EvalResult(confusion=confusion.cpu(), top5_correct=int(counts[0]), unlabeled=int(counts[1]),
                      videos_per_s=videos_per_s)


class Throughput:
    """Items per second from the end of the first batch on, so compilation and warm-up stay out of it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start: float | None = None
        self.items = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def done(self, items: int) -> None:
        if self.start is None:
            self._sync()
            self.start = time.perf_counter()
        else:
            self.items += items

    def per_second(self) -> float:
        if self.start is None or not self.items:
            return 0.0
        self._sync()
        return self.items / (time.perf_counter() - self.start)


def write_eval_report(result: EvalResult, classes: list[str], output: Path, prefix: str = "",
                      extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """``<prefix>report.json`` (totals, per-class accuracy, confusion) and ``<prefix>confusion.png``."""
    from sifar.plots import plot_confusion

    output.mkdir(parents=True, exist_ok=True)
    report = {**result.summary(), **(extra or {}),
              "per_class": {name: acc for name, acc in zip(classes, result.per_class())},
              "confusion": result.confusion.tolist(), "classes": classes}
    paths = {"report": output / f"{prefix}report.json", "confusion": output / f"{prefix}confusion.png"}
    write_json(paths["report"], report)
    plot_confusion(result.confusion.numpy(), classes, paths["confusion"],
                   title=f"top-1 {result.top1:.1f}% on {result.num_samples} clips")
    return paths


# ---- a checkpoint on shards: what sifar-eval, the demo and the temporal study run -------------------------


@dataclass(frozen=True)
class EvalSettings:
    """How a checkpoint is evaluated. The clip and the weights default to the checkpoint's own: the clip
    it was trained on, and the weights training validated with (EMA when it kept them)."""

    split: str = help_field("val", "Split name, for shard folders.")
    views: ViewSettings = field(default_factory=ViewSettings)
    loader: LoaderSettings = field(default_factory=lambda: LoaderSettings(batch_size=16))  # videos per step
    ema: bool | None = help_field(None, EMA_HELP)
    sampling: Mode | None = help_field(None, "Frame sampling [default: the clip the checkpoint was trained on].")
    precision: Precision = help_field("auto", PRECISION_HELP)
    attention: AttentionImpl = help_field("auto", ATTENTION_HELP)
    compile: bool = help_field(False, "torch.compile the model (GPU: faster after warm-up).")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class CheckpointEvaluation:
    """Results of one checkpoint on one shard source, a result per frame order, and what was read."""

    checkpoint: str
    shards: str
    settings: EvalSettings
    trained: TrainedModel
    clip: ClipSettings
    results: dict[str, EvalResult]
    coverage: Coverage
    loader_stats: dict[str, int]

    def report_fields(self, order: str = "normal") -> dict[str, Any]:
        """What a report records beside the totals: the setup, the loader's counts and the coverage."""
        return {"checkpoint": self.checkpoint, "shards": self.shards, "clips": self.settings.views.clips,
                "crops": self.settings.views.crops, "frame_order": order, "weights": self.trained.weights,
                "clip": asdict(self.clip), "loader": self.loader_stats,
                **self.coverage.summary(self.results[order].evaluated)}

    def write_reports(self, folder: Path) -> dict[str, dict[str, Path]]:
        """``report.json`` and ``confusion.png`` per frame order (``reverse_report.json``, ...)."""
        return {order: write_eval_report(result, self.trained.classes, folder,
                                         prefix="" if order == "normal" else f"{order}_",
                                         extra=self.report_fields(order))
                for order, result in self.results.items()}


def evaluate_checkpoint(checkpoint: str | os.PathLike, shards: str | os.PathLike, settings: EvalSettings,
                        device: torch.device, rank: int = 0, world_size: int = 1,
                        orders: tuple[FrameOrder, ...] = ("normal",), seed: int = 0,
                        progress: bool = False) -> CheckpointEvaluation:
    """Load a checkpoint with its setup, stream ``shards`` as it was trained to see them, evaluate it in
    each frame order, and count what was read against the manifest (on every rank: it all-reduces).
    ``progress``: rank 0 shows a progress bar where stderr is a terminal.

    The shards' class list must be the checkpoint's (ValueError naming the first difference).
    """
    trained = load_trained(checkpoint, settings.ema, settings.attention)
    clip = trained.clip if settings.sampling is None else replace(trained.clip, sampling=settings.sampling)
    loader = build_loader(shards, clip, settings.loader, split=settings.split, training=False,
                          clips=settings.views.clips, crops=settings.views.crops, rank=rank, world_size=world_size)
    check_same_classes(trained.classes, loader.classes, f"the checkpoint {checkpoint}", f"the shards {shards}")
    model = trained.model.to(device)
    model = compile_model(model, training=False) if settings.compile else model
    results = {order: evaluate(model, loader, device, len(trained.classes), settings.precision, order, seed=seed,
                               progress=progress and rank == 0)
               for order in orders}
    return CheckpointEvaluation(str(checkpoint), str(shards), settings, trained, clip, results,
                                evaluation_coverage(loader, device), loader.stats)
