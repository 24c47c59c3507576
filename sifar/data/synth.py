"""The embedded synthetic dataset: moving objects whose class only the order of frames tells.

Every class has a twin that is its time reversal (moving right / left, down / up, growing / shrinking,
rotating clockwise / counter-clockwise, appearing / disappearing). A twin's clip is drawn exactly like its
partner's and then played backwards, so the two share the same distribution of frames: no single frame and
no unordered set of frames separates them, only their order does. Shapes, colours, textures, backgrounds,
sizes, speeds and start positions are random per video.

Frames are drawn with numpy and piped as raw RGB into one ffmpeg process per video (H.264 mp4, or MPEG-4
part 2 when the ffmpeg build has no libx264). The output folder gets ``videos/<class>/*.mp4`` and the
``train.csv`` / ``val.csv`` lists that ``sifar-tools shard --dataset csv`` reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ffmpeg
import numpy as np
from tqdm import tqdm

from sifar.data.ffmpeg import has_encoder, quiet_command
from sifar.data.formats.csv_list import ListEntry, write_entries
from sifar.data.formats.records import Box
from sifar.data.workers import available_cores, worker_pool
from sifar.io import atomic_write, write_json

SETTINGS_FILE = "synth.json"
Clip = np.ndarray  # (frames, height, width, 3) uint8
Rng = np.random.Generator


@dataclass(frozen=True)
class Motion:
    """How one attribute of the object changes over the clip (drawn forwards; twins play it backwards)."""

    attribute: str
    min_change: float
    max_change: float


MOTIONS = {
    "horizontal": Motion("x", 0.35, 0.6),      # fraction of the width travelled
    "vertical": Motion("y", 0.35, 0.6),        # fraction of the height travelled
    "scale": Motion("radius", 1.8, 3.0),       # end radius / start radius
    "rotation": Motion("angle", 180.0, 300.0), # degrees turned over the clip (shapes without symmetry)
    "opacity": Motion("alpha", 0.3, 1.0),      # fraction of the clip the fade-in lasts
}

# class -> (motion, played backwards); image y grows downwards, so a growing angle turns clockwise.
CLASSES: dict[str, tuple[str, bool]] = {
    "move_right": ("horizontal", False), "move_left": ("horizontal", True),
    "move_down": ("vertical", False), "move_up": ("vertical", True),
    "grow": ("scale", False), "shrink": ("scale", True),
    "rotate_cw": ("rotation", False), "rotate_ccw": ("rotation", True),
    "appear": ("opacity", False), "disappear": ("opacity", True),
}


@dataclass(frozen=True)
class SynthConfig:
    """What ``sifar-tools synth`` makes."""

    out: Path
    videos: int = 1000
    classes: tuple[str, ...] = tuple(CLASSES)
    frames: int = 16
    width: int = 112
    height: int = 112
    fps: float = 12.0
    val_fraction: float = 0.2
    seed: int = 0
    workers: int = field(default_factory=available_cores)

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in CLASSES]
        if unknown:
            raise ValueError(f"unknown synthetic classes {unknown}; known: {', '.join(CLASSES)}")
        if not self.classes or self.videos < len(self.classes):
            raise ValueError(f"need at least one video per class ({len(self.classes)} classes, {self.videos} videos)")
        if self.frames < 2:
            raise ValueError(f"a clip needs at least 2 frames to have an order, got {self.frames}")
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 16:
            raise ValueError(f"frame size must be even and at least 16 pixels, got {self.width}x{self.height}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


# --- drawing ------------------------------------------------------------------------------------------------

Shape = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    inside = np.ones(u.shape, dtype=bool)
    for k in range(3):
        a = math.pi / 2 + k * 2 * math.pi / 3
        inside &= u * math.cos(a) + v * math.sin(a) <= 0.5
    return inside


def _arrow(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    shaft = (u >= -0.95) & (u <= 0.15) & (abs(v) <= 0.22)
    head = (u >= 0.05) & (abs(v) <= 0.75 * (0.95 - u))
    return shaft | head


def _ell(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    upright = (u >= -0.85) & (u <= -0.3) & (abs(v) <= 0.9)
    foot = (u >= -0.85) & (u <= 0.85) & (v >= 0.35) & (v <= 0.9)
    return upright | foot


SHAPES: dict[str, Shape] = {
    "disk": lambda u, v: u * u + v * v <= 1,
    "ring": lambda u, v: (u * u + v * v <= 1) & (u * u + v * v >= 0.3),
    "square": lambda u, v: np.maximum(abs(u), abs(v)) <= 0.8,
    "diamond": lambda u, v: abs(u) + abs(v) <= 1,
    "triangle": _triangle,
    "cross": lambda u, v: ((abs(u) <= 0.3) & (abs(v) <= 1)) | ((abs(v) <= 0.3) & (abs(u) <= 1)),
    "arrow": _arrow,
    "pacman": lambda u, v: (u * u + v * v <= 1) & ~((u > 0) & (abs(v) < 0.7 * u)),
    "half_disk": lambda u, v: (u * u + v * v <= 1) & (v <= 0.15),
    "ell": _ell,
}
RADIUS = (0.1, 0.2)  # an object's radius, as a fraction of the frame's short side
TURNING_RADIUS = (0.3, 0.42)  # a turning object's: large enough for its turn to show in frames of 24 px
# Shapes that look different at every angle (no rotational symmetry), so a turn and its reverse differ in
# every pair of frames; the others have 90, 120 or 360/n degree symmetries (a disk: every angle).
TURNING_SHAPES = ("arrow", "pacman", "half_disk", "ell")


def _centroid(shape: Shape, samples: int = 401) -> tuple[float, float]:
    u, v = np.meshgrid(*[np.linspace(-1.5, 1.5, samples)] * 2)
    inside = shape(u, v)
    return float(u[inside].mean()), float(v[inside].mean())


# Every shape is drawn around its own centroid: a turning shape then turns in place (its centroid stays
# put), and a moving one's centroid is where the plan says the object is.
SHAPE_CENTROIDS = {name: _centroid(shape) for name, shape in SHAPES.items()}

TEXTURES: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "solid": lambda u, v, k: np.zeros(u.shape, dtype=np.float32),
    "stripes": lambda u, v, k: (np.sin(k * u) > 0).astype(np.float32),
    "checker": lambda u, v, k: ((np.floor(k * u) + np.floor(k * v)) % 2).astype(np.float32),
}
MIN_CONTRAST = 150.0
"""Least L1 distance (over RGB, 0-255) between an object colour and any colour of its background."""


def _colour(rng: Rng) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _distinct_colour(rng: Rng, background_colours: np.ndarray) -> np.ndarray:
    """A colour at least :data:`MIN_CONTRAST` away from every colour the background mixes (the segment
    between its two colours), so the object stands out wherever it is."""
    a, b = background_colours
    mixes = a + (b - a) * np.linspace(0, 1, 11, dtype=np.float32)[:, None]
    while True:
        colour = _colour(rng)
        if np.abs(mixes - colour).sum(axis=1).min() > MIN_CONTRAST:
            return colour


def draw_background(rng: Rng, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A random static background: plain, gradient, stripes or smooth noise, as (H, W, 3) float32, and
    the two colours it mixes, (2, 3)."""
    kind = rng.choice(["plain", "gradient", "stripes", "noise"])
    a, b = _colour(rng), _colour(rng)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    along = (xx * math.cos(angle) + yy * math.sin(angle)) / max(height, width)
    if kind == "plain":
        weight = np.zeros((height, width), dtype=np.float32)
    elif kind == "gradient":
        weight = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    elif kind == "stripes":
        weight = (np.sin(along * rng.uniform(10, 40)) > 0).astype(np.float32) * 0.5
    else:
        coarse = rng.random((4, 4)).astype(np.float32)
        rows = np.linspace(0, 3, height).round().astype(int)
        cols = np.linspace(0, 3, width).round().astype(int)
        weight = coarse[rows][:, cols]
    return a + (b - a) * weight[..., None], np.stack([a, b])


@dataclass(frozen=True)
class ObjectPath:
    """An object's look and its attributes at every frame (forward order)."""

    shape: str
    texture: str
    texture_frequency: float
    colours: tuple[np.ndarray, np.ndarray]
    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    alpha: np.ndarray


def plan_object(motion_name: str, rng: Rng, frames: int, height: int, width: int,
                background_colours: np.ndarray) -> ObjectPath:
    """Random look, start and speed; only the attribute the motion names changes over time.

    A turning object is larger (:data:`TURNING_RADIUS`) so its turn shows at small frame sizes; its turn is
    a total over the clip, so any frame count samples it alike.
    """
    motion = MOTIONS[motion_name]
    side = min(height, width)
    t = np.linspace(0.0, 1.0, frames, dtype=np.float32)
    low, high = TURNING_RADIUS if motion.attribute == "angle" else RADIUS
    radius = np.full(frames, rng.uniform(low, high) * side, dtype=np.float32)
    if motion.attribute == "radius":
        start = rng.uniform(0.06, 0.1) * side
        radius = start * (1 + (rng.uniform(motion.min_change, motion.max_change) - 1) * t)
    margin = float(radius.max())
    x = np.full(frames, rng.uniform(margin, width - margin), dtype=np.float32)
    y = np.full(frames, rng.uniform(margin, height - margin), dtype=np.float32)
    if motion.attribute in ("x", "y"):
        extent = width if motion.attribute == "x" else height
        travel = rng.uniform(motion.min_change, motion.max_change) * extent
        begin = rng.uniform(margin * 0.5, extent - margin * 0.5 - travel)
        path = begin + travel * t
        x, y = (path, y) if motion.attribute == "x" else (x, path)
    angle = np.full(frames, rng.uniform(0, 2 * math.pi), dtype=np.float32)
    if motion.attribute == "angle":
        angle = angle + math.radians(rng.uniform(motion.min_change, motion.max_change)) * t
    alpha = np.ones(frames, dtype=np.float32)
    if motion.attribute == "alpha":
        duration = rng.uniform(motion.min_change, motion.max_change) * (frames - 1)
        fade_in = rng.uniform(0.0, frames - 1 - duration)
        alpha = np.clip((np.arange(frames) - fade_in) / max(duration, 1.0), 0.0, 1.0).astype(np.float32)
    shape = rng.choice(TURNING_SHAPES if motion.attribute == "angle" else list(SHAPES))
    colours = (_distinct_colour(rng, background_colours), _distinct_colour(rng, background_colours))
    return ObjectPath(str(shape), str(rng.choice(list(TEXTURES))), float(rng.uniform(4, 10)), colours,
                      x, y, radius, angle, alpha)


def object_mask(grid: np.ndarray, obj: ObjectPath, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame ``i``'s shape as a boolean (H, W) mask (opacity aside) and the object's own coordinates
    ``u, v`` at every pixel; ``grid`` is ``np.mgrid`` of the frame."""
    yy, xx = grid
    dx, dy = (xx - obj.x[i]) / obj.radius[i], (yy - obj.y[i]) / obj.radius[i]
    cos, sin = math.cos(obj.angle[i]), math.sin(obj.angle[i])
    centre_u, centre_v = SHAPE_CENTROIDS[obj.shape]
    u, v = cos * dx + sin * dy + centre_u, -sin * dx + cos * dy + centre_v
    return SHAPES[obj.shape](u, v), u, v


def draw_object(background: np.ndarray, grid: np.ndarray, obj: ObjectPath, i: int) -> tuple[np.ndarray, Box | None]:
    """Frame ``i``: the object composited over the background, and its box (None when fully transparent)."""
    inside, u, v = object_mask(grid, obj, i)
    mask = inside.astype(np.float32) * obj.alpha[i]
    mix = TEXTURES[obj.texture](u, v, obj.texture_frequency)[..., None]
    colour = obj.colours[0] + (obj.colours[1] - obj.colours[0]) * mix
    frame = background + (colour - background) * mask[..., None]
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8), mask_box(inside) if obj.alpha[i] > 0 else None


def mask_box(mask: np.ndarray) -> Box | None:
    """``(x0, y0, x1, y1)`` of a boolean mask's pixels, in pixel edges (x1, y1 exclusive); None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@dataclass(frozen=True)
class SynthClip:
    """A rendered clip in the class's order: frames (T, H, W, 3) uint8, each frame's object box (None where
    the object is fully transparent) and the static background (H, W, 3) float32 it was drawn over."""

    frames: Clip
    boxes: list[Box | None]
    background: np.ndarray


def render_clip(class_name: str, rng: Rng, frames: int, height: int, width: int) -> SynthClip:
    """One clip of ``class_name``: drawn forwards, then played backwards if the class is a reversed twin."""
    motion_name, backwards = CLASSES[class_name]
    background, background_colours = draw_background(rng, height, width)
    obj = plan_object(motion_name, rng, frames, height, width, background_colours)
    grid = np.mgrid[0:height, 0:width].astype(np.float32)
    drawn = [draw_object(background, grid, obj, i) for i in range(frames)]
    order = slice(None, None, -1) if backwards else slice(None)
    return SynthClip(np.stack([frame for frame, _ in drawn])[order].copy(), [box for _, box in drawn][order],
                     background)


# --- encoding and the dataset -------------------------------------------------------------------------------


def encoder_options() -> dict[str, object]:
    """H.264 when this ffmpeg has libx264, else MPEG-4 part 2 (in every build)."""
    if has_encoder("libx264"):
        return {"vcodec": "libx264", "preset": "veryfast", "crf": 18}
    return {"vcodec": "mpeg4", "q:v": 3}


def write_mp4(clip: Clip, path: Path, fps: float) -> None:
    """Encode ``clip`` into ``path`` with one ffmpeg process fed raw frames on stdin.

    ffmpeg writes a temporary name that is renamed once complete, so a listed video is always whole.
    """
    _, height, width, _ = clip.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    command = quiet_command(
        ffmpeg.input("pipe:0", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
        .output(str(temporary), format="mp4", pix_fmt="yuv420p", movflags="+faststart", **encoder_options())
        .overwrite_output())
    try:
        result = subprocess.run(command, input=clip.tobytes(), capture_output=True)
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg could not encode {path}: {result.stderr.decode(errors='replace').strip()}")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@dataclass(frozen=True)
class SynthVideo:
    """One video to make: its class, file (relative to the output folder) and seed."""

    index: int
    class_name: str
    relative_path: str
    seed: tuple[int, int]


def plan_videos(config: SynthConfig) -> list[SynthVideo]:
    """Videos spread evenly over the classes, each with its own seed (same videos for any worker count)."""
    videos = []
    for index in range(config.videos):
        name = config.classes[index % len(config.classes)]
        relative = f"videos/{name}/{name}_{index:05d}.mp4"
        videos.append(SynthVideo(index, name, relative, (config.seed, index)))
    return videos


def make_video(video: SynthVideo, config: SynthConfig) -> list[Box | None]:
    """Render and encode one video; returns its object boxes."""
    clip = render_clip(video.class_name, np.random.default_rng(video.seed), config.frames, config.height,
                       config.width)
    write_mp4(clip.frames, config.out / video.relative_path, config.fps)
    return clip.boxes


def video_background(video: SynthVideo, config: SynthConfig) -> np.ndarray:
    """The static background ``video`` was drawn over, (H, W, 3) float32: the first draw from its seed."""
    background, _ = draw_background(np.random.default_rng(video.seed), config.height, config.width)
    return background


def split_videos(videos: list[SynthVideo], val_fraction: float, seed: int) -> tuple[list[SynthVideo], list[SynthVideo]]:
    """Train and val lists with every class in the same proportion (at least one val video per class when
    ``val_fraction`` > 0 and the class has two or more)."""
    rng = np.random.default_rng((seed, 1))
    train, val = [], []
    for name in dict.fromkeys(v.class_name for v in videos):
        members = [v for v in videos if v.class_name == name]
        order = rng.permutation(len(members))
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members)))) if val_fraction > 0 else 0
        val += [members[i] for i in order[:n_val]]
        train += [members[i] for i in order[n_val:]]
    return sorted(train, key=lambda v: v.index), sorted(val, key=lambda v: v.index)


def write_list(path: Path, videos: list[SynthVideo], boxes: dict[int, list[Box | None]]) -> None:
    """A ``path,label,boxes`` list for ``shard --dataset csv``."""
    with atomic_write(path, "w") as handle:
        write_entries(handle, [ListEntry(v.relative_path, v.class_name, tuple(boxes[v.index])) for v in videos])


def write_config(config: SynthConfig) -> Path:
    """``synth.json``: what made the dataset (everything but the output folder and the worker count)."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out", "workers")}
    path = config.out / SETTINGS_FILE
    write_json(path, settings, indent=1)
    return path


def read_config(folder: Path) -> SynthConfig:
    """The :class:`SynthConfig` that made the dataset in ``folder`` (from its ``synth.json``)."""
    path = Path(folder) / SETTINGS_FILE
    try:
        settings = json.loads(path.read_text())
        return SynthConfig(out=Path(folder), **{**settings, "classes": tuple(settings["classes"])})
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: {folder} was not made by sifar-tools synth") from None
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{path} is not a synth settings file: {err}") from err


def make_dataset(config: SynthConfig, progress: bool = True) -> tuple[Path, Path]:
    """Make every video in ``config.workers`` processes, then the train and val lists and ``synth.json``;
    returns the lists' paths."""
    videos = plan_videos(config)
    tasks = [(video, config) for video in videos]
    boxes = {}
    with worker_pool(min(config.workers, len(videos))) as pool:
        with tqdm(total=len(videos), unit="video", disable=not progress) as bar:
            for index, video_boxes in pool.imap_unordered(_make_video_task, tasks):
                boxes[index] = video_boxes
                bar.update()
    train, val = split_videos(videos, config.val_fraction, config.seed)
    train_path, val_path = config.out / "train.csv", config.out / "val.csv"
    write_list(train_path, train, boxes)
    write_list(val_path, val, boxes)
    write_config(config)
    return train_path, val_path


def _make_video_task(task: tuple[SynthVideo, SynthConfig]) -> tuple[int, list[Box | None]]:
    return task[0].index, make_video(*task)
