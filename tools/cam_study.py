"""Issue 28, goal 3: class activation maps that can be checked, by the pointing game on held-out clips whose
object boxes are known (the synthetic dataset's: ``sifar-tools synth``, then ``sifar-tools shard``).

For the first ``--clips`` samples of the val split in shard order (the shard writer shuffled them, so every
class comes), the tool builds sifar-eval's single centre view (uniform ``eval_indices`` with one clip, the
stored frames resized on the short side to the model's frame size and centre-cropped) and maps each sampled
frame's box through the same resize and crop. It draws the map of the ground-truth class with each method and
scores each frame: a hit when the frame's hottest pixel lies inside its box; frames where the object is
invisible do not count. A uniformly random point hits with the box's share of the frame: the random baseline.

Each map can be drawn from several backbone stages (``--stages``, counted from 0; -1 the last, the paper's):
the last stage of a 64 px frame has 2x2 positions, too coarse to point at a small object (``sifar.cam``).

``<output>/cam_results.json`` holds the scores per stage and method (overall and per class) and the model's
top-1 on the same clips; ``<output>/cam_strips.png`` one clip of each class, its frames left to right, with
the Ablation-CAM heat of the first stage asked for and the box.

    python -m tools.cam_study --checkpoint /tmp/ts/runs/sifar_3x3/last.pt --shards /tmp/ts/data/shards \\
        --output /tmp/cam --clips 500 --methods ablation,gradcam --stages -1,2
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import click
import torch
from PIL import Image, ImageDraw

from sifar.cam import (
    METHODS,
    Box,
    ClassActivationMap,
    box_share,
    class_activation_maps,
    frame_cells,
    frame_heatmaps,
    head_pools_positions,
    overlay,
    pointing_hits,
)
from sifar.checkpoint import TrainedModel, load_checkpoint, saved_setup, trained_model
from sifar.cli.options import comma_items
from sifar.data.clip import ClipSettings
from sifar.data.decoders import JpegDecoder
from sifar.data.sampling import eval_indices
from sifar.data.shard_format import SampleInfo
from sifar.data.shard_reader import StoredSample, read_shard
from sifar.data.sources import resolve_source
from sifar.data.transforms import crop_offset, crop_places, device_clips, resize_short_side, spatial_crops
from sifar.distributed import local_device
from sifar.evaluate import check_same_classes
from sifar.io import atomic_write, write_json

SPLIT = "val"
RESULTS_FILE, STRIPS_FILE = "cam_results.json", "cam_strips.png"
STRIP_METHOD = "ablation"  # the paper's (Fig. 5); the strips fall back on the first method asked for
MIN_FRAME_SIDE = 96  # each frame of the strips is upscaled (nearest) to at least this many pixels
LABEL_HEIGHT, GAP = 14, 4  # pixels: a row's label line, and the space between frames and between rows
Item = TypeVar("Item")


@dataclass
class HeldOutClip:
    """One held-out sample as sifar-eval's centre view shows it, with its object's box in each frame."""

    key: str
    label: int
    frames: torch.Tensor  # (T, C, S, S) uint8
    boxes: list[list[int] | None]  # in pixels of the view; None: invisible, or outside the crop


def pools_positions(model: torch.nn.Module, device: torch.device) -> bool:
    """:func:`sifar.cam.head_pools_positions` on the features of a random clip (a property of the head)."""
    clip = torch.randn(1, model.num_frames, 3, model.frame_size, model.frame_size,
                       generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        return head_pools_positions(model, model.feature_map(clip))


def positions_per_frame(model: torch.nn.Module, stage: int, device: torch.device) -> str:
    """How finely stage ``stage``'s feature map sees one frame, e.g. "2x2" (its positions over a frame cell)."""
    clip = torch.zeros(1, model.num_frames, 3, model.frame_size, model.frame_size, device=device)
    with torch.no_grad():
        height, width = model.feature_map(clip, stage).shape[-2:]
    rows, cols = model.grid
    return f"{height / rows:g}x{width / cols:g}"


def centre_view_box(box: Box | None, stored: tuple[int, int], resized: tuple[int, int], size: int
                    ) -> list[int] | None:
    """A box in pixels of a stored (height, width) frame, in pixels of its centre view: the frame resized to
    ``resized`` (height, width), then the centre ``size x size`` crop where ``spatial_crops`` places it. Widened
    to whole pixels (exact integer arithmetic) and clipped to the view; None when nothing of it is left."""
    if box is None:
        return None
    (height, width), (new_height, new_width) = stored, resized
    top, left = crop_offset(new_height, new_width, size, crop_places(1)[0])
    x0, y0 = box[0] * new_width // width - left, box[1] * new_height // height - top
    x1, y1 = -(-box[2] * new_width // width) - left, -(-box[3] * new_height // height) - top
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    return [x0, y0, x1, y1] if x0 < x1 and y0 < y1 else None


def centre_view(sample: StoredSample, clip: ClipSettings, decoder: JpegDecoder) -> HeldOutClip:
    """sifar-eval's single centre view of a stored sample (its loader's evaluation path with one clip and one
    crop), and each sampled frame's box mapped into it."""
    info = SampleInfo.parse(sample.meta, sample.key)
    boxes = sample.meta.get("boxes")
    if boxes is None:
        raise ValueError(f"sample {sample.key} carries no object boxes: shard a dataset made by sifar-tools synth "
                         f"(or a csv list with a boxes column)")
    indices = eval_indices(info.num_frames, clip.num_frames, 1, clip.sampling, clip.stride)[0]
    decoded = decoder.frames(dict(enumerate(sample.frames)), indices, clip.frame_size, info.stored_short_side)
    resized = resize_short_side(decoded, clip.frame_size)
    view_boxes = [centre_view_box(boxes[i], (info.height, info.width), tuple(resized.shape[-2:]), clip.frame_size)
                  for i in indices]
    return HeldOutClip(info.key, info.label, spatial_crops(resized, clip.frame_size, 1)[0], view_boxes)


def held_out_clips(trained: TrainedModel, shards: str, count: int) -> Iterator[HeldOutClip]:
    """The first ``count`` samples of the val split in shard order, as :func:`centre_view` shows them."""
    source = resolve_source(shards, SPLIT)
    found = source.manifest.classes if source.manifest is not None else None
    check_same_classes(trained.classes, found, "the checkpoint", f"the shards {shards}")
    decoder = JpegDecoder()
    samples = (sample for shard in source.shards for sample in read_shard(shard))
    return (centre_view(sample, trained.clip, decoder) for sample in islice(samples, count))


def batches(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass
class Score:
    """Pointing-game counts: frames hit and counted, box shares summed (the random baseline), clips."""

    hits: int = 0
    counted: int = 0
    chance: float = 0.0
    clips: int = 0

    def add(self, hits: Sequence[bool | None], boxes: Sequence[Box | None], size: int) -> None:
        scored = [(hit, box) for hit, box in zip(hits, boxes) if hit is not None]
        self.hits += sum(hit for hit, _ in scored)
        self.counted += len(scored)
        self.chance += sum(box_share(box, size, size) for _, box in scored)
        self.clips += 1

    def summary(self) -> dict[str, Any]:
        def percent(value: float) -> float | None:
            return round(100 * value / self.counted, 2) if self.counted else None

        return {"pointing_accuracy": percent(self.hits), "random_baseline": percent(self.chance),
                "frames_counted": self.counted, "clips": self.clips}


@dataclass
class MethodScores:
    overall: Score = field(default_factory=Score)
    per_class: dict[int, Score] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, clip: HeldOutClip, cam: ClassActivationMap) -> None:
        hits = pointing_hits(frame_heatmaps(cam), clip.boxes)
        size = clip.frames.shape[-1]
        self.overall.add(hits, clip.boxes, size)
        self.per_class.setdefault(clip.label, Score()).add(hits, clip.boxes, size)

    def summary(self, classes: Sequence[str]) -> dict[str, Any]:
        return {**self.overall.summary(), "seconds": round(self.seconds, 2),
                "per_class": {classes[i]: self.per_class[i].summary() for i in sorted(self.per_class)}}


@dataclass
class StripRow:
    clip: HeldOutClip
    cam: ClassActivationMap


@dataclass
class Study:
    """What the clips gave: each (stage, method)'s scores, the clips, how many the model classified right, and
    the first clip of each class with its map for the strips."""

    scores: dict[tuple[int, str], MethodScores]
    clips: int = 0
    correct: int = 0
    strips: dict[int, StripRow] = field(default_factory=dict)


def run_study(trained: TrainedModel, clips: Iterable[HeldOutClip], methods: Sequence[str], stages: Sequence[int],
              device: torch.device, batch_size: int) -> Study:
    """Score every clip with every method at every stage; ``batch_size`` clips share each backbone pass."""
    model = trained.model.to(device).eval()
    study = Study({(stage, method): MethodScores() for stage in stages for method in methods})
    strip_map = (stages[0], STRIP_METHOD if STRIP_METHOD in methods else methods[0])
    for batch in batches(clips, batch_size):
        frames = device_clips(torch.stack([clip.frames for clip in batch]), device, model.mean, model.std)
        labels = [clip.label for clip in batch]
        for stage, method in study.scores:
            began = time.perf_counter()
            cams = class_activation_maps(model, frames, trained.classes, labels, method, stage=stage)
            scores = study.scores[stage, method]
            scores.seconds += time.perf_counter() - began  # the maps are on the CPU: the GPU is done
            for clip, cam in zip(batch, cams):
                scores.add(clip, cam)
                if (stage, method) == strip_map:
                    study.strips.setdefault(clip.label, StripRow(clip, cam))
        study.clips += len(batch)
        study.correct += sum(int(cam.probabilities.argmax()) == cam.class_index for cam in cams)  # any method's
    return study


def strip_label(row: StripRow, classes: Sequence[str]) -> str:
    predicted = int(row.cam.probabilities.argmax())
    return (f"{row.cam.class_name} ({row.clip.key}): predicted {classes[predicted]} "
            f"{float(row.cam.probabilities[predicted]):.1%}")


def strips_image(rows: Sequence[StripRow], classes: Sequence[str]) -> Image.Image:
    """One row per clip: a label line, then its frames left to right, each overlaid with the map's heat and
    its box outlined, upscaled (nearest) to at least MIN_FRAME_SIDE pixels."""
    size = rows[0].clip.frames.shape[-1]
    scale = math.ceil(MIN_FRAME_SIDE / size)
    side, frames_per_row = size * scale, rows[0].cam.num_frames
    row_height = LABEL_HEIGHT + side + GAP
    canvas = Image.new("RGB", (frames_per_row * (side + GAP) - GAP, len(rows) * row_height - GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        top = r * row_height
        draw.text((2, top + 1), strip_label(row, classes), fill="black")
        frames = frame_cells(overlay(row.cam.image, row.cam.heatmap), row.cam.grid, row.cam.num_frames)
        for t, (frame, box) in enumerate(zip(frames, row.clip.boxes)):
            left, frame_top = t * (side + GAP), top + LABEL_HEIGHT
            picture = Image.fromarray(frame.permute(1, 2, 0).numpy()).resize((side, side), Image.NEAREST)
            canvas.paste(picture, (left, frame_top))
            if box is not None:
                x0, y0, x1, y1 = (v * scale for v in box)
                draw.rectangle((left + x0, frame_top + y0, left + x1 - 1, frame_top + y1 - 1), outline="white",
                               width=2)
    return canvas


def parse_methods(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    methods = comma_items(value)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise click.BadParameter(f"expected a comma-separated list of {', '.join(METHODS)}, got {value!r}")
    return methods


def parse_stages(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        stages = tuple(int(item) for item in comma_items(value))
    except ValueError:
        stages = ()
    if not stages:
        raise click.BadParameter(f"expected comma-separated stage numbers (from 0; -1 the last), got {value!r}")
    return stages


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A sifar training checkpoint (last.pt / best.pt).")
@click.option("--shards", required=True, help="Shard folder (or manifest) whose val split carries object boxes.")
@click.option("--clips", default=500, show_default=True, type=click.IntRange(min=1),
              help="The first N samples of the val split, in shard order.")
@click.option("--methods", default=",".join(METHODS), show_default=True, callback=parse_methods,
              help=f"Comma-separated CAM methods: {', '.join(METHODS)}.")
@click.option("--stages", default="-1", show_default=True, callback=parse_stages,
              help="Comma-separated backbone stages whose feature maps are weighed, from 0 (-1: the last).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Clips per backbone pass.")
@click.option("--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help=f"Folder for {RESULTS_FILE} and {STRIPS_FILE}.")
def main(checkpoint: Path, shards: str, clips: int, methods: tuple[str, ...], stages: tuple[int, ...], device: str,
         batch_size: int, out: Path) -> None:
    """Score class activation maps of the ground-truth class by the pointing game on held-out clips."""
    try:
        results = score_checkpoint(checkpoint, shards, clips, methods, local_device(device), batch_size, out, stages)
    except (OSError, ValueError) as err:  # no such shards, classes that differ, a sample that cannot be read,
        raise click.ClickException(str(err)) from err  # a stage the backbone lacks
    for stage, found in results["stages"].items():
        for method, summary in found["methods"].items():
            click.echo(f"stage {stage} ({found['positions_per_frame']} positions a frame), {method}: pointing "
                       f"{summary['pointing_accuracy']}% of {summary['frames_counted']} frames (random "
                       f"{summary['random_baseline']}%), {summary['seconds']} s")
    click.echo(f"top-1 {results['top1']}% on {results['clips']} clips; {out / RESULTS_FILE}, {out / STRIPS_FILE}")


def score_checkpoint(checkpoint: Path, shards: str, clips: int, methods: Sequence[str], device: torch.device,
                     batch_size: int, out: Path, stages: Sequence[int] = (-1,)) -> dict[str, Any]:
    """The pointing game of ``checkpoint`` on the first ``clips`` held-out clips of ``shards``, for each method at
    each backbone stage: writes and returns ``<out>/cam_results.json`` and writes ``<out>/cam_strips.png`` (what
    the command does; the temporal study calls it for its rows). ValueError or OSError for shards it cannot use
    or a stage the backbone lacks."""
    began = time.perf_counter()
    saved = load_checkpoint(checkpoint)
    trained = trained_model(saved, checkpoint, attention="sdpa")  # FlexAttention compiles a kernel per batch shape
    model = trained.model
    stages = list(dict.fromkeys(model.stage_index(stage) for stage in stages))
    study = run_study(trained, held_out_clips(trained, shards, clips), methods, stages, device, batch_size)
    if not study.clips:
        raise ValueError(f"the {SPLIT} split of {shards} holds no samples")
    out.mkdir(parents=True, exist_ok=True)
    rows = [study.strips[label] for label in sorted(study.strips)]
    with atomic_write(out / STRIPS_FILE, "wb") as handle:
        strips_image(rows, trained.classes).save(handle, format="PNG", optimize=True)
    results = {
        "model": saved_setup(saved)[0].name, "backbone": model.name, "checkpoint": str(checkpoint),
        "weights": trained.weights,
        "layout": "{}x{}".format(*model.grid), "num_frames": model.num_frames, "frame_size": model.frame_size,
        "shards": str(shards), "split": SPLIT,
        "selection": f"the first {study.clips} samples of the split in shard order",
        "clips": study.clips, "top1": round(100 * study.correct / study.clips, 2), "device": str(device),
        "head_pools_positions": pools_positions(model, device),
        "seconds": round(time.perf_counter() - began, 2),
        "stages": {str(stage): {"positions_per_frame": positions_per_frame(model, stage, device),
                                "methods": {method: study.scores[stage, method].summary(trained.classes)
                                            for method in methods}}
                   for stage in stages},
        "strips": {"file": STRIPS_FILE, "method": rows[0].cam.method, "stage": rows[0].cam.stage,
                   "clips": {row.cam.class_name: row.clip.key for row in rows}},
        "command": shlex.join(["python", "-m", "tools.cam_study", "--checkpoint", str(checkpoint), "--shards",
                               str(shards), "--output", str(out), "--clips", str(clips), "--methods",
                               ",".join(methods), "--stages", ",".join(map(str, stages)), "--device",
                               str(device), "--batch-size", str(batch_size)]),
    }
    write_json(out / RESULTS_FILE, results)
    return results


if __name__ == "__main__":
    main()
