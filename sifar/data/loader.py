"""``build_loader``: shards in, batches of uint8 clips out, as webdataset pipelines of small named stages.

One pipeline runs in each DataLoader worker (in the calling process when ``num_workers == 0``)::

    training    ResampledShards     shard URLs drawn with replacement, seeded by (seed, epoch, rank, worker)
                own_samples         only with fewer shards than ranks x workers: this worker's samples of
                                    each shard drawn (else every worker would reread the same shards' heads)
                read_clips          each sample's JSON first, its frame indices sampled, only those JPEGs read
                shuffle             a sample buffer, seeded the same way
                train_batches       crop jitter drawn; of each sampled JPEG only the crop decoded, flipped
                                    (the libjpeg decoder; the others decode whole frames and copy the crop),
                                    resized straight into the rows of a batch in the worker's reused shared
                                    memory (BatchMemory); full batches only
                slice               exactly this worker's share of ``steps_per_epoch``
    evaluation  SimpleShardList     every shard, in order, no shuffle
                split_for_worker    this rank and worker's shards; with fewer shards than ranks x workers,
                                    every shard but only every G-th of its samples
                read_clips          as above, with the deterministic evaluation clips
                decode_eval         clips x crops views per sample
                batched             the last batch of each worker may be short

Determinism: every random choice comes from generators seeded by (seed, epoch, rank, worker, stage),
never from global state, and the DataLoader hands out batches round-robin over its workers. So the same
arguments give the same batches, and ``start_batch`` resumes mid-epoch exactly: each worker reads its
share of the skipped batches and draws their random numbers but decodes no JPEG of them. (A skipped
sample whose JPEGs would have failed to decode is the one thing that shifts the rest by a sample.)

Bad data: a sample whose JSON cannot be used or whose sampled JPEG does not decode is dropped and
counted as ``bad_samples``; one whose sampled frame is missing as ``missing_frames``; a shard that
cannot be opened is retried with back-off (``shard_retries``), then skipped and counted
(``failed_shards``); a streamed shard that breaks off is reopened and read on from the sample where it
broke, within the same retries; a shard that stays broken (a cut-off file among them: one that ends
inside a member or without tar's end-of-archive blocks is reported as truncated) keeps what was read and is
counted (``broken_shards``). Failed and broken shards count once per shard, however many workers, epochs
or passes meet them. Each also warns with :class:`BadDataWarning` (the first 50 of each kind). Counts
of all workers together are in :attr:`VideoLoader.stats`. A training stream that finds nothing usable
in many shards in a row stops with an error instead of spinning.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import time
import warnings
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from sifar.data.decoders import DECODE_ERRORS, JpegDecoder, check_decoder
from sifar.data.sampling import Mode, eval_indices, train_indices
from sifar.data.sources import ShardSource, open_shard, resolve_source
from sifar.data.tar_reader import SampleError, ShardSample, TarMemberReader, read_samples
from sifar.data.transforms import (MULTI_SCALES, CropJitter, default_flip, draw_crop_jitter, resize_crop,
                                   resize_short_side, spatial_crops)
from sifar.io import describe_error, is_url

STAT_NAMES = ("samples", "bad_samples", "missing_frames", "shard_retries", "failed_shards", "broken_shards")
SHARD_EVENTS = ("failed_shards", "broken_shards")  # counted once per shard
MAX_WARNINGS = 50
_INITIAL_SHUFFLE = 100


class BadDataWarning(UserWarning):
    """A sample or a shard was skipped; the loader's ``stats`` count them."""


class Batch(NamedTuple):
    """``frames`` uint8 (B, T, C, H, W), or (B, V, T, C, H, W) when evaluating; ``labels`` int64 (B,)."""

    frames: torch.Tensor
    labels: torch.Tensor
    keys: list[str]


class Shipment(NamedTuple):
    """A batch as a worker sends it; :func:`_free_when_dropped` makes it a :class:`Batch`.

    ``labels`` stay a list: a tensor made in a worker travels in a shared-memory segment of its own, one per
    batch (~1 ms of the worker's time for 32 labels). ``slot``: the frames' buffer in the worker's
    BatchMemory (-1: none).
    """

    frames: torch.Tensor
    labels: list[int]
    keys: list[str]
    slot: int


class Clip(NamedTuple):
    """One sample as the decode stages produce it."""

    frames: torch.Tensor
    label: int
    key: str


class LoaderStats:
    """Counters shared by all worker processes of a loader (shared memory, so they survive the workers):
    bad-data events, and the samples read from each shard of ``shards`` (good or not: what a complete read
    of a shard must match in its manifest's count)."""

    def __init__(self, shards: list[str] = ()) -> None:
        self._counts = multiprocessing.Array("q", len(STAT_NAMES))
        self._shard_index = {url: i for i, url in enumerate(shards)}
        self._shard_reads = multiprocessing.Array("q", max(1, len(shards)))
        self._shard_flags = multiprocessing.Array("b", max(1, len(shards)))  # bit per SHARD_EVENTS kind

    def read_from(self, url: str) -> None:
        """Count one sample read from shard ``url`` (URLs outside the loader's list are not counted)."""
        index = self._shard_index.get(url)
        if index is not None:
            with self._shard_reads.get_lock():
                self._shard_reads[index] += 1

    def shard_reads(self) -> list[int]:
        """Samples read from each shard so far, in the loader's shard order."""
        with self._shard_reads.get_lock():
            return list(self._shard_reads[:len(self._shard_index)])

    def add(self, name: str, count: int = 1) -> int:
        """Add to a counter; returns its new value."""
        index = STAT_NAMES.index(name)
        with self._counts.get_lock():
            self._counts[index] += count
            return self._counts[index]

    def report(self, name: str, message: str) -> None:
        """Count one bad-data event and warn about it (the first ``MAX_WARNINGS`` of each kind only)."""
        count = self.add(name)
        if count < MAX_WARNINGS:
            warnings.warn(message, BadDataWarning, stacklevel=2)
        elif count == MAX_WARNINGS:
            warnings.warn(f"{message} (further {name} are counted in the loader's stats, not shown)",
                          BadDataWarning, stacklevel=2)

    def report_shard(self, name: str, url: str, message: str) -> None:
        """Count a shard event (``failed_shards``, ``broken_shards``) once per shard, however many workers,
        epochs or evaluation passes meet it; only the first meeting warns."""
        index = self._shard_index.get(url)
        if index is not None:
            bit = 1 << SHARD_EVENTS.index(name)
            with self._shard_flags.get_lock():
                if self._shard_flags[index] & bit:
                    return
                self._shard_flags[index] |= bit
        self.report(name, message)

    def as_dict(self) -> dict[str, int]:
        with self._counts.get_lock():
            return dict(zip(STAT_NAMES, self._counts[:]))


@dataclass(frozen=True)
class LoaderConfig:
    """Everything a worker needs to build its pipeline; see :func:`build_loader` for the meanings."""

    num_frames: int = 8
    frame_size: int = 192
    batch_size: int = 32
    num_workers: int = 4
    training: bool = True
    clips: int = 1
    crops: int = 1
    sampling: Mode = "uniform"
    stride: int = 4
    flip: bool | None = None
    scales: tuple[float, ...] = MULTI_SCALES
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    steps_per_epoch: int = 0
    shuffle_buffer: int = 500
    decoder: str = "auto"
    shard_retries: int = 2
    retry_delay: float = 1.0

    def __post_init__(self) -> None:
        positive = ("num_frames", "frame_size", "batch_size", "clips", "stride", "world_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "shuffle_buffer", "shard_retries", "retry_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.crops not in (1, 3):
            raise ValueError(f"crops must be 1 (centre) or 3 (top-left, centre, bottom-right), got {self.crops}")
        if self.sampling not in ("uniform", "dense"):
            raise ValueError(f"unknown sampling mode {self.sampling!r} (uniform or dense)")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside a world of {self.world_size}")
        check_decoder(self.decoder)
        if self.training and (self.clips > 1 or self.crops > 1):
            raise ValueError("clips and crops are evaluation views; training takes one random clip")
        if self.training and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 for training, got {self.steps_per_epoch}")

    @property
    def views(self) -> int:
        return self.clips * self.crops


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
        stats.report_shard("broken_shards", url, f"stopped reading shard {url} after {resume_at} samples: {describe_error(error)}")
    else:
        dead.add(url)
        stats.report_shard("failed_shards", url, f"skipping shard {url}: cannot open it after {retries + 1} tries ({describe_error(error)})")


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
    decoder = JpegDecoder(config.decoder, reuse_memory=True)  # each clip's crop is copied before the next
    shape = (config.batch_size, config.num_frames, config.frame_size, config.frame_size, 3)
    batch: BatchRows | None = None
    try:
        for index, sample in enumerate(samples):
            jitter = draw_crop_jitter(rng, _flip_for(config, sample.meta), config.scales)
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
    needed = math.ceil(config.frame_size / min(jitter.scale_w, jitter.scale_h))
    crops = decoder.crops(sample.jpegs, sample.clips[0], jitter, needed, _stored_short_side(sample.meta))
    return resize_crop(crops, config.frame_size, out)


def _decode_eval(samples: Iterable[ShardSample], config: LoaderConfig, stats: LoaderStats) -> Iterator[Clip]:
    """Evaluation clips with their views; samples whose frames do not decode are skipped and counted."""
    decoder = JpegDecoder(config.decoder)
    for sample in samples:
        clip = _clip_or_report(sample, stats, partial(_eval_views, decoder, sample, config))
        if clip is not None:
            yield clip


decode_eval = wds.pipelinefilter(_decode_eval)


def _eval_views(decoder: JpegDecoder, sample: ShardSample, config: LoaderConfig) -> torch.Tensor:
    """(clips * crops, T, C, S, S), clip-major: view ``k * crops + c`` is clip k, crop c."""
    distinct = sorted({i for clip in sample.clips for i in clip})
    frames = decoder.frames(sample.jpegs, distinct, config.frame_size, _stored_short_side(sample.meta))
    resized = resize_short_side(frames, config.frame_size)
    row = {index: n for n, index in enumerate(distinct)}
    return torch.cat([spatial_crops(resized[[row[i] for i in clip]], config.frame_size, config.crops)
                      for clip in sample.clips])


def _stored_short_side(meta: dict) -> int:
    return min(meta.get("width") or 0, meta.get("height") or 0)


def _clip_or_report(sample: ShardSample, stats: LoaderStats, make_frames: Callable[[], torch.Tensor]) -> Clip | None:
    try:
        return Clip(make_frames(), sample.meta["label"], sample.key)
    except DECODE_ERRORS as err:
        stats.report("bad_samples", f"skipping sample {sample.key}: its frames do not decode ({err})")
        return None


def _count_samples(shipments: Iterable[Shipment], stats: LoaderStats) -> Iterator[Shipment]:
    for shipment in shipments:
        stats.add("samples", len(shipment.keys))
        yield shipment


count_samples = wds.pipelinefilter(_count_samples)


class BatchMemory:
    """A DataLoader worker's shared-memory frame buffers, reused from batch to batch.

    Memory written for the first time costs a page fault per 4 KiB page, and torch gives a worker new
    shared memory for every batch: measured in tools/bench_loader.py, about 0.7 ms per clip of 8 frames
    at 192x192, half the cost of decoding the clip's JPEGs. So each worker keeps up to ``slots`` buffers
    in shared memory; a batch's frames are a view of one, and reach the main process without a copy.
    The main process marks a buffer free again (``free[slot] = 1``) once no tensor there views it any
    more (:func:`_free_when_dropped`); only then is it refilled. While every buffer is taken (the
    consumer holds on to batches), batches get fresh memory. With ``slots == 0`` (the loader in the
    calling process, or ``reuse_memory=False``) every batch gets fresh memory.
    """

    def __init__(self, free: Any, first_slot: int, slots: int, shared: bool):
        self._free, self._slots, self._shared = free, range(first_slot, first_slot + slots), shared
        self._buffers: dict[int, torch.Tensor] = {}

    def take(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, int]:
        """An uninitialized uint8 tensor of ``shape`` and its slot (-1: fresh memory, not pooled)."""
        for slot in self._slots:
            if self._free[slot]:
                buffer = self._buffers.get(slot)
                if buffer is None or buffer.shape[1:] != shape[1:] or len(buffer) < shape[0]:
                    buffer = self._buffers[slot] = _new_frames(shape, self._shared)
                self._free[slot] = 0
                return buffer[:shape[0]], slot
        return _new_frames(shape, self._shared), -1

    def release(self, slot: int) -> None:
        """Mark a buffer taken but never shipped free again (-1, fresh memory: nothing to do)."""
        if slot >= 0:
            self._free[slot] = 1


class BatchRows:
    """A batch filled clip by clip in one of ``memory``'s buffers, channels-last ((B, [V,] T, H, W, C)) in memory."""

    def __init__(self, memory: BatchMemory, shape: tuple[int, ...]):
        self.frames, self.slot = memory.take(shape)
        self.labels: list[int] = []
        self.keys: list[str] = []

    def next_row(self) -> torch.Tensor:
        """The next clip's row, ([V,] T, C, H, W) channels-last; it counts once :meth:`add` ed."""
        return self.frames[len(self.keys)].movedim(-1, -3)

    def add(self, clip: Clip) -> bool:
        """Count the row just written by ``clip``; True when the batch is full."""
        self.labels.append(clip.label)
        self.keys.append(clip.key)
        return len(self.keys) == len(self.frames)

    def shipment(self) -> Shipment:
        return Shipment(self.frames.movedim(-1, -3), self.labels, self.keys, self.slot)


def _new_frames(shape: tuple[int, ...], shared: bool) -> torch.Tensor:
    if not shared:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(math.prod(shape))  # what default_collate uses in workers
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


def _free_when_dropped(shipments: Iterable[Shipment], free: Any) -> Iterator[Batch]:
    """The batches; a pooled buffer is marked free once the last tensor viewing its memory is gone."""
    for frames, labels, keys, slot in shipments:
        if slot >= 0:
            weakref.finalize(frames.untyped_storage(), free.__setitem__, slot, 1).atexit = False
        yield Batch(frames, torch.tensor(labels, dtype=torch.int64), keys)


def collate_clips(memory: BatchMemory, clips: list[Clip]) -> Shipment:
    """Copy clips into a batch in one of ``memory``'s buffers: channels-last, returned as a permuted view."""
    batch = BatchRows(memory, (len(clips), *clips[0].frames.movedim(-3, -1).shape))
    for clip in clips:
        batch.next_row().copy_(clip.frames)
        batch.add(clip)
    return batch.shipment()


# ---- frame selection (called by read_clips with each sample's position and JSON) -------------------------


def _train_clip(config: LoaderConfig, rng: random.Random, position: int, meta: dict) -> list[list[int]]:
    frames = _check_meta(meta)
    return [train_indices(frames, config.num_frames, rng, config.sampling, config.stride)]


def _eval_clips(config: LoaderConfig, position: int, meta: dict) -> list[list[int]]:
    return eval_indices(_check_meta(meta), config.num_frames, config.clips, config.sampling, config.stride)


def _check_meta(meta: dict) -> int:
    """The video's frame count; raises ValueError for a JSON the loader cannot use."""
    frames, label = meta.get("num_frames"), meta.get("label", -1)
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {frames!r}")
    if not isinstance(label, int) or isinstance(label, bool):
        raise ValueError(f"label must be an integer, got {label!r}")
    meta["label"] = label
    return frames


def _flip_for(config: LoaderConfig, meta: dict) -> bool:
    return config.flip if config.flip is not None else default_flip(meta.get("dataset"))


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
                   retries=config.shard_retries, retry_delay=config.retry_delay,
                   give_up_after=max(10, 2 * len(shards))),
        wds.shuffle(config.shuffle_buffer, initial=min(_INITIAL_SHUFFLE, config.shuffle_buffer),
                    rng=_rng(*stream, "shuffle")) if config.shuffle_buffer > 1 else None,
        train_batches(config, _rng(*stream, "augment"), stats, memory, skip=skipped * config.batch_size),
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
        read_clips(select=partial(_eval_clips, config), stats=stats, retries=config.shard_retries,
                   retry_delay=config.retry_delay),
        decode_eval(config, stats),
        wds.batched(config.batch_size, collation_fn=partial(collate_clips, memory), partial=True),
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


class VideoLoader:
    """What :func:`build_loader` returns: iterate it for one epoch of :class:`Batch` es.

    Call ``set_epoch(e)`` before each training epoch (the epoch seeds shard order, shuffle, sampling and
    augmentation); ``set_epoch(e, start_batch=k)`` makes the next iteration resume epoch ``e`` at batch k.
    """

    def __init__(self, source: ShardSource, config: LoaderConfig, epoch: int = 0, start_batch: int = 0,
                 pin_memory: bool = False, prefetch_factor: int = 2, reuse_memory: bool = True):
        self.source = source
        self.config = config
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.reuse_memory = reuse_memory
        self._stats = LoaderStats(source.shards)
        self.set_epoch(epoch, start_batch)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch of the next iteration, and the batch it starts at (training only)."""
        if start_batch and not self.config.training:
            raise ValueError("start_batch resumes a training epoch; evaluation always runs whole")
        if not 0 <= start_batch <= self.config.steps_per_epoch:
            raise ValueError(f"start_batch must be within 0..{self.config.steps_per_epoch}, got {start_batch}")
        self.epoch = epoch
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[Batch]:
        if not self.config.training:  # an evaluation's counts are those of its last pass
            self._stats = LoaderStats(self.source.shards)
        workers = self.config.num_workers
        # per worker: the batches it may have queued, and two the consumer holds (the current, the last)
        slots = self.prefetch_factor + 2 if workers and self.reuse_memory else 0
        free = multiprocessing.RawArray("b", [1] * max(1, slots * workers))
        stream = ClipStream(self.source, self.config, self.epoch, self.start_batch, self._stats, free, slots)
        self.start_batch = 0  # a resume point applies to one iteration only
        # A private generator: creating the iterator must not draw from the global torch RNG, or a resumed
        # run's drop-path and mixup streams would shift by one draw (all the data's randomness is seeded anyway).
        loader = wds.WebLoader(stream, batch_size=None, num_workers=workers, pin_memory=self.pin_memory,
                               prefetch_factor=self.prefetch_factor if workers else None,
                               generator=torch.Generator().manual_seed(self.config.seed))
        return _free_when_dropped(loader, free)

    def __len__(self) -> int:
        """Batches of the next iteration on this rank (evaluation: from the manifest's sample counts)."""
        if self.config.training:
            return self.config.steps_per_epoch - self.start_batch
        return _evaluation_batches(self.source, self.config)

    @property
    def steps_per_epoch(self) -> int:
        return self.config.steps_per_epoch

    @property
    def stats(self) -> dict[str, int]:
        """Counts so far, all workers together: samples delivered and every kind of bad data skipped."""
        return self._stats.as_dict()

    def shard_reads(self) -> list[tuple[str, int | None, int]]:
        """(shard, samples its manifest lists or None, samples read so far) for every shard of the source."""
        reads = self._stats.shard_reads()
        return [(url, self.source.samples_in(url), read) for url, read in zip(self.source.shards, reads)]

    @property
    def classes(self) -> list[str] | None:
        return None if self.source.manifest is None else self.source.manifest.classes

    @property
    def num_classes(self) -> int | None:
        return None if self.source.manifest is None else self.source.manifest.num_classes


def _evaluation_batches(source: ShardSource, config: LoaderConfig) -> int:
    counts = [source.samples_in(shard) for shard in source.shards]
    if any(count is None for count in counts):
        raise TypeError(f"the length of an evaluation over {source.source} needs its manifest")
    workers = max(1, config.num_workers)
    everyone = config.world_size * workers
    total = 0
    for worker in range(workers):
        me = config.rank * workers + worker
        if len(counts) >= everyone:
            samples = sum(count for i, count in enumerate(counts) if i % everyone == me)
        else:
            samples = sum(len(range((me - i) % everyone, count, everyone)) for i, count in enumerate(counts))
        total += math.ceil(samples / config.batch_size)
    return total


def _rank_and_world_size(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else the initialized process group, else RANK / WORLD_SIZE, else 0 / 1."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        found = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        found = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return (found[0] if rank is None else rank), (found[1] if world_size is None else world_size)


def _default_steps(source: ShardSource, world_size: int, batch_size: int) -> int:
    if source.num_samples is None:
        raise ValueError(f"no manifest gives the number of samples of {source.source}; pass steps_per_epoch")
    return max(1, source.num_samples // (world_size * batch_size))


def build_loader(source: str | os.PathLike, split: str = "train", num_frames: int = 8, frame_size: int = 192,
                 batch_size: int = 32, num_workers: int = 4, clips: int = 1, crops: int = 1,
                 dataset: str | None = None, seed: int = 0, *, training: bool | None = None,
                 sampling: Mode = "uniform", stride: int = 4, flip: bool | None = None,
                 rank: int | None = None, world_size: int | None = None, epoch: int = 0, start_batch: int = 0,
                 steps_per_epoch: int | None = None, shuffle_buffer: int = 500, decoder: str = "auto",
                 pin_memory: bool | None = None, prefetch_factor: int = 2, shard_retries: int = 2,
                 retry_delay: float = 1.0, reuse_memory: bool = True) -> VideoLoader:
    """Batches ``(frames, labels, keys)`` of clips streamed from shards.

    ``frames`` is uint8: (B, T, C, H, W) when training; (B, V, T, C, H, W) when evaluating, always with
    the views dimension (V = clips x crops, clip-major, V = 1 included). It is channels-last in memory;
    normalize on the device (:func:`sifar.data.transforms.normalize`), which returns contiguous floats.

    - ``source``: shard folder, manifest, shard pattern or URL (see :mod:`sifar.data.sources`).
    - ``split``: which split of a folder source; ``training`` defaults to ``split == "train"``.
    - ``dataset``: dataset name for the flip default (off for ssv2 and jester); default from the manifest,
      else each sample's JSON. ``flip`` forces it on or off.
    - ``sampling``/``stride``: "uniform" (TSN segments, the paper's) or "dense" (``stride`` apart).
    - ``rank``/``world_size``: default from torch.distributed, else RANK/WORLD_SIZE, else 0/1.
    - ``steps_per_epoch``: training batches per rank per epoch, the same on every rank; default
      ``num_samples // (world_size * batch_size)`` from the manifest.
    - ``epoch``/``start_batch``: the first iteration's epoch and resume point (later: ``set_epoch``). The
      same (seed, epoch, rank, world_size, num_workers) give the same batches, so a run resumed at batch
      k of an epoch sees what the interrupted run would have; skipped batches are read, not decoded.
    - ``shuffle_buffer``: samples held for shuffling per worker (only their sampled frames' JPEG bytes).
    - ``decoder``: "auto", "libjpeg" (decodes only the training crop), "simplejpeg" or "pillow"
      (:mod:`sifar.data.decoders`).
    - ``shard_retries``/``retry_delay``: tries after the first to open (or, streamed, to re-read) a shard,
      waiting ``retry_delay * 2**i`` seconds before each.
    - ``reuse_memory``: workers refill a batch's shared memory once no tensor in this process views it
      any more (:class:`BatchMemory`), which saves a page fault per 4 KiB. Only a batch whose frames are
      handed on to another process (a multiprocessing queue) would be overwritten under that process:
      ``clone()`` them first, or pass False.
    """
    shard_source = resolve_source(source, split)
    rank, world_size = _rank_and_world_size(rank, world_size)
    training = split == "train" if training is None else training
    name = dataset or (shard_source.manifest.dataset if shard_source.manifest is not None else None)
    if flip is None and name is not None:
        flip = default_flip(name)
    if training and steps_per_epoch is None:
        steps_per_epoch = _default_steps(shard_source, world_size, batch_size)
    config = LoaderConfig(num_frames=num_frames, frame_size=frame_size, batch_size=batch_size,
                          num_workers=num_workers, training=training, clips=clips, crops=crops,
                          sampling=sampling, stride=stride, flip=flip, seed=seed, rank=rank,
                          world_size=world_size, steps_per_epoch=steps_per_epoch or 0,
                          shuffle_buffer=shuffle_buffer, decoder=decoder, shard_retries=shard_retries,
                          retry_delay=retry_delay)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return VideoLoader(shard_source, config, epoch, start_batch, pin_memory=pin_memory,
                       prefetch_factor=prefetch_factor, reuse_memory=reuse_memory)
