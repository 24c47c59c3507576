"""Which frames of a video make a clip.

Uniform (TSN-style, the paper's choice): the video is cut into T equal segments and one frame is taken
from each: a random one when training, the centre one when evaluating; with N evaluation clips, clip k
takes the frame at (k + 0.5) / N of each segment. Dense: T frames at a fixed stride from a start that is
random when training and evenly spread over the video for N evaluation clips. Videos shorter than a clip
repeat frames; indices are always within ``[0, num_frames)``.
"""

from __future__ import annotations

import math
import random
from typing import Literal, get_args

Mode = Literal["uniform", "dense"]
MODES: tuple[str, ...] = get_args(Mode)  # what the options offer and the loader accepts


def _segment_bounds(num_frames: int, num_segments: int, i: int) -> tuple[int, int]:
    """Frames ``[start, end)`` of segment ``i``: integer bounds, so segments never share a frame."""
    return i * num_frames // num_segments, (i + 1) * num_frames // num_segments


def uniform_indices(num_frames: int, num_segments: int, rng: random.Random | None = None,
                    position: float = 0.5) -> list[int]:
    """One frame per equal segment: random when ``rng`` is given, else at ``position`` (0..1) of each.

    A segment shorter than one frame (video shorter than the clip) takes the frame it starts in.
    """
    _check(num_frames, num_segments)
    indices = []
    for i in range(num_segments):
        start, end = _segment_bounds(num_frames, num_segments, i)
        where = rng.random() if rng is not None else position
        indices.append(start + min(math.floor(where * (end - start)), max(0, end - start - 1)))
    return indices


def dense_indices(num_frames: int, num_segments: int, stride: int, start: int) -> list[int]:
    """``num_segments`` frames ``stride`` apart from ``start``; a clip longer than the video wraps round."""
    _check(num_frames, num_segments)
    if stride < 1:
        raise ValueError(f"dense sampling needs a stride >= 1, got {stride}")
    return [(start + i * stride) % num_frames for i in range(num_segments)]


def dense_start_range(num_frames: int, num_segments: int, stride: int) -> int:
    """The last start from which a dense clip fits inside the video (0 when it does not fit)."""
    return max(0, num_frames - (num_segments - 1) * stride - 1)


def train_indices(num_frames: int, num_segments: int, rng: random.Random, mode: Mode = "uniform",
                  stride: int = 4) -> list[int]:
    """A training clip: random frame per segment (uniform) or random start (dense)."""
    if mode == "uniform":
        return uniform_indices(num_frames, num_segments, rng)
    if mode == "dense":
        start = rng.randint(0, dense_start_range(num_frames, num_segments, stride))
        return dense_indices(num_frames, num_segments, stride, start)
    raise ValueError(f"unknown sampling mode {mode!r} ({', '.join(MODES)})")


def eval_indices(num_frames: int, num_segments: int, clips: int = 1, mode: Mode = "uniform",
                 stride: int = 4) -> list[list[int]]:
    """Deterministic evaluation clips: ``clips`` lists of ``num_segments`` frame indices each."""
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    if mode == "uniform":
        return [uniform_indices(num_frames, num_segments, position=(k + 0.5) / clips) for k in range(clips)]
    if mode == "dense":
        last = dense_start_range(num_frames, num_segments, stride)
        starts = [round(last * (k + 0.5) / clips) for k in range(clips)]
        return [dense_indices(num_frames, num_segments, stride, s) for s in starts]
    raise ValueError(f"unknown sampling mode {mode!r} ({', '.join(MODES)})")


def _check(num_frames: int, num_segments: int) -> None:
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if num_segments < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_segments}")
