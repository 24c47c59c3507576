"""The sweep that chose the demo's model and the turning objects' size: held-out top-1 against optimizer
steps for super-image classifiers trained from scratch on the synthetic dataset (docs/RESULTS.md).

Clips are rendered in memory by the generator (no video or JPEG coding, so no ffmpeg needed: it runs as it
is on a GPU machine), split as ``sifar-tools demo`` splits its 2000 videos (1600 train, 400 held out), and
sampled and cropped by the loader's own functions (uniform segments, multi-scale crops, no flip); the
held-out clips are the centre frames of each segment, whole frame resized, as evaluation takes them.

One JSON object per line of ``--specs`` is one run, e.g.::

    {"model": "SIFAR-VGG-T", "steps": 1200, "lr": 2e-3, "seed": 1}
    {"model": "vgg-conv7", "frame_size": 24, "steps": 1200, "lr": 2e-3}
    {"model": "resnet18", "frame_size": 32, "steps": 1200, "lr": 1e-3}

``model`` is a registered name (any frame size the model takes) or one of the variants of
:class:`sifar.models.vgg.PositionalCNN` below (what the large-kernel layer or the head is replaced with).
Other keys: frame_size (24), batch (32), steps, lr, weight_decay (0.05), smoothing (0.1), warmup (100
steps, then cosine to 1% of lr), seed (0), every (held-out evaluation interval). Data variants:
``--turn-radius 0.22,0.3`` and ``--turn-degrees 360,540`` change the turning objects, ``--videos`` and
``--val-fraction`` the split, ``--solid-turning`` draws turning objects without texture.

    python -m tools.demo_recipe_sweep --specs specs.jsonl --workers 8 > results.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from torch import nn

from sifar.data import synth
from sifar.data.sampling import eval_indices, train_indices
from sifar.data.transforms import draw_crop_jitter, eval_transform, normalize, train_transform
from sifar.models import create_model
from sifar.models.cnn import LargeKernelBottleneck
from sifar.models.vgg import PositionalCNN

FRAMES, SEGMENTS, SIZE = 16, 8, 64


class GatedHead(nn.Module):
    """A bilinear (GLU-style) head: the product of two projections of the flattened map."""

    def __init__(self, features: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.project, self.out = nn.Linear(features, 2 * hidden), nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.project(x.flatten(1)).chunk(2, -1)
        return self.out(a * b)


class FramePooledHead(nn.Module):
    """Features averaged within each frame's cell of a 3x3 grid, then an MLP over the nine cells."""

    def __init__(self, channels: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(9 * channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(nn.functional.adaptive_avg_pool2d(x, 3))


def variant(name: str, frame_size: int, num_classes: int) -> nn.Module:
    """A PositionalCNN (on a 3x3 grid) with its large-kernel mixer or head swapped, or a timm ResNet."""
    if name.startswith("resnet"):
        import timm

        return timm.create_model(name, num_classes=num_classes)
    model = PositionalCNN(num_classes, (3 * frame_size, 3 * frame_size))
    channels, cells = model.num_features, model.feature_size[0] * model.feature_size[1]
    mixers = {
        "vgg": nn.Identity(),
        "vgg-conv7": nn.Sequential(nn.Conv2d(channels, channels, 7, padding=3, bias=False), nn.BatchNorm2d(channels),
                                   nn.ReLU(inplace=True)),
        "vgg-bottleneck7": LargeKernelBottleneck(channels, 7),
        "vgg-bottleneck7-r2": LargeKernelBottleneck(channels, 7, reduction=2),
        "vgg-glu": nn.Identity(), "vgg-framepool": nn.Identity(),
    }
    model.stages[-1] = mixers[name]
    if name == "vgg-glu":
        model.pre_logits, model.fc = nn.Identity(), GatedHead(channels * cells, 256, num_classes)
    if name == "vgg-framepool":
        model.pre_logits, model.fc = nn.Identity(), FramePooledHead(channels, 256, num_classes)
    return model


def build(spec: dict, num_classes: int) -> nn.Module:
    name, frame_size = spec["model"], spec.get("frame_size", 24)
    if name.upper().startswith("SIFAR"):
        return create_model(name, num_classes, frame_size=frame_size, drop_path_rate=0.0).backbone
    return variant(name, frame_size, num_classes)


def render(videos: list[synth.SynthVideo], classes: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
    clips = [torch.from_numpy(synth.render_clip(v.class_name, np.random.default_rng(v.seed), FRAMES, SIZE, SIZE).frames)
             for v in videos]
    return clips, torch.tensor([classes.index(v.class_name) for v in videos])


class TrainingClips(torch.utils.data.Dataset):
    """Clip ``k`` of a run: a random training video, random frames per segment, a random multi-scale crop."""

    def __init__(self, clips: list[torch.Tensor], labels: torch.Tensor, frame_size: int, seed: int, length: int):
        self.clips, self.labels, self.frame_size, self.seed, self.length = clips, labels, frame_size, seed, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random.Random(k + 10**7 * self.seed)
        i = rng.randrange(len(self.clips))
        frames = self.clips[i][train_indices(FRAMES, SEGMENTS, rng)]
        return train_transform(frames, draw_crop_jitter(rng, False), self.frame_size), self.labels[i]


def super_images(clips: torch.Tensor, device: torch.device) -> torch.Tensor:
    from sifar.layout import to_super_image

    return to_super_image(normalize(clips.to(device)), 3, 3).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def held_out(model: nn.Module, clips, labels, frame_size: int, device: torch.device) -> torch.Tensor:
    """Top-1 predictions for the held-out clips (centre frames, whole frame resized)."""
    model.eval()
    frames = torch.stack([eval_transform(list(c[eval_indices(FRAMES, SEGMENTS)[0]]), frame_size)[0] for c in clips])
    predictions = torch.cat([model(super_images(chunk, device)).argmax(1).cpu() for chunk in frames.split(200)])
    model.train()
    return predictions


def run(spec: dict, data, classes: list[str], workers: int, device: torch.device) -> dict:
    (train_clips, train_labels), (val_clips, val_labels) = data
    seed, frame_size, batch = spec.get("seed", 0), spec.get("frame_size", 24), spec.get("batch", 32)
    steps = spec["steps"]
    torch.manual_seed(seed)
    model = build(spec, len(classes)).to(device).to(memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(model, "adamw", lr=spec["lr"], weight_decay=spec.get("weight_decay", 0.05))
    warmup = spec.get("warmup", 100)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1, (s + 1) / warmup) * (
        0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    criterion = nn.CrossEntropyLoss(label_smoothing=spec.get("smoothing", 0.1))
    loader = iter(torch.utils.data.DataLoader(TrainingClips(train_clips, train_labels, frame_size, seed, steps * batch),
                                              batch_size=batch, num_workers=workers))
    curve, losses, began = {}, [], time.perf_counter()
    for step in range(1, steps + 1):
        clips, labels = next(loader)
        loss = criterion(model(super_images(clips, device)), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % spec.get("every", 300) == 0 or step == steps:
            predictions = held_out(model, val_clips, val_labels, frame_size, device)
            curve[step] = [round(100 * float((predictions == val_labels).float().mean()), 1),
                           round(float(np.mean(losses[-50:])), 3)]
    per_class = {c: round(100 * float((predictions[val_labels == i] == i).float().mean()))
                 for i, c in enumerate(classes)}
    return {**spec, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "curve": curve,
            "top1": curve[steps][0], "per_class": per_class, "seconds": round(time.perf_counter() - began, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", type=Path, required=True, help="JSON lines, one run each.")
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--turn-radius", default=None, help="LO,HI: turning objects' radius (fraction of the side).")
    parser.add_argument("--turn-degrees", default=None, help="LO,HI: degrees turned over the clip.")
    parser.add_argument("--solid-turning", action="store_true", help="Turning objects without texture.")
    parser.add_argument("--workers", type=int, default=4, help="Clip-making processes.")
    args = parser.parse_args()
    if args.turn_radius:
        synth.TURNING_RADIUS = tuple(map(float, args.turn_radius.split(",")))
    if args.turn_degrees:
        synth.MOTIONS["rotation"] = synth.Motion("angle", *map(float, args.turn_degrees.split(",")))
    if args.solid_turning:
        plan = synth.plan_object

        def solid_turning(motion_name, *rest, **options):
            planned = plan(motion_name, *rest, **options)
            return dataclasses.replace(planned, texture="solid") if motion_name == "rotation" else planned

        synth.plan_object = solid_turning
    config = synth.SynthConfig(out=Path("unused"), videos=args.videos, frames=FRAMES, width=SIZE, height=SIZE)
    train, val = synth.split_videos(synth.plan_videos(config), args.val_fraction, config.seed)
    classes = sorted(config.classes)
    data = render(train, classes), render(val, classes)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    for line in args.specs.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            print(json.dumps(run(json.loads(line), data, classes, args.workers, device)), flush=True)


if __name__ == "__main__":
    main()
