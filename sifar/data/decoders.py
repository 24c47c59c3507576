"""JPEG decoders for the loader: JPEG bytes -> uint8 (N, H, W, 3) frames, or only the training crop of each.

- ``libjpeg``: this package's C extension over the system's libjpeg-turbo (``sifar/data/_jpeg_region.c``,
  built at install where a C compiler and the library's headers are found). It decodes a training crop
  without the rest of the frame: on 426x240 frames a crop takes 0.095 ms against 0.145 for the whole frame
  (tools/bench_loader.py measures the loader with it), with the same pixels.
- ``simplejpeg``: libjpeg-turbo bundled in a wheel, whole frames only, decoded straight into the clip's tensor.
- ``pillow``: the fallback; the same pixels, slower.

``auto`` takes ``libjpeg`` where the extension is built, else ``simplejpeg``.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from typing import Callable, Literal, Sequence, get_args

import numpy as np
import simplejpeg
import torch
from PIL import Image

from sifar.data.transforms import CropJitter, as_clip, check_channels, copy_crop, jitter_box

try:
    from sifar.data import _jpeg_region
except ImportError:  # not built: no C compiler or no libjpeg-turbo headers when installed (see setup.py)
    _jpeg_region = None

Decoder = Literal["auto", "libjpeg", "simplejpeg", "pillow"]
DECODERS: tuple[str, ...] = get_args(Decoder)
DECODE_ERRORS = (RuntimeError, ValueError)
_SCALE_DENOMINATORS = (8, 4, 2)


REGION_DECODER_INSTALL = ("to build it, install a C compiler and libjpeg-turbo's headers (e.g. apt install "
                          "libjpeg62-turbo-dev), then pip install -e . again")


def region_decoding_available() -> bool:
    """True when the ``libjpeg`` decoder (the compiled region decoder) is built."""
    return _jpeg_region is not None


def auto_decoder() -> tuple[str, str]:
    """The decoder ``auto`` takes here, and why."""
    if region_decoding_available():
        return "libjpeg", "the region decoder is built: training decodes only each clip's crop"
    return "simplejpeg", ("the region decoder (libjpeg) is not built: whole frames are decoded; "
                          f"{REGION_DECODER_INSTALL}")


@functools.cache
def warn_once_if_decoding_whole_frames() -> None:
    """Warn, once per process, that ``auto`` falls back from the region decoder to simplejpeg (the loader calls
    this where it is built, not in its workers)."""
    if not region_decoding_available():
        warnings.warn(f"JPEG decoder: simplejpeg, since {auto_decoder()[1]}", stacklevel=3)


def check_decoder(name: str) -> None:
    """ValueError unless ``name`` is one of :data:`DECODERS` and, for ``libjpeg``, built."""
    if name not in DECODERS:
        raise ValueError(f"decoder: unknown decoder {name!r} (one of {', '.join(DECODERS)})")
    if name == "libjpeg" and not region_decoding_available():
        raise ValueError(f"decoder: the libjpeg decoder is not built ({REGION_DECODER_INSTALL}); use auto or "
                         "simplejpeg")


class JpegDecoder:
    """JPEG bytes -> (N, H, W, 3) uint8 tensors, the frames of a clip decoded into one tensor.

    When the stored frames are at least twice as large as needed, every backend shrinks them while
    decoding (DCT-domain scaling by 1/2, 1/4 or 1/8, Pillow's draft mode), which skips most of the work.

    ``channels``: "RGB" or "BGR"; libjpeg-turbo writes either at the same cost, Pillow gives RGB and its BGR
    is a copy with the channels reversed.

    ``reuse_memory``: decode every clip into the same memory (libjpeg and simplejpeg), valid until the next
    call. A clip of 8 frames at 426x240 takes 2.4 MB, and memory that large comes fresh from the system each
    time, a page fault per 4 KiB (~0.1 ms a clip); the training pipeline copies or resizes each clip at once.
    """

    def __init__(self, backend: str = "auto", reuse_memory: bool = False):
        check_decoder(backend)
        if backend == "auto":
            backend = auto_decoder()[0]
        self.backend = backend
        self._memory = torch.empty(0, dtype=torch.uint8) if reuse_memory else None

    def frames(self, jpegs: dict[int, bytes], indices: Sequence[int], needed_short_side: int = 0,
               stored_short_side: int = 0, channels: str = "RGB") -> torch.Tensor:
        """(len(indices), H, W, 3) uint8 frames for ``indices``; each distinct frame decoded once."""
        draft = _draft_size(needed_short_side, stored_short_side)
        return _each_distinct_once(jpegs, indices, lambda distinct: self.decode_many(distinct, draft, channels))

    def crops(self, jpegs: dict[int, bytes], indices: Sequence[int], jitter: CropJitter, needed_short_side: int = 0,
              stored_short_side: int = 0) -> torch.Tensor:
        """(len(indices), h, w, 3) contiguous RGB: the crop ``jitter`` places on each frame, mirrored when it
        flips (:func:`sifar.data.transforms.jitter_box`); each distinct frame decoded once.

        ``libjpeg`` decodes only the crop's region; the others decode whole frames and copy the crop (a clip
        to be flipped decoded as BGR, whose mirror is then a byte reversal: :func:`~sifar.data.transforms.copy_crop`).
        """
        draft = _draft_size(needed_short_side, stored_short_side)
        return _each_distinct_once(jpegs, indices, lambda distinct: self._crops(distinct, jitter, draft))

    def decode_many(self, jpegs: Sequence[bytes], draft_short_side: int = 0, channels: str = "RGB") -> torch.Tensor:
        """(N, H, W, 3) uint8; with ``draft_short_side``, shrunk by a power of two keeping at least that.

        ValueError when a JPEG does not decode, the frames differ in size, or ``channels`` is unknown.
        """
        check_channels(channels)
        if not jpegs:
            raise ValueError("a clip needs at least one frame")
        if self.backend == "pillow":
            clip = as_clip([_decode_pillow(jpeg, draft_short_side) for jpeg in jpegs])
            return clip.flip(-1) if channels == "BGR" else clip
        if self.backend == "libjpeg":
            width, height, denominator = _decoded_size(jpegs[0], draft_short_side)
            return self._decode_regions(jpegs, (0, 0, width, height), denominator, bgr=channels == "BGR")
        return self._decode_simplejpeg(jpegs, draft_short_side, channels)

    def _crops(self, jpegs: Sequence[bytes], jitter: CropJitter, draft_short_side: int) -> torch.Tensor:
        """(N, h, w, 3) contiguous RGB: the crop of each of N distinct frames, mirrored when ``jitter`` flips."""
        if self.backend == "libjpeg":
            width, height, denominator = _decoded_size(jpegs[0], draft_short_side)
            return self._decode_regions(jpegs, jitter_box(jitter, width, height), denominator, jitter.flip)
        channels = "BGR" if jitter.flip and self.backend == "simplejpeg" else "RGB"  # Pillow's BGR would be a copy
        frames = self.decode_many(jpegs, draft_short_side, channels)
        left, top, width, height = jitter_box(jitter, frames.shape[2], frames.shape[1])
        return copy_crop(frames[:, top:top + height, left:left + width], jitter.flip, channels)

    def _decode_regions(self, jpegs: Sequence[bytes], box: tuple[int, int, int, int], denominator: int,
                        mirror: bool = False, bgr: bool = False) -> torch.Tensor:
        """(N, h, w, 3): the ``box`` (left, top, width, height) of each JPEG decoded at 1/``denominator``."""
        left, top, width, height = box
        regions = self._take(len(jpegs) * height * width * 3).view(len(jpegs), height, width, 3)
        sizes = {_jpeg_region.decode_region(jpeg, row, left, top, width, height, denominator, mirror, bgr)
                 for jpeg, row in zip(jpegs, regions.numpy())}
        if len(sizes) > 1:
            raise ValueError(f"the frames of a clip differ in size: {sorted(sizes)} (width, height)")
        return regions

    def _decode_simplejpeg(self, jpegs: Sequence[bytes], draft_short_side: int, channels: str) -> torch.Tensor:
        options = {"colorspace": channels}
        if draft_short_side:
            options.update(min_height=draft_short_side, min_width=draft_short_side, min_factor=2)
        height, width = simplejpeg.decode_jpeg_header(jpegs[0])[:2]  # before scaling: enough room
        memory = self._take(len(jpegs) * height * width * 3)
        first = simplejpeg.decode_jpeg(jpegs[0], buffer=memory.numpy(), **options)  # at the start
        frames = memory[:len(jpegs) * first.size].view(len(jpegs), *first.shape)
        for row, jpeg in zip(frames.numpy()[1:], jpegs[1:]):
            try:
                shape = simplejpeg.decode_jpeg(jpeg, buffer=row, **options).shape  # smaller frames fit the row
            except ValueError:  # a larger one does not: say that, not that the buffer is too small
                if simplejpeg.decode_jpeg_header(jpeg)[:2] == (height, width):
                    raise
                shape = None
            if shape != first.shape:
                raise ValueError(f"the frames of a clip differ in size (the first decodes to {first.shape[:2]})")
        return frames

    def _take(self, size: int) -> torch.Tensor:
        """``size`` bytes of uninitialized memory: the reused memory (grown when too small) or new."""
        if self._memory is None:
            return torch.empty(size, dtype=torch.uint8)
        if len(self._memory) < size:
            self._memory = torch.empty(size, dtype=torch.uint8)
        return self._memory[:size]


def _each_distinct_once(jpegs: dict[int, bytes], indices: Sequence[int],
                        decode: Callable[[list[bytes]], torch.Tensor]) -> torch.Tensor:
    """``decode`` of the distinct frames among ``indices``, its rows repeated in the order of ``indices``
    (short videos repeat frames)."""
    distinct = list(dict.fromkeys(indices))
    decoded = decode([jpegs[i] for i in distinct])
    if len(distinct) == len(indices):
        return decoded
    row = {index: n for n, index in enumerate(distinct)}
    return decoded[[row[i] for i in indices]]


def _draft_size(needed_short_side: int, stored_short_side: int) -> int:
    """The short side to shrink frames to while decoding, or 0 when they cannot shrink by 2x."""
    return needed_short_side if 0 < 2 * needed_short_side <= stored_short_side else 0


def _decoded_size(jpeg: bytes, draft_short_side: int) -> tuple[int, int, int]:
    """(width, height, d): the JPEG's size decoded at 1/d, d the largest of 8, 4, 2 that keeps the short side
    >= ``draft_short_side`` (1 when none does, or for 0)."""
    width, height = _jpeg_region.image_size(jpeg)
    short = min(width, height)
    wanted = (d for d in _SCALE_DENOMINATORS if _ceil_div(short, d) >= draft_short_side > 0)
    denominator = next(wanted, 1)
    return _ceil_div(width, denominator), _ceil_div(height, denominator), denominator


def _ceil_div(size: int, denominator: int) -> int:
    """libjpeg's size for 1/denominator scaling."""
    return -(-size // denominator)


def _decode_pillow(data: bytes, draft_short_side: int = 0) -> torch.Tensor:
    try:
        image = Image.open(io.BytesIO(data), formats=("JPEG",))
        if draft_short_side:
            scale = draft_short_side / min(image.size)
            image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        return torch.from_numpy(np.array(image.convert("RGB") if image.mode != "RGB" else image))
    except (OSError, SyntaxError) as err:  # Pillow's errors for bytes it cannot decode
        raise ValueError(f"the JPEG does not decode: {err}") from err
