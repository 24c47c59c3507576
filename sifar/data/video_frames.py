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
import subprocess
from pathlib import Path

import ffmpeg
import numpy as np
import torch

from sifar.data.ffmpeg import LOG_ARGS, DecodeError, ffmpeg_exe, first_problem, parse_stream_info, scale_short_side

SEEKS_PER_RUN = 8  # a 720p H.264 decoder holds ~15 MiB: 8 at once keep one ffmpeg run near 120 MiB
_TIME_BASE = re.compile(r"^#tb 0: (\d+)/(\d+)$", re.MULTILINE)
_NO_TIME = -(2**63)  # AV_NOPTS_VALUE, as framecrc prints a packet without a presentation time
_OUTPUT_SIZE = re.compile(r"Stream #0:0.*?: Video: .*?, (\d+)x(\d+)")


def frame_times(path: str | Path) -> list[float] | int:
    """The presentation time (seconds) of each frame of the first video stream, in order, from its packets;
    or only their number where the packets carry no times. DecodeError when nothing can be read."""
    command = [ffmpeg_exe(), *LOG_ARGS, "-i", str(path), "-map", "0:V:0", "-c", "copy", "-f", "framecrc", "-"]
    listing = _run(command).stdout.decode("ascii", errors="replace")
    base = _TIME_BASE.search(listing)
    times = [int(line.split(",")[2]) for line in listing.splitlines() if line and not line.startswith("#")]
    if not times:
        raise DecodeError("no video frames")
    if base is None or _NO_TIME in times or len(set(times)) != len(times):
        return len(times)
    numerator, denominator = int(base.group(1)), int(base.group(2))
    return [t * numerator / denominator for t in sorted(times)]


def count_frames(path: str | Path) -> int:
    """Frames of the first video stream, counted from its packets without decoding them."""
    times = frame_times(path)
    return times if isinstance(times, int) else len(times)


def read_frames(path: str | Path, indices: list[int], short_side: int,
                times: list[float] | int | None = None) -> dict[int, torch.Tensor]:
    """Frames ``indices`` of the video, each (H, W, 3) uint8 with its shorter side ``short_side`` pixels.

    ``times``: :func:`frame_times` of the video where already known. DecodeError naming a frame past the end.
    """
    times = frame_times(path) if times is None else times
    wanted = sorted(set(indices))
    count = times if isinstance(times, int) else len(times)
    if wanted[-1] >= count:
        raise DecodeError(f"frame {wanted[-1]} asked of a video of {count} frames")
    if isinstance(times, int):
        return dict(zip(wanted, _decode(_selecting(path, wanted, short_side), len(wanted))))
    frames: dict[int, torch.Tensor] = {}
    for start in range(0, len(wanted), SEEKS_PER_RUN):
        chunk = wanted[start:start + SEEKS_PER_RUN]
        frames.update(zip(chunk, _decode(_seeking(path, chunk, times, short_side), len(chunk))))
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
    done = _run(command)
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


def _run(command: list[str]) -> subprocess.CompletedProcess:
    """Run ffmpeg; DecodeError with its reason when the input cannot be opened or decoded."""
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
    log = done.stderr.decode("utf-8", errors="replace")
    parse_stream_info(log)  # DecodeError naming why the input could not be opened, or that it has no video
    problem = first_problem(log)
    if problem or done.returncode != 0:
        raise DecodeError(problem or f"ffmpeg exited with status {done.returncode}")
    return done
