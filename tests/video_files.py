"""Small real videos for tests, made with the same ffmpeg the toolkit uses (``from video_files import ...``).

``make_video(..., content="counter")`` encodes frame ``n`` as a flat image whose red value is
``COUNTER_STEP * n`` (green and blue 128), so a test can read back which source frame it got.
"""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from PIL import Image

from sifar.data.ffmpeg import ffmpeg_exe, has_encoder

COUNTER_STEP = 8


def run_ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; a failure shows its stderr."""
    result = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {result.stderr}")


def require_encoder(name: str) -> None:
    """Skip the calling test when this ffmpeg build cannot encode ``name``."""
    if not has_encoder(name):
        pytest.skip(f"the ffmpeg at {ffmpeg_exe()} has no {name} encoder")


def make_video(path: str | Path, frames: int = 12, size: tuple[int, int] = (64, 48), fps: float = 10,
               codec: str = "libx264", pix_fmt: str = "yuv420p", content: str = "testsrc2",
               output_args: Sequence[str] = ()) -> Path:
    """Encode ``frames`` frames of ``size`` (width, height) at ``fps`` into ``path`` (container from the suffix).

    ``content``: ``testsrc2`` (ffmpeg's moving test pattern) or ``counter`` (see the module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    source = f"color=black:size={width}x{height}:rate={fps}" if content == "counter" else \
        f"testsrc2=size={width + width % 2}x{height + height % 2}:rate={fps}"
    filters = [f"scale={width}:{height}"]
    if content == "counter":
        filters = ["format=rgb24", f"geq=r='min(255,{COUNTER_STEP}*N)':g=128:b=128"]
    run_ffmpeg("-f", "lavfi", "-i", source, "-vf", ",".join(filters), "-frames:v", str(frames),
               "-c:v", codec, "-pix_fmt", pix_fmt, *output_args, str(path))
    return path


def counter_value(jpeg: bytes) -> int:
    """The source frame number a ``counter`` frame shows."""
    red = np.asarray(Image.open(BytesIO(jpeg)).convert("RGB"))[..., 0].mean()
    return int(round(float(red) / COUNTER_STEP))


def jpeg_pixels(jpeg: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a JPEG."""
    return np.asarray(Image.open(BytesIO(jpeg)).convert("RGB"))
