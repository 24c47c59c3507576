"""Clip augmentation on CPU workers (uint8, whole clips at once) and normalization on the device.

Training (TSN's multi-scale crop, as SIFAR trains): a crop whose width and height are each one of
``scales`` times the short side (at most one scale step apart, so aspect ratios stay moderate), at a
random place, resized to ``size x size``, optionally flipped; one crop and one flip for all frames of a
clip, so motion stays intact. Evaluation: the short side scaled to ``size``, then one centre crop or
three crops (top-left, centre, bottom-right along the long side).

Clips come in as a (T, H, W, C) uint8 tensor (or a list of T ``(H, W, C)`` frames) and go out as
``(T, C, size, size)`` uint8 tensors, channels-last in memory (a permuted view): that keeps the resize on
torch's fast uint8 path and saves a copy per clip. Training copies only the crop (flipped on the way)
and resizes it straight into a row of the batch (``out``): no tensor per clip.
:func:`normalize`, on the device, returns contiguous float tensors.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch

from sifar.data.clip import check_crops
from sifar.torch_compat import resize_antialiased_into

MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)
NO_FLIP_DATASETS = frozenset({"ssv2", "jester"})
CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class CropJitter:
    """One clip's training augmentation: crop size as fractions of the short side, crop place as
    fractions of the free room (0 = left/top, 1 = right/bottom), and whether to flip."""

    scale_w: float
    scale_h: float
    x: float
    y: float
    flip: bool


def default_flip(dataset: str | None) -> bool:
    """Horizontal flips are on except where left and right are part of the label (SSV2, Jester)."""
    return (dataset or "").lower() not in NO_FLIP_DATASETS


def draw_crop_jitter(rng: random.Random, flip: bool, scales: Sequence[float] = MULTI_SCALES,
                     max_distort: int = 1) -> CropJitter:
    """Draw one clip's augmentation; always five draws from ``rng``, whatever the clip looks like."""
    pairs = [(w, h) for w in range(len(scales)) for h in range(len(scales)) if abs(w - h) <= max_distort]
    w, h = pairs[rng.randrange(len(pairs))]
    x, y, flip_draw = rng.random(), rng.random(), rng.random()
    return CropJitter(scales[w], scales[h], x, y, flip and flip_draw < 0.5)


def jitter_box(jitter: CropJitter, width: int, height: int) -> tuple[int, int, int, int]:
    """The crop ``(left, top, crop_width, crop_height)`` of a ``width x height`` frame."""
    short = min(width, height)
    crop_w = min(width, max(1, round(short * jitter.scale_w)))
    crop_h = min(height, max(1, round(short * jitter.scale_h)))
    left = int(jitter.x * (width - crop_w + 1)) if width > crop_w else 0
    top = int(jitter.y * (height - crop_h + 1)) if height > crop_h else 0
    return min(left, width - crop_w), min(top, height - crop_h), crop_w, crop_h


def train_transform(frames: torch.Tensor | Sequence[torch.Tensor], jitter: CropJitter, size: int,
                    out: torch.Tensor | None = None, channels: str = "RGB") -> torch.Tensor:
    """T frames (H, W, C) uint8 -> (T, C, size, size) uint8: the same crop and flip for every frame.

    ``out``: a (T, C, size, size) uint8 tensor (e.g. a row of a batch) that receives the result, returned.
    ``channels``: the frames' channel order, "RGB" or "BGR" (3 channels); the result is RGB either way.
    Decoding a clip that is to be flipped as BGR makes its flip ~2x cheaper (:func:`copy_crop`).
    (The loader's ``libjpeg`` decoder decodes the crop alone, flipped, and only calls :func:`resize_crop`.)
    """
    clip = as_clip(frames)
    left, top, crop_w, crop_h = jitter_box(jitter, clip.shape[2], clip.shape[1])
    return resize_crop(copy_crop(clip[:, top:top + crop_h, left:left + crop_w], jitter.flip, channels), size, out)


def resize_crop(crop: torch.Tensor, size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """A contiguous (T, h, w, C) uint8 crop -> (T, C, size, size), into ``out`` when given."""
    return _resize(crop.permute(0, 3, 1, 2), (size, size), out)


def copy_crop(crop: torch.Tensor, flip: bool, channels: str = "RGB") -> torch.Tensor:
    """A contiguous RGB copy of a (T, h, w, C) view, mirrored left-right when ``flip``.

    One copy: the resize reads contiguous channels-last input faster than the view (by about what the copy
    costs), and it is mirror-symmetric (same bits), so the crop can be flipped before it. Mirroring pixels
    (3-byte steps) is torch's slow generic path; reversing the bytes of each row is a plain reversal that
    also turns BGR pixels into RGB ones, so a BGR crop is mirrored and converted at once (0.15 vs 0.36 ms
    for 8 crops of 240p frames).
    """
    check_channels(channels)
    if channels == "BGR" and crop.shape[-1] != 3:
        raise ValueError(f"BGR frames have 3 channels, got {crop.shape[-1]}")
    if channels == "BGR" and flip:
        return crop.flatten(2).flip(-1).view(crop.shape)
    if channels == "BGR":
        return crop.flip(-1)
    return crop.flip(2) if flip else crop.contiguous()


def check_channels(channels: str) -> None:
    """ValueError unless ``channels`` is a channel order the decoders and transforms take."""
    if channels not in CHANNEL_ORDERS:
        raise ValueError(f"channels must be one of {', '.join(CHANNEL_ORDERS)}, got {channels!r}")


def resize_short_side(frames: torch.Tensor | Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """T frames (H, W, C) uint8 -> (T, C, H', W') uint8 with min(H', W') == size, aspect kept."""
    clip = as_clip(frames)
    height, width = clip.shape[1:3]
    scale = size / min(height, width)
    target = (max(size, round(height * scale)), max(size, round(width * scale)))
    return _resize(clip.permute(0, 3, 1, 2), target)


def spatial_crops(frames: torch.Tensor, size: int, crops: int) -> torch.Tensor:
    """(T, C, H, W) -> (crops, T, C, size, size): centre crop, or top-left / centre / bottom-right."""
    check_crops(crops)
    height, width = frames.shape[-2:]
    if min(height, width) < size:
        raise ValueError(f"frames of {height}x{width} are smaller than the {size}x{size} crop")
    views = []
    for place in crop_places(crops):
        top, left = crop_offset(height, width, size, place)
        views.append(frames[..., top:top + size, left:left + size])
    return torch.stack(views)


def crop_places(crops: int) -> tuple[float, ...]:
    """Where evaluation's crops sit along each side: centre, or top-left / centre / bottom-right."""
    return (0.5,) if crops == 1 else (0.0, 0.5, 1.0)


def crop_offset(height: int, width: int, size: int, place: float) -> tuple[int, int]:
    """(top, left) of the ``size x size`` crop at ``place`` (0..1) of a ``height x width`` frame's free room."""
    return round((height - size) * place), round((width - size) * place)


def eval_transform(frames: Sequence[torch.Tensor], size: int, crops: int = 1) -> torch.Tensor:
    """T frames (H, W, C) uint8 -> (crops, T, C, size, size) uint8: short side to ``size``, then the crops."""
    return spatial_crops(resize_short_side(frames, size), size, crops)


def device_clips(frames: torch.Tensor, device: torch.device, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> torch.Tensor:
    """The device-side stage of training, evaluation and prediction alike: uint8 clips moved to ``device``
    (4x fewer bytes than floats), then normalized there (:func:`normalize`)."""
    return normalize(frames.to(device, non_blocking=True), mean, std)


def normalize(frames: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (..., C, H, W) -> contiguous float ``(x / 255 - mean) / std``, ImageNet mean/std by default.

    Meant for the device: move the uint8 batch first (4x fewer bytes), then normalize there.
    """
    if mean is None or std is None:
        # timm is imported here, not at module level: workers and data tools need only the CPU part
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        mean = IMAGENET_DEFAULT_MEAN if mean is None else mean
        std = IMAGENET_DEFAULT_STD if std is None else std
    if frames.ndim < 3 or frames.shape[-3] != len(mean) or len(mean) != len(std):
        raise ValueError(f"expected (..., {len(mean)}, H, W) frames for {len(mean)} channel means, "
                         f"got {tuple(frames.shape)}")
    shape = (len(mean), 1, 1)
    mean_t = torch.as_tensor(mean, dtype=dtype, device=frames.device).view(shape) * 255
    std_t = torch.as_tensor(std, dtype=dtype, device=frames.device).view(shape) * 255
    out = torch.empty(frames.shape, dtype=dtype, device=frames.device)
    return torch.sub(frames.to(dtype), mean_t, out=out).div_(std_t)


def _resize(frames: torch.Tensor, size: tuple[int, int], out: torch.Tensor | None = None) -> torch.Tensor:
    """Antialiased bilinear resize of (N, C, H, W) uint8 (channels-last: torch's vectorized uint8 path),
    into ``out`` (default: a new channels-last tensor)."""
    if tuple(frames.shape[-2:]) == size:
        return frames if out is None else out.copy_(frames)
    if out is None:
        out = frames.new_empty((frames.shape[0], *size, frames.shape[1])).permute(0, 3, 1, 2)
    return resize_antialiased_into(frames, size, out)


def as_clip(frames: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A (T, H, W, C) uint8 tensor from one, or from T (H, W, C) frames (stacked); ValueError for an empty
    clip, frames that differ in size, or another dtype or shape."""
    if not isinstance(frames, torch.Tensor):
        if len(frames) == 0:
            raise ValueError("a clip needs at least one frame")
        if any(frame.shape != frames[0].shape for frame in frames):
            raise ValueError(f"the frames of a clip differ in size: {sorted({tuple(f.shape) for f in frames})}")
        frames = torch.stack(list(frames))
    if frames.ndim != 4 or frames.dtype != torch.uint8 or len(frames) == 0:
        raise ValueError(f"expected uint8 frames shaped (T, H, W, C) with T >= 1, got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    return frames
