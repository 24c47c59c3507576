"""``sifar-tools shard``: decode every video of a split once, in parallel, into shuffled tar shards.

Order of work: read the split's annotations, shuffle the records (seeded, so every shard mixes classes),
decode them in ``workers`` processes (one ffmpeg each), write samples in shuffled order into shards that
are renamed into place when complete, then write ``<split>-errors.jsonl`` and, last, the manifest. A failed
video is recorded, never fatal. ``resume`` keeps the finished shards of an interrupted run and decodes only
the videos that are not in them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from sifar.data import formats
from sifar.data.ffmpeg import DecodedVideo, DecodeError, DecodeSettings, FrameRange, decode_video
from sifar.data.formats.records import ReadRequest, VideoRecord
from sifar.data.frame_folder import read_frame_folder
from sifar.data.manifest import Manifest, ShardInfo, manifest_path, read_manifest, write_manifest
from sifar.data.shard_reader import read_shard
from sifar.data.shard_writer import ShardLimits, ShardWriter, shard_name, shard_pattern
from sifar.data.workers import available_cores, worker_pool
from sifar.io import atomic_write


@dataclass(frozen=True)
class ShardJob:
    """Everything a ``shard`` run needs (the CLI options, as data)."""

    dataset: str
    src: Path
    out: Path
    split: str = "train"
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    limits: ShardLimits = field(default_factory=ShardLimits)
    annotations: Path | None = None
    classes: list[str] | None = None
    """A fixed class list; None reuses ``<out>/train.json``'s for other splits, else the dataset's own."""
    workers: int = field(default_factory=available_cores)
    seed: int = 0
    resume: bool = False
    progress: bool = True


@dataclass
class Failure:
    """A video that could not be sharded, as written to ``<split>-errors.jsonl``."""

    source: str
    reason: str


@dataclass
class EncodedSample:
    """A decoded video ready for the shard writer."""

    key: str
    meta: dict[str, Any]
    frames: list[bytes]


@dataclass
class ShardReport:
    """What a run did: the manifest written, failures, and how much came from a previous run."""

    manifest: Manifest
    manifest_path: Path
    errors_path: Path
    failures: list[Failure]
    total_videos: int
    decoded_videos: int
    kept_shards: int
    kept_samples: int
    seconds: float

    @property
    def failure_fraction(self) -> float:
        return len(self.failures) / self.total_videos if self.total_videos else 0.0


def shard_dataset(job: ShardJob) -> ShardReport:
    """Run a whole shard job; returns its report (the caller decides what failures mean for the exit code)."""
    started = time.monotonic()
    job.out.mkdir(parents=True, exist_ok=True)
    classes = job.classes if job.classes is not None else sibling_classes(job)
    index = formats.read_split(job.dataset, ReadRequest(job.src, job.split, job.annotations, classes))
    records = shuffled(index.records, job.seed)
    remove_temporary_files(job.out, job.split)
    kept = resume_state(job, index.classes) if job.resume else start_fresh(job)
    done_keys = {key for shard in kept for key in shard.keys}
    todo = [r for r in records if r.key not in done_keys]
    write_run_settings(job, index.classes)
    written, failures = write_shards(job, todo, first_index=len(kept))
    errors_path = job.out / f"{job.split}-errors.jsonl"
    write_errors(errors_path, failures)
    manifest = Manifest(job.dataset, job.split, index.classes, [shard.info for shard in kept] + written,
                        decode=decode_record(job))
    path = Path(manifest_path(job.out, job.split))
    write_manifest(manifest, path)
    return ShardReport(manifest, path, errors_path, failures, len(records), len(todo) - len(failures),
                       len(kept), len(done_keys), time.monotonic() - started)


def write_shards(job: ShardJob, records: list[VideoRecord], first_index: int) -> tuple[list[ShardInfo], list[Failure]]:
    """Decode ``records`` in parallel and write them, in order, into shards numbered from ``first_index``."""
    workers = max(1, min(job.workers, len(records)))
    encode = functools.partial(encode_record, dataset=job.dataset, settings=job.decode,
                               threads=max(1, available_cores() // workers))
    failures: list[Failure] = []
    # The pool is forked before the progress bar starts its thread.
    with worker_pool(workers) as pool, ShardWriter(job.out, job.split, job.limits, first_index) as writer:
        for outcome in _progress(pool.imap(encode, records), len(records), job.progress):
            if isinstance(outcome, Failure):
                failures.append(outcome)
            else:
                writer.add(outcome.key, json.dumps(outcome.meta).encode("utf-8"), outcome.frames)
    return writer.finished, failures


def sibling_classes(job: ShardJob) -> list[str] | None:
    """The training split's class list when it was sharded into the same folder from the same dataset."""
    train_manifest = Path(manifest_path(job.out, "train"))
    if job.split == "train" or not train_manifest.is_file():
        return None
    manifest = read_manifest(train_manifest)
    return manifest.classes if manifest.dataset == job.dataset else None


def shuffled(records: list[VideoRecord], seed: int) -> list[VideoRecord]:
    """Records in a seeded random order (independent of the order annotation files list them)."""
    ordered = sorted(records, key=lambda r: r.key)
    random.Random(seed).shuffle(ordered)
    return ordered


def decode_record(job: ShardJob) -> dict[str, Any]:
    """The manifest's ``decode`` entry: the decode settings and the shuffle seed."""
    return {**dataclasses.asdict(job.decode), "seed": job.seed}


# --- finished shards, fresh starts and resuming -------------------------------------------------------


@dataclass
class KeptShard:
    """A finished shard of an earlier run and the keys of its samples."""

    info: ShardInfo
    keys: set[str]


def run_settings_path(out: Path, split: str) -> Path:
    """Hidden file recording what the split's shards are being made with, checked by ``--resume``."""
    return out / f".{split}-run.json"


def write_run_settings(job: ShardJob, classes: list[str]) -> None:
    with atomic_write(run_settings_path(job.out, job.split), "w") as handle:
        json.dump(_run_settings(job, classes), handle)


def _run_settings(job: ShardJob, classes: list[str]) -> dict[str, Any]:
    return {"dataset": job.dataset, "decode": dataclasses.asdict(job.decode), "classes": classes}


def resume_state(job: ShardJob, classes: list[str]) -> list[KeptShard]:
    """Finished shards to keep; refuses to mix them with shards made by different settings."""
    settings_file = run_settings_path(job.out, job.split)
    if settings_file.is_file():
        previous = json.loads(settings_file.read_text())
        current = _run_settings(job, classes)
        if previous != current:
            raise ValueError(f"cannot resume in {job.out}: its {job.split} shards were made with {previous}, "
                             f"this run asks for {current}; run without --resume to start over")
    return [_kept_shard(path) for path in finished_shards(job.out, job.split)]


def shard_files(out: Path, split: str) -> list[tuple[int, Path]]:
    """(number, path) of the split's complete shards in ``out``, by number."""
    pattern = shard_pattern(split)
    return sorted((int(m.group(1)), p) for p in out.iterdir() if (m := pattern.fullmatch(p.name)))


def finished_shards(out: Path, split: str) -> list[Path]:
    """The split's complete shards, numbered 0.. without gaps (a gap means a foreign folder: error)."""
    numbered = shard_files(out, split)
    for expected, (number, path) in enumerate(numbered):
        if number != expected:
            raise ValueError(f"cannot resume: {out / shard_name(split, expected)} is missing but {path.name} exists")
    return [path for _, path in numbered]


def _kept_shard(path: Path) -> KeptShard:
    keys, frames = set(), 0
    for sample in read_shard(path, with_frames=False):
        keys.add(sample.key)
        frames += sample.num_frames
    return KeptShard(ShardInfo(path.name, len(keys), frames, path.stat().st_size), keys)


def start_fresh(job: ShardJob) -> list[KeptShard]:
    """Remove the split's shards, manifest and error list from an earlier run (nothing is kept)."""
    stale = [*(path for _, path in shard_files(job.out, job.split)), Path(manifest_path(job.out, job.split)),
             job.out / f"{job.split}-errors.jsonl"]
    for path in stale:
        path.unlink(missing_ok=True)
    return []


def remove_temporary_files(out: Path, split: str) -> None:
    """Half-written shards of an interrupted run (their temporary names never look like shards)."""
    prefix = f".{split}-"
    for path in out.iterdir():
        if path.name.startswith(prefix) and path.name.endswith(".tmp"):
            path.unlink()


# --- decoding ---------------------------------------------------------------------------------------------


def encode_record(record: VideoRecord, dataset: str, settings: DecodeSettings,
                  threads: int) -> EncodedSample | Failure:
    """Decode one record into a sample, or say why it failed (runs in a worker process).

    ``threads`` is ffmpeg's decoder thread count: the cores shared out between the workers.
    """
    if record.path is None:
        return Failure(record.source, "not found under --src")
    trim = _frame_range(record)
    try:
        if record.frame_folder:
            decoded = read_frame_folder(record.path, settings, record.fps, trim)
        else:
            decoded = decode_video(record.path, settings, trim, threads=threads)
    except (DecodeError, OSError) as err:
        return Failure(record.source, str(err))
    return EncodedSample(record.key, sample_meta(record, decoded, dataset), decoded.frames)


def _frame_range(record: VideoRecord) -> FrameRange | None:
    if record.start_frame is None and record.end_frame is None:
        return None
    return FrameRange(record.start_frame or 0, record.end_frame)


def sample_meta(record: VideoRecord, decoded: DecodedVideo, dataset: str) -> dict[str, Any]:
    """The sample's ``<key>.json``."""
    meta = {"key": record.key, "label": record.label, "label_name": record.label_name,
            "num_frames": len(decoded.frames), "fps": decoded.fps, "width": decoded.width,
            "height": decoded.height, "orig_width": decoded.orig_width, "orig_height": decoded.orig_height,
            "source": record.source, "dataset": dataset}
    if record.start_frame is not None or record.end_frame is not None:
        meta["start_frame"], meta["end_frame"] = record.start_frame, record.end_frame
    return meta


def _progress(outcomes: Iterator[EncodedSample | Failure], total: int,
              enabled: bool) -> Iterator[EncodedSample | Failure]:
    """Pass outcomes through, showing videos, frames/s and failures so far."""
    started, frames, failed = time.monotonic(), 0, 0
    with tqdm(total=total, unit="video", disable=not enabled, dynamic_ncols=True) as bar:
        for outcome in outcomes:
            if isinstance(outcome, Failure):
                failed += 1
            else:
                frames += len(outcome.frames)
            bar.set_postfix(frames_per_s=f"{frames / max(time.monotonic() - started, 1e-9):.0f}",
                            failed=failed, refresh=False)
            bar.update()
            yield outcome


def write_errors(path: Path, failures: list[Failure]) -> None:
    """``<split>-errors.jsonl``: one ``{"source", "reason"}`` object a line (empty when none failed)."""
    with atomic_write(path, "w") as handle:
        for failure in failures:
            handle.write(json.dumps(dataclasses.asdict(failure)) + "\n")
