"""The frames a clip samples from a video file, decoded on their own: prediction's reader.

Sharding decodes every frame once into JPEGs (:mod:`sifar.data.ffmpeg`); a prediction needs 8 or 16 of
them. Here ffmpeg first counts the video's frames from its packets (``-c copy``: no decoding), then decodes
and outputs only the sampled ones (the ``select`` filter on the frame number, exact whatever the frame
timing), scaled on the way and sent as raw RGB: no JPEG is encoded, and only the sampled frames are ever
held. Decoding still runs through the frames before the last sampled one (inter-coded frames need their
references); seeking by time would skip more but miss the exact frame on variable-rate video.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import ffmpeg
import numpy as np
import torch

from sifar.data.ffmpeg import LOG_ARGS, DecodeError, ffmpeg_exe, first_problem, parse_stream_info, scale_short_side

_FRAME_COUNT = re.compile(r"frame=\s*(\d+)")
_OUTPUT_SIZE = re.compile(r"Stream #0:0.*?: Video: .*?, (\d+)x(\d+)")


def count_frames(path: str | Path) -> int:
    """Frames of the first video stream, counted from its packets without decoding them."""
    command = [ffmpeg_exe(), *LOG_ARGS, "-i", str(path), "-map", "0:V:0", "-c", "copy", "-f", "null", "-"]
    log = _run(command).stderr.decode("utf-8", errors="replace")
    counts = _FRAME_COUNT.findall(log)
    if not counts or int(counts[-1]) == 0:
        raise DecodeError("no video frames")
    return int(counts[-1])


def read_frames(path: str | Path, indices: list[int], short_side: int) -> dict[int, torch.Tensor]:
    """Frames ``indices`` of the video, each (H, W, 3) uint8 with its shorter side ``short_side`` pixels."""
    wanted = sorted(set(indices))
    chosen = "+".join(f"eq(n,{i})" for i in wanted)
    video = scale_short_side(ffmpeg.input(str(path))["V:0"].filter("select", chosen), short_side)
    compiled = ffmpeg.output(video, "pipe:1", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough").compile(
        cmd=ffmpeg_exe())
    done = _run([compiled[0], *LOG_ARGS, *compiled[1:]])
    log = done.stderr.decode("utf-8", errors="replace")
    width, height = _output_size(log)
    pixels = np.frombuffer(done.stdout, dtype=np.uint8)
    if pixels.size != len(wanted) * height * width * 3:
        raise DecodeError(f"ffmpeg gave {pixels.size // (height * width * 3)} of the {len(wanted)} frames asked for "
                          f"(frames {wanted[0]}..{wanted[-1]})")
    frames = torch.from_numpy(pixels.copy()).view(len(wanted), height, width, 3)
    return dict(zip(wanted, frames))


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
