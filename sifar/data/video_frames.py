"""The frames a clip samples from a video file, decoded on their own: prediction's reader.

Sharding decodes every frame once into JPEGs (:mod:`sifar.data.ffmpeg`); a prediction needs 8 or 16 of
them. ffmpeg first lists the video's packets without decoding them (``-c copy -f framecrc``): their count
is the frame count, their presentation times the frames' times. Each sampled frame is then reached by
seeking: ffmpeg jumps to the keyframe before it and decodes from there up to the frame, whose time lies
between the previous frame's and its own, so the frame is exact whatever the frame timing; it is scaled and
sent as raw RGB, and only the sampled frames are ever held. Up to :data:`SEEKS_PER_RUN` frames share one
ffmpeg run (one input each, concatenated), which bounds the decoders held at once. A video whose packets
carry no presentation times (raw H.264, AVI with B-frames) is read in one pass instead, the ``select``
filter keeping the sampled frame numbers: exact too, but decoding every frame up to the last one sampled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np
import torch

from sifar.data.ffmpeg import LOG_ARGS, DecodeError, ffmpeg_exe, run_decoder, scale_short_side

SEEKS_PER_RUN = 8  # a 720p H.264 decoder holds ~15 MiB: 8 at once keep one ffmpeg run near 120 MiB
_TIME_BASE = re.compile(r"^#tb 0: (\d+)/(\d+)$", re.MULTILINE)
_NO_TIME = -(2**63)  # AV_NOPTS_VALUE, as framecrc prints a packet without a presentation time
_OUTPUT_SIZE = re.compile(r"Stream #0:0.*?: Video: .*?, (\d+)x(\d+)")


@dataclass(frozen=True)
class FrameIndex:
    """A video's frames as its packets list them: how many, and each one's presentation time in seconds
    (None where the packets carry no times, and frames can be reached only by counting)."""

    count: int
    times: list[float] | None


def index_frames(path: str | Path) -> FrameIndex:
    """The :class:`FrameIndex` of the first video stream, from its packets (nothing is decoded); DecodeError
    when nothing can be read."""
    command = [ffmpeg_exe(), *LOG_ARGS, "-i", str(path), "-map", "0:V:0", "-c", "copy", "-f", "framecrc", "-"]
    listing = run_decoder(command)[0].stdout.decode("ascii", errors="replace")
    base = _TIME_BASE.search(listing)
    stamps = [int(line.split(",")[2]) for line in listing.splitlines() if line and not line.startswith("#")]
    if not stamps:
        raise DecodeError("no video frames")
    if base is None or _NO_TIME in stamps or len(set(stamps)) != len(stamps):
        return FrameIndex(len(stamps), None)
    numerator, denominator = int(base.group(1)), int(base.group(2))
    return FrameIndex(len(stamps), [t * numerator / denominator for t in sorted(stamps)])


def read_frames(path: str | Path, indices: list[int], short_side: int,
                index: FrameIndex | None = None) -> dict[int, torch.Tensor]:
    """Frames ``indices`` of the video, each (H, W, 3) uint8 with its shorter side ``short_side`` pixels.

    ``index``: :func:`index_frames` of the video where already known. DecodeError naming a frame past the end.
    """
    index = index_frames(path) if index is None else index
    wanted = sorted(set(indices))
    if wanted[-1] >= index.count:
        raise DecodeError(f"frame {wanted[-1]} asked of a video of {index.count} frames")
    if index.times is None:
        return dict(zip(wanted, _decode(_selecting(path, wanted, short_side), len(wanted))))
    frames: dict[int, torch.Tensor] = {}
    for start in range(0, len(wanted), SEEKS_PER_RUN):
        chunk = wanted[start:start + SEEKS_PER_RUN]
        frames.update(zip(chunk, _decode(_seeking(path, chunk, index.times, short_side), len(chunk))))
    return frames


def _seeking(path: str | Path, wanted: list[int], times: list[float], short_side: int) -> list[str]:
    """One input per frame, each opened just before its frame (half-way from the previous one), its first
    frame kept; the frames concatenated in order, renumbered so the raw output's timestamps increase."""
    firsts = []
    for n in wanted:
        seek = {"ss": f"{(times[n - 1] + times[n]) / 2:.6f}"} if n > 0 else {}
        firsts.append(scale_short_side(ffmpeg.input(str(path), **seek)["V:0"].filter("trim", end_frame=1), short_side))
    joined = ffmpeg.concat(*firsts, v=1, a=0).filter("setpts", "N")
    return _raw_command(joined)


def _selecting(path: str | Path, wanted: list[int], short_side: int) -> list[str]:
    """One pass over the video, keeping the wanted frame numbers."""
    chosen = "+".join(f"eq(n,{i})" for i in wanted)
    return _raw_command(scale_short_side(ffmpeg.input(str(path))["V:0"].filter("select", chosen), short_side))


def _raw_command(video: ffmpeg.nodes.FilterableStream) -> list[str]:
    compiled = ffmpeg.output(video, "pipe:1", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough").compile(
        cmd=ffmpeg_exe())
    return [compiled[0], *LOG_ARGS, *compiled[1:]]


def _decode(command: list[str], expected: int) -> torch.Tensor:
    """(expected, H, W, 3) uint8 from ffmpeg's raw RGB output; DecodeError when frames are missing."""
    done, _ = run_decoder(command)
    width, height = _output_size(done.stderr.decode("utf-8", errors="replace"))
    pixels = np.frombuffer(done.stdout, dtype=np.uint8)
    got = pixels.size // (height * width * 3)
    if got != expected or pixels.size % (height * width * 3):
        raise DecodeError(f"ffmpeg gave {got} of the {expected} frames asked for")
    return torch.from_numpy(pixels.copy()).view(expected, height, width, 3)


def _output_size(log: str) -> tuple[int, int]:
    match = _OUTPUT_SIZE.search(log.split("Output #0", 1)[-1])
    if match is None:
        raise DecodeError("ffmpeg reported no output frame size")
    return int(match.group(1)), int(match.group(2))
