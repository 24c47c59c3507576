"""Datasets shipped as folders of JPEG frames (Jester): copy the frames as they are, or pass them through
ffmpeg when resizing or resampling is asked for."""

from __future__ import annotations

import re
from pathlib import Path

from sifar.data.ffmpeg import DecodedVideo, DecodeError, DecodeSettings, FrameRange, reencode_jpegs
from sifar.data.jpeg import JpegError, is_complete_jpeg, jpeg_size

FRAME_EXTENSIONS = (".jpg", ".jpeg")
_DIGITS = re.compile(r"(\d+)")


def frame_files(folder: Path) -> list[Path]:
    """The folder's JPEG files in frame order (numbers compared as numbers: 2 before 10)."""
    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and p.is_file()]
    return sorted(files, key=lambda p: [int(part) if part.isdigit() else part for part in _DIGITS.split(p.name)])


def read_frame_folder(folder: Path, settings: DecodeSettings, fps: float | None,
                      frames: FrameRange | None = None) -> DecodedVideo:
    """A frame folder as a decoded video; raises :class:`DecodeError` for an empty folder or a bad JPEG."""
    files = frame_files(folder)
    if not files:
        raise DecodeError("no JPEG frames in the folder")
    jpegs = [path.read_bytes() for path in files]
    if settings.transforms_frames:
        return reencode_jpegs(jpegs, fps, settings, frames)
    span = frames or FrameRange()
    selected = jpegs[span.start:span.end][:settings.max_frames]
    if not selected:
        raise DecodeError(f"no frames in range [{span.start}, {span.end}) of {len(jpegs)}")
    width, height = _common_size(selected, files[span.start:])
    return DecodedVideo(selected, fps, width, height, width, height)


def _common_size(jpegs: list[bytes], files: list[Path]) -> tuple[int, int]:
    """The frames' shared size; a truncated, non-JPEG or differently sized frame is an error naming it."""
    sizes = set()
    for data, path in zip(jpegs, files):
        try:
            sizes.add(jpeg_size(data))
        except JpegError as err:
            raise DecodeError(f"{path.name}: {err}") from err
        if not is_complete_jpeg(data):
            raise DecodeError(f"{path.name}: truncated or damaged JPEG")
    if len(sizes) > 1:
        raise DecodeError(f"frames differ in size: {sorted(sizes)}")
    return sizes.pop()
