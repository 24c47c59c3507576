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

The stages are :mod:`sifar.data.pipeline`'s, the counters :mod:`sifar.data.loader_stats`', the batch buffers
:mod:`sifar.data.batch_memory`'s; this module runs them in DataLoader workers.

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
from dataclasses import replace
from typing import Iterator

import torch
import webdataset as wds

from sifar.data.batch_memory import Batch, free_when_dropped
from sifar.data.loader_stats import LoaderStats
from sifar.data.clip import ClipSettings
from sifar.data.decoders import warn_once_if_decoding_whole_frames
from sifar.data.pipeline import ClipStream, LoaderConfig, LoaderSettings, SourceLoader
from sifar.data.resident import ResidentLoader
from sifar.data.sources import ShardSource, resolve_source
from sifar.data.transforms import default_flip
from sifar.distributed import local_device


class VideoLoader(SourceLoader):
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

    def __iter__(self) -> Iterator[Batch]:
        if not self.config.training:  # an evaluation's counts are those of its last pass
            self._stats = LoaderStats(self.source.shards)
        workers = self.config.loader.workers
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
        return free_when_dropped(loader, free)

    def __len__(self) -> int:
        """Batches of the next iteration on this rank (evaluation: from the manifest's sample counts)."""
        if self.config.training:
            return self.config.steps_per_epoch - self.start_batch
        return _evaluation_batches(self.source, self.config)

    @property
    def stats(self) -> dict[str, int]:
        """Counts so far, all workers together: samples delivered and every kind of bad data skipped."""
        return self._stats.as_dict()

    def shard_reads(self) -> list[tuple[str, int | None, int]]:
        """(shard, samples its manifest lists or None, samples read so far) for every shard of the source."""
        reads = self._stats.shard_reads()
        return [(url, self.source.samples_in(url), read) for url, read in zip(self.source.shards, reads)]


def _evaluation_batches(source: ShardSource, config: LoaderConfig) -> int:
    counts = [source.samples_in(shard) for shard in source.shards]
    if any(count is None for count in counts):
        raise TypeError(f"the length of an evaluation over {source.source} needs its manifest")
    workers = max(1, config.loader.workers)
    everyone = config.world_size * workers
    total = 0
    for worker in range(workers):
        me = config.rank * workers + worker
        if len(counts) >= everyone:
            samples = sum(count for i, count in enumerate(counts) if i % everyone == me)
        else:
            samples = sum(len(range((me - i) % everyone, count, everyone)) for i, count in enumerate(counts))
        total += math.ceil(samples / config.loader.batch_size)
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


def build_loader(source: str | os.PathLike, clip: ClipSettings, settings: LoaderSettings = LoaderSettings(), *,
                 training: bool, split: str = "train", clips: int = 1, crops: int = 1, seed: int = 0,
                 dataset: str | None = None, rank: int | None = None, world_size: int | None = None,
                 steps_per_epoch: int | None = None, epoch: int = 0, start_batch: int = 0,
                 pin_memory: bool | None = None, prefetch_factor: int = 2, reuse_memory: bool = True,
                 device: torch.device | None = None) -> VideoLoader | ResidentLoader:
    """Batches ``(frames, labels, keys)`` of ``clip`` (frames and size given) streamed from shards.

    ``frames`` is uint8: (B, T, C, H, W) when training; (B, V, T, C, H, W) when evaluating, always with
    the views dimension (V = clips x crops, clip-major, V = 1 included). It is channels-last in memory;
    move and normalize it on the device (:func:`sifar.data.transforms.device_clips`).

    ``settings``: batch size, workers, shuffle buffer, decoder, shard retries (:class:`LoaderSettings`).
    The rest is resolved here:

    - ``source``: shard folder, manifest, shard pattern or URL (see :mod:`sifar.data.sources`).
    - ``training``: a training stream (shards resampled, random sampling and crops, ``steps_per_epoch`` whole
      batches) or an evaluation one (every video once, its ``clips`` x ``crops`` views). Always said by the
      caller, never inferred from ``split``: evaluating a training split is an evaluation.
    - ``split``: which split of a folder source.
    - ``dataset``: dataset name for the flip default of ``clip.flip == "auto"`` (off for ssv2 and jester);
      default from the manifest, else each sample's JSON.
    - ``rank``/``world_size``: default from torch.distributed, else RANK/WORLD_SIZE, else 0/1.
    - ``steps_per_epoch``: training batches per rank per epoch, the same on every rank; default
      ``num_samples // (world_size * batch_size)`` from the manifest.
    - ``seed``, ``epoch``/``start_batch``: the first iteration's epoch and resume point (later:
      ``set_epoch``). The same (seed, epoch, rank, world_size, workers) give the same batches, so a run
      resumed at batch k of an epoch sees what the interrupted run would have; skipped batches are read, not
      decoded.
    - ``reuse_memory``: workers refill a batch's shared memory once no tensor in this process views it
      any more (:class:`~sifar.data.batch_memory.BatchMemory`), which saves a page fault per 4 KiB. Only a
      batch whose frames are handed on to another process (a multiprocessing queue) would be overwritten
      under that process: ``clone()`` them first, or pass False.
    - ``device``: where ``settings.resident`` holds a training split (default: the GPU if there is one, else
      the CPU); its batches come already there (:mod:`sifar.data.resident`).
    """
    shard_source = resolve_source(source, split)
    rank, world_size = _rank_and_world_size(rank, world_size)
    name = dataset or (shard_source.manifest.dataset if shard_source.manifest is not None else None)
    if clip.flip == "auto" and name is not None:
        clip = replace(clip, flip="on" if default_flip(name) else "off")
    if training and steps_per_epoch is None:
        steps_per_epoch = _default_steps(shard_source, world_size, settings.batch_size)
    if training and settings.decoder == "auto" and not settings.resident:  # evaluation decodes whole frames
        warn_once_if_decoding_whole_frames()
    config = LoaderConfig(clip, settings, training=training, clips=clips, crops=crops, seed=seed, rank=rank,
                          world_size=world_size, steps_per_epoch=steps_per_epoch or 0)
    if training and settings.resident:
        return ResidentLoader(shard_source, config, device or local_device(), epoch, start_batch)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return VideoLoader(shard_source, config, epoch, start_batch, pin_memory=pin_memory,
                       prefetch_factor=prefetch_factor, reuse_memory=reuse_memory)
