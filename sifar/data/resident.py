"""Training batches drawn from a split held decoded on the training device (``--resident``).

For datasets small enough to keep every stored frame in GPU memory and trained several runs at a time on
one GPU (the temporal study: six micro Swins on 64 px clips), where streamed each run would need loader
workers of its own beside its trainer and the cores would be what the runs share. Here the split is read
and decoded once (every stored frame, at its stored size), and each step samples its clips
as the streaming loader does (the same segment sampling, :func:`sifar.data.sampling.train_indices`, and
the same multi-scale crop and flip draws, :func:`sifar.data.transforms.draw_crop_jitter`), then gathers,
flips and resizes the crops on the device, one batched resize per crop size. The resize is torch's
antialiased bilinear, as on the workers, in float32 then rounded: within 1 grey level of the workers'
uint8 path.

Order: each epoch visits the split in a random order (seeded by seed, epoch and rank), again as often as
``steps_per_epoch`` needs; ``set_epoch(e, start_batch=k)`` resumes exactly, drawing the skipped batches'
random numbers without gathering them. Not for evaluation, which streams (sifar-eval, validation).
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Iterator

import torch
import torch.nn.functional as F

from sifar.data.batch_memory import Batch
from sifar.data.decoders import JpegDecoder
from sifar.data.pipeline import LoaderConfig, SourceLoader
from sifar.data.sampling import train_indices
from sifar.data.shard_format import SampleInfo
from sifar.data.shard_reader import read_shard
from sifar.data.sources import ShardSource
from sifar.data.transforms import CropJitter, default_flip, draw_crop_jitter, jitter_box

ClipDraw = tuple[int, list[int], CropJitter]  # (video, frame indices, crop)


class ResidentSplit:
    """Every stored frame of a split, decoded: ``frames`` (N, F, H, W, 3) uint8 on ``device`` (videos shorter
    than the longest are padded at the end), ``num_frames``, ``labels``, ``keys`` and ``flips`` per video."""

    def __init__(self, source: ShardSource, clip_flip: bool | None, device: torch.device, decoder: str = "auto"):
        videos, infos = [], []
        jpeg = JpegDecoder(decoder)
        for shard in source.shards:
            for sample in read_shard(shard):
                info = SampleInfo.parse(sample.meta, sample.key)
                videos.append(jpeg.decode_many(sample.frames))
                infos.append(info)
        if not videos:
            raise ValueError(f"--resident: {source.source} has no {source.split} samples")
        self.frames = _stack_padded(videos, source, device)
        self.num_frames = [len(video) for video in videos]
        self.labels = [info.label for info in infos]
        self.keys = [info.key for info in infos]
        self.flips = [default_flip(info.dataset) if clip_flip is None else clip_flip for info in infos]

    def __len__(self) -> int:
        return len(self.keys)


def _stack_padded(videos: list[torch.Tensor], source: ShardSource, device: torch.device) -> torch.Tensor:
    """(N, F, H, W, 3) on ``device``; ValueError naming a video whose frame size differs from the first's,
    or the memory the split needs when the device has less than that free."""
    height, width = videos[0].shape[1:3]
    for index, video in enumerate(videos):
        if tuple(video.shape[1:3]) != (height, width):
            raise ValueError(f"--resident needs frames of one size in {source.source}: sample {index} has "
                             f"{video.shape[2]}x{video.shape[1]}, the first {width}x{height}")
    shape = (len(videos), max(len(video) for video in videos), height, width, 3)
    needed = torch.Size(shape).numel()
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        if needed > free // 2:
            raise ValueError(f"--resident: the {source.split} split of {source.source} needs {needed / 2**30:.1f} "
                             f"GiB decoded, more than half of the {free / 2**30:.1f} GiB free on {device}; "
                             f"train without --resident")
    frames = torch.zeros(shape, dtype=torch.uint8, device=device)
    for index, video in enumerate(videos):
        frames[index, :len(video)] = video.to(device)
    return frames


class ResidentLoader(SourceLoader):
    """What :func:`sifar.data.loader.build_loader` returns for a resident training split: the interface of
    :class:`~sifar.data.loader.VideoLoader` (``set_epoch``, ``len``, ``stats`` and :class:`SourceLoader`'s)
    over batches already on the device."""

    def __init__(self, source: ShardSource, config: LoaderConfig, device: torch.device, epoch: int = 0,
                 start_batch: int = 0):
        if not config.training:
            raise ValueError("--resident holds a training split; evaluation streams its shards")
        self.source, self.config, self.device = source, config, device
        self.split = ResidentSplit(source, config.clip.flip_setting(), device, config.loader.decoder)
        self._delivered = 0
        self.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return self.config.steps_per_epoch - self.start_batch

    @property
    def stats(self) -> dict[str, int]:
        return {"samples": self._delivered, "resident_videos": len(self.split)}

    def __iter__(self) -> Iterator[Batch]:
        draws = self._epoch_draws()
        batch_size, skip = self.config.loader.batch_size, self.start_batch
        self.start_batch = 0  # a resume point applies to one iteration only
        for step in range(self.config.steps_per_epoch):
            batch = [next(draws) for _ in range(batch_size)]
            if step >= skip:
                self._delivered += batch_size
                yield self._gather(batch)

    def _epoch_draws(self) -> Iterator[ClipDraw]:
        """Each clip's video, frames and crop, in the epoch's order: the split shuffled, as often as needed."""
        clip, rng = self.config.clip, random.Random(f"{self.config.seed}:{self.epoch}:{self.config.rank}:resident")
        while True:
            for video in rng.sample(range(len(self.split)), len(self.split)):
                frames = train_indices(self.split.num_frames[video], clip.num_frames, rng, clip.sampling, clip.stride)
                yield video, frames, draw_crop_jitter(rng, self.split.flips[video], self.config.scales)

    def _gather(self, draws: list[ClipDraw]) -> Batch:
        """(B, T, 3, S, S) uint8 on the device: each clip's crop of its frames, flipped, resized; clips that
        share a crop size are gathered and resized together."""
        split, size = self.split, self.config.clip.frame_size
        height, width = split.frames.shape[2:4]
        out = torch.empty((len(draws), self.config.clip.num_frames, 3, size, size), dtype=torch.uint8,
                          device=self.device)
        groups: dict[tuple[int, int], list[list[int]]] = defaultdict(list)  # crop size -> its clips' indices
        for row, (video, frames, jitter) in enumerate(draws):
            left, top, crop_w, crop_h = jitter_box(jitter, width, height)
            groups[(crop_w, crop_h)].append([row, video, left, top, jitter.flip, *frames])
        for (crop_w, crop_h), members in groups.items():
            indices = torch.tensor(members).to(self.device)  # one copy to the device per crop size
            out[indices[:, 0]] = _resize_uint8(self._crops(indices[:, 1:], crop_w, crop_h), size)
        labels = torch.tensor([split.labels[video] for video, _, _ in draws]).to(self.device)
        return Batch(out, labels, [split.keys[video] for video, _, _ in draws])

    def _crops(self, indices: torch.Tensor, crop_w: int, crop_h: int) -> torch.Tensor:
        """(g, T, crop_h, crop_w, 3) uint8 for g clips of one crop size, each row of ``indices`` (video, left,
        top, flip, T frame indices): one advanced-indexing gather."""
        videos, lefts, tops, flips, frames = indices[:, 0], indices[:, 1], indices[:, 2], indices[:, 3], indices[:, 4:]
        ys = tops[:, None] + torch.arange(crop_h, device=self.device)
        xs = torch.arange(crop_w, device=self.device)
        xs = lefts[:, None] + torch.where(flips[:, None].bool(), crop_w - 1 - xs, xs)  # mirrored columns when flipped
        return self.split.frames[videos[:, None, None, None], frames[:, :, None, None], ys[:, None, :, None],
                                 xs[:, None, None, :]]


def _resize_uint8(crops: torch.Tensor, size: int) -> torch.Tensor:
    """(g, T, h, w, 3) uint8 -> (g, T, 3, size, size) uint8, antialiased bilinear (the workers' resize)."""
    g, t, h, w, _ = crops.shape
    pixels = crops.reshape(g * t, h, w, 3).permute(0, 3, 1, 2).float()
    if (h, w) != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return pixels.round_().clamp_(0, 255).to(torch.uint8).view(g, t, 3, size, size)
