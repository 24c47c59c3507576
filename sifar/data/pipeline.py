"""The per-worker pipelines of the loader, as webdataset stages: read each sample's JSON and only its
sampled JPEGs, shuffle, decode and crop into batch memory (training), or decode every view (evaluation).
:mod:`sifar.data.loader` describes the stages and runs them in its DataLoader workers."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from sifar.data.batch_memory import BatchMemory, BatchRows, Clip, Shipment, collate_clips
from sifar.data.clip import ClipSettings, check_crops
from sifar.data.decoders import DECODE_ERRORS, Decoder, JpegDecoder, check_decoder
from sifar.data.loader_stats import LoaderStats
from sifar.data.sampling import eval_indices, train_indices
from sifar.data.shard_format import SampleInfo
from sifar.data.sources import ShardSource, open_shard
from sifar.data.tar_reader import SampleError, ShardSample, TarMemberReader, read_samples
from sifar.data.transforms import (MULTI_SCALES, CropJitter, default_flip, draw_crop_jitter, resize_crop,
                                   resize_short_side, spatial_crops)
from sifar.config_fields import help_field, validate
from sifar.io import describe_error, is_url

_INITIAL_SHUFFLE = 100


@dataclass(frozen=True)
class LoaderSettings:
    """How clips are loaded (the clip itself is :class:`~sifar.data.clip.ClipSettings`): batches, worker
    processes, shuffling, the JPEG decoder and how hard to try a shard that will not open."""

    batch_size: int = help_field(32, "Clips per step per process.", min=1)
    workers: int = help_field(4, "Loader worker processes per process (0: in the calling process).", min=0)
    shuffle_buffer: int = help_field(500, "Samples held for shuffling per worker (only their sampled JPEGs).",
                                     min=0)
    decoder: Decoder = help_field("auto", "JPEG decoder: auto, libjpeg (decodes only the training crop), "
                                          "simplejpeg or pillow.")
    shard_retries: int = help_field(2, "Tries after the first to open (or, streamed, re-read) a shard.", min=0)
    retry_delay: float = help_field(1.0, "Seconds before the first retry, doubling with each.", min=0)
    resident: bool = help_field(False, "Training: decode the split once, hold it on the training device and "
                                       "draw batches there (datasets that fit in half its memory; no worker "
                                       "decodes per step).")

    def __post_init__(self) -> None:
        validate(self, partial(check_decoder, self.decoder))


@dataclass(frozen=True)
class LoaderConfig:
    """Everything a worker needs to build its pipeline: the clip (its frames and size given, its flip forced
    where the dataset is known), the loader settings, and what :func:`sifar.data.loader.build_loader`
    resolves (``training``, the evaluation views, ``rank``, ``world_size``, ``steps_per_epoch``)."""

    clip: ClipSettings
    loader: LoaderSettings = LoaderSettings()
    training: bool = True
    clips: int = 1  # evaluation: temporal clips per video
    crops: int = 1  # evaluation: 1 (centre) or 3 (top-left, centre, bottom-right) per clip
    scales: tuple[float, ...] = MULTI_SCALES  # training's multi-scale crop
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    steps_per_epoch: int = 0

    def __post_init__(self) -> None:
        if not self.clip.resolved:
            raise ValueError(f"a loader needs the clip's frames and size, got {self.clip}")
        for name in ("clips", "world_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_crops(self.crops)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside a world of {self.world_size}")
        if self.training and (self.clips > 1 or self.crops > 1):
            raise ValueError("clips and crops are evaluation views; training takes one random clip")
        if self.training and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 for training, got {self.steps_per_epoch}")

    @property
    def views(self) -> int:
        return self.clips * self.crops


class SourceLoader:
    """What every loader reports from its ``source`` and ``config`` (the streaming :class:`~sifar.data.loader.
    VideoLoader` and the resident :class:`~sifar.data.resident.ResidentLoader`)."""

    source: ShardSource
    config: LoaderConfig
    epoch: int
    start_batch: int

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch of the next iteration, and the batch it starts at (training only)."""
        if start_batch and not self.config.training:
            raise ValueError("start_batch resumes a training epoch; evaluation always runs whole")
        if not 0 <= start_batch <= self.config.steps_per_epoch:
            raise ValueError(f"start_batch must be within 0..{self.config.steps_per_epoch}, got {start_batch}")
        self.epoch = epoch
        self.start_batch = start_batch

    @property
    def steps_per_epoch(self) -> int:
        return self.config.steps_per_epoch

    @property
    def classes(self) -> list[str] | None:
        return self.source.classes

    @property
    def num_classes(self) -> int | None:
        return self.source.num_classes


# ---- pipeline stages -------------------------------------------------------------------------------------


def _read_clips(shards: Iterable[dict[str, Any]], select: Callable, stats: LoaderStats, retries: int,
                retry_delay: float, give_up_after: int | None = None) -> Iterator[ShardSample]:
    """Samples with the JPEG bytes of their sampled frames; bad samples and shards skipped and counted.

    ``give_up_after``: raise once this many shards in a row gave no usable sample (endless training
    streams only; a finite evaluation list just ends).
    """
    dead: set[str] = set()  # shards that could not be opened: not tried again by this stream
    barren = 0
    for shard in shards:
        url = shard["url"]
        found = False
        if url not in dead:
            for sample in _read_shard(url, select, shard.get("keep"), stats, retries, retry_delay, dead):
                found = True
                yield sample
        barren = 0 if found else barren + 1
        if give_up_after is not None and barren >= give_up_after:
            raise RuntimeError(f"no usable sample in the last {barren} shards read (last: {url}); "
                               "is the source readable?")


read_clips = wds.pipelinefilter(_read_clips)


def _read_shard(url: str, select: Callable, keep: Callable | None, stats: LoaderStats, retries: int,
                retry_delay: float, dead: set[str]) -> Iterator[ShardSample]:
    """One shard's usable samples. Opening is retried with back-off, and so is a URL whose stream breaks
    off, from the sample where it broke; after ``retries`` the shard is skipped and reported."""
    resume_at, opened, error = 0, False, None
    for attempt in range(retries + 1):
        if attempt:
            stats.add("shard_retries")
            time.sleep(retry_delay * 2 ** (attempt - 1))
        try:
            stream = open_shard(url)
        except Exception as err:  # noqa: BLE001 - file systems and network libraries raise their own types
            error = err
            continue
        opened = True
        with stream:
            try:
                reader = TarMemberReader(stream, url, seekable=not is_url(url))
                for item in read_samples(reader, select, partial(_wanted, resume_at, keep)):
                    resume_at = item.position + 1
                    stats.read_from(url)
                    if isinstance(item, SampleError):
                        kind = "missing_frames" if item.missing_frames else "bad_samples"
                        stats.report(kind, f"skipping sample {item.key} of {url}: {item.reason}")
                    else:
                        yield item
                return
            except Exception as err:  # noqa: BLE001 - tar errors, I/O and network errors while streaming
                error = err
        if not is_url(url):
            break  # a local file reads the same way the next time
    if opened:
        stats.report_shard("broken_shards", url,
                           f"stopped reading shard {url} after {resume_at} samples: {describe_error(error)}")
    else:
        dead.add(url)
        stats.report_shard("failed_shards", url,
                           f"skipping shard {url}: cannot open it after {retries + 1} tries ({describe_error(error)})")


def _wanted(first: int, keep: Callable[[int], bool] | None, position: int) -> bool:
    return position >= first and (keep is None or keep(position))


def _split_for_worker(shards: Iterable[dict[str, Any]], worker: int, workers: int,
                      by_sample: bool) -> Iterator[dict[str, Any]]:
    """Shard ``i`` to global worker ``i % G``; or, ``by_sample``, sample ``p`` of shard ``i`` to ``(i + p) % G``."""
    for index, shard in enumerate(shards):
        if by_sample:
            yield {**shard, "keep": partial(_owns_sample, index, worker, workers)}
        elif index % workers == worker:
            yield shard


split_for_worker = wds.pipelinefilter(_split_for_worker)


def _owns_sample(shard_index: int, worker: int, workers: int, position: int) -> bool:
    return (shard_index + position) % workers == worker


def _own_samples(shards: Iterable[dict[str, Any]], starts: dict[str, int], worker: int,
                 workers: int) -> Iterator[dict[str, Any]]:
    """Each drawn shard restricted to global worker ``worker``'s samples: sample ``n`` of the split (counted
    from ``starts[url]``, the shard's first) belongs to worker ``n % workers``. Together the workers read
    every sample once per pass; unrestricted, each would read the same shard from its start and, its share
    of the epoch being smaller than the shard, never reach the shard's tail."""
    for shard in shards:
        yield {**shard, "keep": partial(_owns_sample, starts[shard["url"]], worker, workers)}


own_samples = wds.pipelinefilter(_own_samples)


def first_samples(source: ShardSource) -> list[int]:
    """Each shard's first sample's index in the split (from the manifest; the shard's index without one)."""
    counts = [source.samples_in(shard) for shard in source.shards]
    if any(count is None for count in counts):
        return list(range(len(counts)))
    return np.cumsum([0, *counts[:-1]]).tolist()


def _train_batches(samples: Iterable[ShardSample], config: LoaderConfig, rng: random.Random, stats: LoaderStats,
                   memory: BatchMemory, skip: int = 0) -> Iterator[Shipment]:
    """Full training batches, each clip written straight into its row of a buffer of ``memory`` (no tensor
    per clip, no stacking); the first ``skip`` samples only draw their random numbers (resume)."""
    decoder = JpegDecoder(config.loader.decoder, reuse_memory=True)  # each clip's crop is copied before the next
    shape = (config.loader.batch_size, config.clip.num_frames, config.clip.frame_size, config.clip.frame_size, 3)
    batch: BatchRows | None = None
    try:
        for index, sample in enumerate(samples):
            jitter = draw_crop_jitter(rng, _flip_for(config, sample.info), config.scales)
            if index < skip:
                continue
            if batch is None:
                batch = BatchRows(memory, shape)
            make_frames = partial(_train_frames, decoder, sample, jitter, config, batch.next_row())
            clip = _clip_or_report(sample, stats, make_frames)
            if clip is not None and batch.add(clip):
                full, batch = batch, None
                yield full.shipment()
    finally:
        if batch is not None:  # the stream ended (or was closed) with a batch half-filled
            memory.release(batch.slot)


train_batches = wds.pipelinefilter(_train_batches)


def _train_frames(decoder: JpegDecoder, sample: ShardSample, jitter: CropJitter, config: LoaderConfig,
                  out: torch.Tensor) -> torch.Tensor:
    # decoding may shrink frames (draft mode) as long as the smaller crop side still covers frame_size
    needed = math.ceil(config.clip.frame_size / min(jitter.scale_w, jitter.scale_h))
    crops = decoder.crops(sample.jpegs, sample.clips[0], jitter, needed, sample.info.stored_short_side)
    return resize_crop(crops, config.clip.frame_size, out)


def _decode_eval(samples: Iterable[ShardSample], config: LoaderConfig, stats: LoaderStats) -> Iterator[Clip]:
    """Evaluation clips with their views; samples whose frames do not decode are skipped and counted."""
    decoder = JpegDecoder(config.loader.decoder)
    for sample in samples:
        clip = _clip_or_report(sample, stats, partial(_eval_views, decoder, sample, config))
        if clip is not None:
            yield clip


decode_eval = wds.pipelinefilter(_decode_eval)


def _eval_views(decoder: JpegDecoder, sample: ShardSample, config: LoaderConfig) -> torch.Tensor:
    """(clips * crops, T, C, S, S), clip-major: view ``k * crops + c`` is clip k, crop c."""
    distinct = sorted({i for clip in sample.clips for i in clip})
    frames = decoder.frames(sample.jpegs, distinct, config.clip.frame_size, sample.info.stored_short_side)
    resized = resize_short_side(frames, config.clip.frame_size)
    row = {index: n for n, index in enumerate(distinct)}
    return torch.cat([spatial_crops(resized[[row[i] for i in clip]], config.clip.frame_size, config.crops)
                      for clip in sample.clips])


def _clip_or_report(sample: ShardSample, stats: LoaderStats, make_frames: Callable[[], torch.Tensor]) -> Clip | None:
    try:
        return Clip(make_frames(), sample.info.label, sample.key)
    except DECODE_ERRORS as err:
        stats.report("bad_samples", f"skipping sample {sample.key}: its frames do not decode ({err})")
        return None


def _count_samples(shipments: Iterable[Shipment], stats: LoaderStats) -> Iterator[Shipment]:
    for shipment in shipments:
        stats.add("samples", len(shipment.keys))
        yield shipment


count_samples = wds.pipelinefilter(_count_samples)

# ---- frame selection (called by read_clips with each sample's position and JSON) -------------------------


def _train_clip(config: LoaderConfig, rng: random.Random, position: int, info: SampleInfo) -> list[list[int]]:
    return [train_indices(info.num_frames, config.clip.num_frames, rng, config.clip.sampling, config.clip.stride)]


def _eval_clips(config: LoaderConfig, position: int, info: SampleInfo) -> list[list[int]]:
    return eval_indices(info.num_frames, config.clip.num_frames, config.clips, config.clip.sampling, config.clip.stride)


def _flip_for(config: LoaderConfig, info: SampleInfo) -> bool:
    forced = config.clip.flip_setting()
    return forced if forced is not None else default_flip(info.dataset)


# ---- per-worker pipelines ------------------------------------------------------------------------------


def _rng(*parts: object) -> random.Random:
    """A generator seeded by the parts' text (string seeds hash with SHA-512: stable across processes)."""
    return random.Random(":".join(str(p) for p in parts))


def _shard_seed(*parts: object) -> int:
    return _rng(*parts, "shards").getrandbits(31)


def training_pipeline(shards: list[str], starts: list[int], config: LoaderConfig, epoch: int, worker: int,
                      workers: int, start_batch: int, stats: LoaderStats, memory: BatchMemory) -> wds.DataPipeline:
    """Worker ``worker`` of ``workers`` on this rank: its batches ``worker, worker + workers, ...``.

    ``starts``: each shard's first sample's index in the split (see :func:`first_samples`)."""
    stream = (config.seed, epoch, config.rank, worker)
    batches = len(range(worker, config.steps_per_epoch, workers))
    skipped = len(range(worker, start_batch, workers))
    everyone = config.world_size * workers
    return wds.DataPipeline(
        wds.ResampledShards(shards, worker_seed=partial(_shard_seed, *stream), deterministic=True),
        own_samples(dict(zip(shards, starts)), config.rank * workers + worker, everyone)
        if len(shards) < everyone else None,
        read_clips(select=partial(_train_clip, config, _rng(*stream, "frames")), stats=stats,
                   retries=config.loader.shard_retries, retry_delay=config.loader.retry_delay,
                   give_up_after=max(10, 2 * len(shards))),
        wds.shuffle(config.loader.shuffle_buffer, initial=min(_INITIAL_SHUFFLE, config.loader.shuffle_buffer),
                    rng=_rng(*stream, "shuffle")) if config.loader.shuffle_buffer > 1 else None,
        train_batches(config, _rng(*stream, "augment"), stats, memory, skip=skipped * config.loader.batch_size),
        wds.slice(batches - skipped),
        count_samples(stats),
    )


def evaluation_pipeline(shards: list[str], config: LoaderConfig, worker: int, workers: int,
                        stats: LoaderStats, memory: BatchMemory) -> wds.DataPipeline:
    """Global worker ``rank * workers + worker`` of ``world_size * workers``: its share, in order."""
    everyone = config.world_size * workers
    return wds.DataPipeline(
        wds.SimpleShardList(shards),
        split_for_worker(config.rank * workers + worker, everyone, by_sample=len(shards) < everyone),
        read_clips(select=partial(_eval_clips, config), stats=stats, retries=config.loader.shard_retries,
                   retry_delay=config.loader.retry_delay),
        decode_eval(config, stats),
        wds.batched(config.loader.batch_size, collation_fn=partial(collate_clips, memory), partial=True),
        count_samples(stats),
    )

class ClipStream(IterableDataset):
    """The dataset each DataLoader worker iterates: builds that worker's pipeline for one epoch.

    With ``start_batch = k``, physical worker ``p`` plays the part of worker ``(p + k) % workers`` of the
    original run, so the round-robin order continues exactly at batch ``k``.
    """

    def __init__(self, source: ShardSource, config: LoaderConfig, epoch: int, start_batch: int,
                 stats: LoaderStats, free: Any, slots: int):
        super().__init__()
        self.source, self.config, self.epoch, self.start_batch, self.stats = source, config, epoch, start_batch, stats
        self.free, self.slots = free, slots  # BatchMemory's flags: ``slots`` per worker

    def __iter__(self) -> Iterator[Shipment]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        in_worker = info is not None  # in the calling process, a pooled buffer would never be let go
        memory = BatchMemory(self.free, worker * self.slots, self.slots if in_worker else 0, shared=in_worker)
        if self.config.training:
            role = (worker + self.start_batch) % workers
            pipeline = training_pipeline(self.source.shards, first_samples(self.source), self.config, self.epoch,
                                         role, workers, self.start_batch, self.stats, memory)
        else:
            pipeline = evaluation_pipeline(self.source.shards, self.config, worker, workers, self.stats, memory)
        return iter(pipeline)
