"""A reference classifier for the synthetic dataset that learns nothing: proof that every class is decidable.

It reads a clip's frames in order against the static background the video was drawn over (the generator
re-draws it from the video's seed) and measures the object over time: how strongly it stands out (its
opacity), where it is (the centroid of its mask), how large it is (the mask's area) and how far it turns
between frames (the shift that best aligns consecutive masks sampled on a polar grid round the object).
The one attribute that changes names the motion and the sign of its change names the direction:

1. position, when the centroid (in the frames that show the object: a quarter of its largest mask, half
   its peak contrast) travels more than 15% of the frame's short side (move right / left / down / up);
2. opacity, when the object's contrast falls below 35% of its peak in some frame (appear / disappear);
3. size, when the area changes by more than e^0.6 = 1.8x (grow / shrink);
4. otherwise a turn: the sum of the signed turns between frames (rotate clockwise / counter-clockwise).

Every rule reads a change over time, so reversing the frames turns each answer into the class's twin, and
no single frame or unordered set of frames could decide a pair. ``sifar-tools synth-reference`` runs it on
a split of a made dataset, decoding the videos as sharding does.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sifar.data.decoders import JpegDecoder
from sifar.data.ffmpeg import DecodeSettings, decode_video
from sifar.data.formats.csv_list import read_entries
from sifar.data.sampling import eval_indices
from sifar.data.synth import CLASSES, SynthConfig, plan_videos, read_config, video_background

OBJECT_THRESHOLD = 30.0
"""Difference from the background (:func:`object_difference`, 0-255 scale) above which a pixel is the
object's. Objects differ from every background colour by an RGB L1 distance of at least 150
(synth.MIN_CONTRAST); video coding errors at sharp background edges stay under it in the codec's own
colour space (below)."""
FADED = 0.35  # an object whose contrast drops below this share of its peak is fading (a fade starts at
# opacity 0, and the first of 8 uniformly sampled frames of a fade over 30% of the clip is below 0.22)
SHOWN_AREA = 0.25  # a frame shows the object's place when its mask has this share of the largest mask's
SHOWN_CONTRAST = 0.5  # area and its contrast this share of its peak (a fading object's faint remains are the
# parts that stand out most, off its centre)
TRAVELLED = 0.15  # a centroid that travels this share of the frame's short side is moving
RESIZED = 0.6  # |log area change| above which the object grows or shrinks
ANGLES = 90  # polar samples round the object (4 degrees apart)
RADII = 16


@dataclass(frozen=True)
class ObjectTrack:
    """What the reference measures in every frame of a clip."""

    contrast: np.ndarray  # mean of the largest differences from the background: proportional to opacity
    x: np.ndarray  # centroid of the object's mask, pixels
    y: np.ndarray
    area: np.ndarray  # pixels of the object's mask
    turn: np.ndarray  # degrees turned clockwise from each frame to the next (T - 1 values)


def _slope_change(values: np.ndarray, times: np.ndarray | None = None) -> float:
    """The change from the first to the last frame of a least-squares line through ``values`` at ``times``
    (default: every frame), which one noisy frame moves little."""
    t = np.arange(len(values), dtype=np.float64) if times is None else times.astype(np.float64)
    slope = np.polyfit(t, values.astype(np.float64), 1)[0]
    return float(slope * (t[-1] - t[0]))


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_CHROMA = np.array([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)


def _chroma_blocks(chroma: np.ndarray) -> np.ndarray:
    """Each 2x2 block's mean, repeated over its pixels: the 4:2:0 chroma grid of H.264 and JPEG."""
    height, width = chroma.shape[-3:-1]
    even = chroma[..., : height // 2 * 2, : width // 2 * 2, :]
    blocks = even.reshape(*even.shape[:-3], height // 2, 2, width // 2, 2, 2).mean(axis=(-4, -2))
    full = np.repeat(np.repeat(blocks, 2, axis=-3), 2, axis=-2)
    padding = [(0, 0)] * (full.ndim - 3) + [(0, height - full.shape[-3]), (0, width - full.shape[-2]), (0, 0)]
    return np.pad(full, padding, mode="edge")


def object_difference(frames: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(T, H, W): how far each pixel is from the background, as video coding keeps colour: luma per pixel,
    chroma per 2x2 block (|dY| + |dCb| + |dCr|). Compared per pixel in RGB, the chroma that 4:2:0 coding
    smears across a sharp background edge would read as an object all along the edge."""
    frames, background = frames.astype(np.float32), background[None].astype(np.float32)
    luma = np.abs((frames - background) @ _LUMA)
    chroma = np.abs(_chroma_blocks(frames @ _CHROMA.T) - _chroma_blocks(background @ _CHROMA.T)).sum(axis=-1)
    return luma + chroma


def polar_masks(masks: np.ndarray, x: float, y: float, radius: float) -> np.ndarray:
    """(T, RADII, ANGLES) samples of each mask on a polar grid centred on ``(x, y)`` (nearest pixel).

    Angles grow clockwise on screen (image y points down), as the generator's angles do.
    """
    height, width = masks.shape[1:]
    angles = np.arange(ANGLES) * 2 * math.pi / ANGLES
    radii = np.linspace(0.15, 1.0, RADII) * radius
    cols = np.clip(np.rint(x + radii[:, None] * np.cos(angles)), 0, width - 1).astype(int)
    rows = np.clip(np.rint(y + radii[:, None] * np.sin(angles)), 0, height - 1).astype(int)
    return masks[:, rows, cols].astype(np.float32)


def frame_turns(polar: np.ndarray) -> np.ndarray:
    """Degrees each polar mask turned from one frame to the next: the circular shift (over angles) that best
    aligns the two, from a cross-correlation per radius summed over radii; in (-180, 180]."""
    spectra = np.fft.rfft(polar - polar.mean(axis=-1, keepdims=True), axis=-1)
    correlation = np.fft.irfft(np.conj(spectra[:-1]) * spectra[1:], n=ANGLES, axis=-1).sum(axis=1)
    shift = correlation.argmax(axis=-1)
    shift = np.where(shift > ANGLES // 2, shift - ANGLES, shift)
    return shift * (360.0 / ANGLES)


def track_object(frames: np.ndarray, background: np.ndarray) -> ObjectTrack:
    """Measure the object in every frame of ``frames`` (T, H, W, 3) uint8 over ``background`` (H, W, 3)."""
    difference = object_difference(frames, background)
    flat = difference.reshape(len(frames), -1)
    top = max(4, flat.shape[1] // 500)
    contrast = np.sort(flat, axis=1)[:, -top:].mean(axis=1)
    masks = difference > OBJECT_THRESHOLD
    area = masks.sum(axis=(1, 2)).astype(np.float64)
    rows, cols = np.mgrid[0:masks.shape[1], 0:masks.shape[2]]
    seen = np.maximum(area, 1)
    x = (masks * cols).sum(axis=(1, 2)) / seen
    y = (masks * rows).sum(axis=(1, 2)) / seen
    visible = area > 0
    if visible.any():
        cx, cy = float(x[visible].mean()), float(y[visible].mean())
        reach = np.hypot(cols - cx, rows - cy)[masks.any(axis=0)].max()
        turn = frame_turns(polar_masks(masks, cx, cy, max(float(reach), 2.0)))
    else:
        turn = np.zeros(len(frames) - 1)
    return ObjectTrack(contrast, x, y, area, turn)


def classify_track(track: ObjectTrack, side: int) -> str:
    """The class the measured changes name (see the module's rules)."""
    relative = track.contrast / max(float(track.contrast.max()), 1e-6)
    visible = (track.area >= max(SHOWN_AREA * float(track.area.max()), 3.0)) & (relative >= SHOWN_CONTRAST)
    if visible.sum() >= 2:
        dx = _slope_change(track.x[visible], np.flatnonzero(visible)) / side
        dy = _slope_change(track.y[visible], np.flatnonzero(visible)) / side
        if max(abs(dx), abs(dy)) > TRAVELLED:
            if abs(dx) >= abs(dy):
                return "move_right" if dx > 0 else "move_left"
            return "move_down" if dy > 0 else "move_up"
    if relative.min() < FADED:
        half = len(relative) // 2
        return "appear" if relative[-half:].mean() > relative[:half].mean() else "disappear"
    growth = _slope_change(np.log(np.maximum(track.area, 1.0)))
    if abs(growth) > RESIZED:
        return "grow" if growth > 0 else "shrink"
    return "rotate_cw" if track.turn.sum() > 0 else "rotate_ccw"


def classify_clip(frames: np.ndarray, background: np.ndarray) -> str:
    """The reference's class for a clip (T, H, W, 3) uint8, T >= 2, drawn over ``background``."""
    if frames.ndim != 4 or len(frames) < 2 or frames.shape[1:] != background.shape:
        raise ValueError(f"expected frames (T >= 2, H, W, 3) over a background of {background.shape}, "
                         f"got {frames.shape}")
    return classify_track(track_object(frames, background), min(frames.shape[1:3]))


def twin(class_name: str) -> str:
    """The class whose clips are ``class_name``'s played backwards."""
    motion, backwards = CLASSES[class_name]
    return next(name for name, (other, other_backwards) in CLASSES.items()
                if other == motion and other_backwards != backwards)


@dataclass
class ReferenceReport:
    """The reference classifier on a split: per-class counts in order and reversed."""

    total: Counter
    correct: Counter
    reversed_twin: Counter  # reversed clips named as the twin class

    @property
    def accuracy(self) -> float:
        return 100 * sum(self.correct.values()) / max(sum(self.total.values()), 1)

    @property
    def reversed_twin_rate(self) -> float:
        return 100 * sum(self.reversed_twin.values()) / max(sum(self.total.values()), 1)

    def per_class(self) -> dict[str, float]:
        return {name: 100 * self.correct[name] / self.total[name] for name in sorted(self.total)}


def sampled_frames(path: Path, num_frames: int) -> np.ndarray:
    """The ``num_frames`` uniformly sampled frames of a video (centre of each segment), (T, H, W, 3) uint8,
    decoded as sharding stores them (JPEG at full size) and read back as the loader decodes them."""
    decoded = decode_video(path, DecodeSettings(short_side=0))
    indices = eval_indices(len(decoded.frames), num_frames)[0]
    return JpegDecoder().frames(dict(enumerate(decoded.frames)), indices).numpy()


def evaluate_split(folder: Path, split: str = "val", num_frames: int = 8) -> ReferenceReport:
    """Run the reference on every video of ``split`` of the dataset ``sifar-tools synth`` made in
    ``folder``, with ``num_frames`` uniformly sampled frames (centre of each segment), in order and reversed."""
    config: SynthConfig = read_config(folder)
    by_path = {video.relative_path: video for video in plan_videos(config)}
    report = ReferenceReport(Counter(), Counter(), Counter())
    for entry in read_entries(folder / f"{split}.csv"):
        video = by_path.get(entry.video)
        if video is None:
            raise ValueError(f"{folder / split}.csv lists {entry.video}, which {folder}/synth.json did not make")
        clip = sampled_frames(folder / entry.video, num_frames)
        background = video_background(video, config)
        report.total[entry.label] += 1
        report.correct[entry.label] += classify_clip(clip, background) == entry.label
        report.reversed_twin[entry.label] += classify_clip(clip[::-1], background) == twin(entry.label)
    return report
