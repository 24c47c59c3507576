"""Decode a video into JPEG frames with one ffmpeg process, and read its metadata from that same run.

ffmpeg comes from PATH or, failing that, from imageio-ffmpeg's bundled binary (which has no ffprobe), so
the input's frame rate, size and rotation are parsed from the stream summary ffmpeg prints on stderr.
Frames leave ffmpeg as one MJPEG stream on a pipe (``-f image2pipe -c:v mjpeg``) and are cut into single
JPEGs by their markers: no temporary files, no second encode.

Every decoded frame is kept once (``-fps_mode passthrough``), so frame numbers match the source's (trimming
by frame number depends on it) and variable-frame-rate videos are not padded with duplicates; ``fps``
resamples to a constant rate instead. ffmpeg's autorotate turns frames upright; scaling works on the
display aspect (sample aspect ratio applied), so the stored pixels are square.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from sifar.config_fields import help_field, validate
from sifar.io import ffmpeg_input, is_url
from sifar.data.jpeg import JpegError, jpeg_size, split_jpeg_stream

LOG_ARGS = ["-nostdin", "-hide_banner", "-loglevel", "level+info"]  # levels in the log: first_problem reads them
_LOG_LEVEL = re.compile(r"\[(fatal|error|warning|info)\] (.*)")
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: (.*)")
_SIZE = re.compile(r", (\d+)x(\d+)[ ,\[]")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
_ROTATION = re.compile(r"(?:rotation of|rotate\s*:)\s*(-?\d+(?:\.\d+)?)")


class DecodeError(RuntimeError):
    """A video ffmpeg could not decode (or decoded only with errors); the message is the reason."""


@dataclass(frozen=True)
class DecodeSettings:
    """How frames are stored: the options a shard run was made with (saved in the manifest)."""

    short_side: int = help_field(256, "Resize so the shorter side has this many pixels; 0 keeps the original. "
                                      "[jester: 0 unless given, frames copied as shipped]", min=0)
    fps: float | None = help_field(None, "Resample to this frame rate. [default: keep every frame]", min=0,
                                   min_open=True)
    quality: int = help_field(3, "JPEG quality as ffmpeg's -q:v: 2 (best, largest) to 31 (smallest).", min=2,
                              max=31)
    max_frames: int | None = help_field(None, "Keep at most this many frames per video (after resampling).", min=1)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def transforms_frames(self) -> bool:
        """True when frames must pass through ffmpeg (resize or resample) rather than be copied."""
        return self.short_side > 0 or self.fps is not None


@dataclass(frozen=True)
class FrameRange:
    """Frames ``start`` (inclusive) to ``end`` (exclusive, None: to the end) of the source."""

    start: int = 0
    end: int | None = None

    def __post_init__(self) -> None:
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise ValueError(f"invalid frame range [{self.start}, {self.end})")


@dataclass(frozen=True)
class StreamInfo:
    """What ffmpeg reported about the input's first video stream (size upright, as displayed)."""

    width: int
    height: int
    fps: float | None
    rotation: int


@dataclass
class DecodedVideo:
    """JPEG frames of one video, their size and frame rate, and the source's (upright) size."""

    frames: list[bytes]
    fps: float | None
    width: int
    height: int
    orig_width: int
    orig_height: int
    orig_fps: float | None = None
    """The source's frame rate (None where unknown)."""


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary: the one on PATH, else imageio-ffmpeg's bundled build."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def quiet_command(stream: ffmpeg.nodes.OutputStream) -> list[str]:
    """The command line of an ffmpeg-python output ``stream``, run by :func:`ffmpeg_exe`, printing errors only."""
    command = stream.compile(cmd=ffmpeg_exe())
    return [command[0], "-nostdin", "-hide_banner", "-loglevel", "error", *command[1:]]


@functools.lru_cache(maxsize=None)
def has_encoder(name: str) -> bool:
    """Whether this ffmpeg build can encode with ``name`` (e.g. ``libx264``, ``libvpx-vp9``)."""
    listing = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True)
    return any(line.split()[1:2] == [name] for line in listing.stdout.splitlines() if line.strip())


def decode_video(path: str | Path, settings: DecodeSettings, frames: FrameRange | None = None,
                 threads: int = 0) -> DecodedVideo:
    """Decode ``path`` into JPEG frames per ``settings``; raises :class:`DecodeError` with ffmpeg's reason.

    ``threads`` sets ffmpeg's decoder threads (0: ffmpeg decides); use 1 when many run in parallel.
    """
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    source, options = ffmpeg_input(str(path)) if is_url(path) else (str(path), {})
    stream = ffmpeg.input(source, threads=threads, **options)
    command = _jpeg_output_command(stream, settings, frames)
    return _run(command, settings, stdin=None, default_fps=None)


def reencode_jpegs(jpegs: list[bytes], fps: float | None, settings: DecodeSettings,
                   frames: FrameRange | None = None) -> DecodedVideo:
    """Pass JPEG images (a dataset shipped as frames) through ffmpeg to resize or resample them.

    ``fps`` is the rate the images were taken at (needed only when resampling).
    """
    if settings.fps is not None and fps is None:
        raise DecodeError("cannot resample frames whose frame rate is unknown")
    stream = ffmpeg.input("pipe:0", format="jpeg_pipe", framerate=fps or 25)
    command = _jpeg_output_command(stream, settings, frames)
    return _run(command, settings, stdin=b"".join(jpegs), default_fps=fps)


def _jpeg_output_command(stream: ffmpeg.nodes.FilterableStream, settings: DecodeSettings,
                         frames: FrameRange | None) -> list[str]:
    video = stream["V:0"]
    if frames is not None:
        video = video.filter("trim", start_frame=frames.start, **({"end_frame": frames.end} if frames.end else {}))
    if settings.fps is not None:
        video = video.filter("fps", fps=settings.fps)
    if settings.short_side > 0:
        video = scale_short_side(video, settings.short_side)
    # Full-range YUV, as JPEG files are (ffmpeg 7.0's mjpeg encoder refuses limited-range yuv420p outright).
    output_options = {"format": "image2pipe", "vcodec": "mjpeg", "pix_fmt": "yuvj420p",
                      "q:v": settings.quality, "fps_mode": "passthrough"}
    if settings.max_frames is not None:
        output_options["frames:v"] = settings.max_frames
    compiled = ffmpeg.output(video, "pipe:1", **output_options).compile(cmd=ffmpeg_exe())
    return [compiled[0], *LOG_ARGS, *compiled[1:]]


def scale_short_side(video: ffmpeg.nodes.FilterableStream, short_side: int) -> ffmpeg.nodes.FilterableStream:
    """Shorter displayed side to ``short_side`` pixels, the other by the display aspect ratio, square pixels."""
    side = str(short_side)
    width = f"if(lt(dar,1),{side},max(1,round({side}*dar)))"
    height = f"if(lt(dar,1),max(1,round({side}/dar)),{side})"
    return video.filter("scale", w=width, h=height).filter("setsar", "1")


def run_decoder(command: list[str], stdin: bytes | None = None) -> tuple[subprocess.CompletedProcess, StreamInfo]:
    """Run an ffmpeg command that reads one input (with :data:`LOG_ARGS`); the finished process and what it
    said of the input. DecodeError with ffmpeg's reason when the input cannot be opened, has no video, or
    decodes with errors."""
    if stdin is None:
        process = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
    else:
        process = subprocess.run(command, input=stdin, capture_output=True)
    log = process.stderr.decode("utf-8", errors="replace")
    info = parse_stream_info(log)
    problem = first_problem(log)
    if problem or process.returncode != 0:
        raise DecodeError(problem or f"ffmpeg exited with status {process.returncode}")
    return process, info


def _run(command: list[str], settings: DecodeSettings, stdin: bytes | None, default_fps: float | None) -> DecodedVideo:
    process, info = run_decoder(command, stdin)
    try:
        jpegs = split_jpeg_stream(process.stdout)
    except JpegError as err:
        raise DecodeError(f"ffmpeg wrote an unreadable JPEG stream: {err}") from err
    if not jpegs:
        raise DecodeError("no video frames decoded")
    width, height = jpeg_size(jpegs[0])
    fps = settings.fps if settings.fps is not None else (info.fps or default_fps)
    return DecodedVideo(jpegs, fps, width, height, info.width, info.height, info.fps or default_fps)


def first_problem(log: str) -> str | None:
    """The first sign of damaged input in an ffmpeg log (``-loglevel level+info``), or None.

    Error and fatal messages count, and so do warnings about corrupt packets or frames: a truncated AVI
    decodes "successfully" with only those.
    """
    for line in log.splitlines():
        match = _LOG_LEVEL.search(line)
        if not match:
            continue
        level, message = match.groups()
        if level in ("fatal", "error") or (level == "warning" and "corrupt" in message.lower()):
            return message.strip()
    return None


def parse_stream_info(log: str) -> StreamInfo:
    """Size (upright), frame rate and rotation of the first non-cover-art video stream of input #0.

    Raises :class:`DecodeError` with ffmpeg's own reason when it could not open the input at all.
    """
    if "Input #0" not in log:
        raise DecodeError(first_problem(log) or "ffmpeg could not open the input")
    input_part = log.split("Stream mapping:")[0]
    lines = input_part.splitlines()
    for i, line in enumerate(lines):
        match = _VIDEO_STREAM.search(line)
        if not match or "(attached pic)" in line:
            continue
        size = _SIZE.search(match.group(1))
        if size is None:
            raise DecodeError(f"ffmpeg reported no frame size for the video stream: {line.strip()}")
        rotation = _stream_rotation(lines[i + 1:])
        width, height = int(size.group(1)), int(size.group(2))
        if rotation % 180 == 90:
            width, height = height, width
        return StreamInfo(width, height, _stream_rate(match.group(1)), rotation)
    raise DecodeError("no video stream (audio-only or not a video)")


def _stream_rate(description: str) -> float | None:
    rates = {kind: float(value) * (1000 if kilo else 1) for value, kilo, kind in _RATE.findall(description)}
    return rates.get("fps") or rates.get("tbr")


def _stream_rotation(following_lines: list[str]) -> int:
    """Rotation from the stream's side data or metadata lines (up to the next stream), in [0, 360)."""
    for line in following_lines:
        if "Stream #" in line:
            break
        match = _ROTATION.search(line)
        if match:
            return round(float(match.group(1))) % 360
    return 0
