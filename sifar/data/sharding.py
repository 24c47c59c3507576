"""``sifar-tools shard``: decode every video of a split once, in parallel, into shuffled tar shards.

Order of work: read the split's annotations, shuffle the records (seeded, so every shard mixes classes),
decode them in ``workers`` processes (one ffmpeg each), write samples in shuffled order into shards that
are renamed into place when complete, then write ``<split>-errors.jsonl`` and, last, the manifest. A failed
video is recorded, never fatal. ``resume`` keeps the finished shards of an interrupted run and decodes only
the videos that are not in them.

``out`` may also be an object-store prefix (``s3://bucket/prefix/``, ``gs://...``; endpoint and credentials
from the standard environment, see :mod:`sifar.io`): files are then written into a local staging folder
and each is uploaded as soon as it is finished (shards one by one while decoding goes on, the error list
and the manifest last), and ``resume`` looks at what the bucket already holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import posixpath
import random
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm import tqdm

from sifar.data import formats
from sifar.data.ffmpeg import DecodedVideo, DecodeError, DecodeSettings, FrameRange, decode_video
from sifar.data.formats.records import ReadRequest, VideoRecord
from sifar.data.frame_folder import read_frame_folder
from sifar.data.manifest import Manifest, ShardInfo, manifest_path, read_manifest, write_manifest
from sifar.data.shard_reader import read_shard
from sifar.data.shard_writer import ShardLimits, ShardWriter, shard_name, shard_pattern
from sifar.data.workers import available_cores, worker_pool
from sifar.io import (atomic_write, check_store_access, file_sha256, is_http, is_url, storage_error, url_filesystem,
                      write_json)
from sifar.run_lock import run_lock


@dataclass(frozen=True)
class Part:
    """Part ``index`` of ``count`` of a split: the videos whose key hashes to ``index`` (a stable choice, the
    same on every machine and every run), written under names no other part uses."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"part {self.index} is not one of the parts 0..{self.count - 1}")

    def holds(self, key: str) -> bool:
        return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % self.count == self.index

    def stem(self, split: str) -> str:
        """What the part's files are named by in place of the split: ``<split>.part-0003-of-0008``."""
        return f"{split}.part-{self.index:04d}-of-{self.count:04d}"

    @staticmethod
    def stem_pattern(split: str) -> re.Pattern[str]:
        """Matches the start of any part's file names of ``split`` (a hidden run file's too); group 1 is the
        part count."""
        return re.compile(rf"\.?{re.escape(split)}\.part-\d{{4}}-of-(\d{{4}})[-.]")


@dataclass(frozen=True)
class ShardJob:
    """Everything a ``shard`` run needs (the CLI options, as data)."""

    dataset: str
    src: Path
    out: Path | str
    """A local folder, or an object-store URL prefix such as ``s3://bucket/prefix/``."""
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
    part: Part | None = None
    """Only this part of the split (``sifar-tools merge`` then writes the split's manifest over all parts)."""

    @property
    def stem(self) -> str:
        """What this run's files are named by: the split, or its part."""
        return self.split if self.part is None else self.part.stem(self.split)


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
    manifest_path: Path | str
    errors_path: Path | str
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
    with shard_output(job.out, job.stem) as output:
        classes = job.classes if job.classes is not None else sibling_classes(job, output)
        index = formats.read_split(job.dataset, ReadRequest(job.src, job.split, job.annotations, classes))
        records = shuffled([r for r in index.records if job.part is None or job.part.holds(r.key)], job.seed)
        remove_temporary_files(output.local, job.stem)
        kept = resume_state(job, index.classes, output) if job.resume else start_fresh(job, output)
        done_keys = {key for shard in kept for key in shard.keys}
        todo = [r for r in records if r.key not in done_keys]
        write_run_settings(job, index.classes, output)
        written, failures = write_shards(job, todo, len(kept), output)
        write_errors(output.local / errors_name(job.stem), failures)
        output.publish(errors_name(job.stem))
        manifest = Manifest(job.dataset, job.split, index.classes, [shard.info for shard in kept] + written,
                            decode=decode_record(job))
        write_manifest(manifest, output.local / manifest_name(job.stem))
        output.publish(manifest_name(job.stem))
        return ShardReport(manifest, output.location(manifest_name(job.stem)),
                           output.location(errors_name(job.stem)), failures, len(records),
                           len(todo) - len(failures), len(kept), len(done_keys), time.monotonic() - started)



def shard_synthetic(src: Path, out: Path, samples_per_shard: int, workers: int | None = None, seed: int = 0,
                    progress: bool = False) -> list[ShardReport]:
    """Both splits of a dataset made by ``sifar-tools synth`` (its ``path,label,boxes`` lists) into ``out``,
    the frames stored as made (they are small already); RuntimeError when a video fails."""
    reports = [shard_dataset(ShardJob(dataset="csv", src=src, out=out, split=split,
                                      decode=DecodeSettings(short_side=0),
                                      limits=ShardLimits(max_samples=samples_per_shard),
                                      workers=workers or available_cores(), seed=seed, progress=progress))
               for split in ("train", "val")]
    failures = sum(len(report.failures) for report in reports)
    if failures:
        raise RuntimeError(f"{failures} synthetic videos failed to shard; see {out}/*-errors.jsonl")
    return reports

def merge_parts(out: Path | str, split: str) -> tuple[Manifest, Path | str]:
    """Write ``<split>.json`` (and ``<split>-errors.jsonl``) over every finished part of ``split`` in ``out``
    (a folder or an object-store prefix), so the split reads like one run's; returns the manifest and where
    it went. ValueError naming the parts that are missing or unfinished, or that disagree."""
    with shard_output(out, split) as output:
        names = output.names()
        count = _part_count(names, split, out)
        parts = [Part(index, count) for index in range(count)]
        missing = [part.index for part in parts if manifest_name(part.stem(split)) not in names]
        if missing:
            raise ValueError(f"cannot merge {split} in {out}: parts {', '.join(map(str, missing))} of {count} have "
                             f"no manifest (not run, or not finished: run them, with --resume to keep what they "
                             f"wrote)")
        manifests = [read_manifest(output.location(manifest_name(part.stem(split)))) for part in parts]
        for part, manifest in zip(parts, manifests):
            _check_same_run(manifests[0], manifest, f"part {part.index}", out)
        first = manifests[0]
        merged = Manifest(first.dataset, split, first.classes, [s for m in manifests for s in m.shards],
                          decode={**first.decode, "parts": count})
        errors = "".join(output.read_text(errors_name(part.stem(split))) for part in parts
                         if errors_name(part.stem(split)) in names)
        with atomic_write(output.local / errors_name(split), "w") as handle:
            handle.write(errors)
        output.publish(errors_name(split))
        write_manifest(merged, output.local / manifest_name(split))
        output.publish(manifest_name(split))
        return merged, output.location(manifest_name(split))


def _part_count(names: list[str], split: str, out: Path | str) -> int:
    """How many parts ``split`` was cut into, from the names of its parts' files."""
    pattern = Part.stem_pattern(split)
    counts = {int(m.group(1)) for name in names if (m := pattern.match(name))}
    if not counts:
        raise ValueError(f"cannot merge {split} in {out}: no parts of it there (sifar-tools shard --num-parts N "
                         f"--part K writes them)")
    if len(counts) > 1:
        raise ValueError(f"cannot merge {split} in {out}: parts of runs cut {sorted(counts)} ways are mixed there")
    return counts.pop()


def _check_same_run(first: Manifest, other: Manifest, what: str, out: Path | str) -> None:
    """ValueError unless ``other`` was made of the same dataset, classes and decode settings as ``first``."""
    for name in ("dataset", "classes", "decode"):
        if getattr(other, name) != getattr(first, name):
            raise ValueError(f"cannot merge in {out}: {what} was made with another {name} ({getattr(other, name)!r}"
                             f" against {getattr(first, name)!r}); shard every part with the same options")


def manifest_name(split: str) -> str:
    """``<split>.json``, the manifest's name in the output folder or prefix."""
    return posixpath.basename(manifest_path("", split))


def errors_name(split: str) -> str:
    """``<split>-errors.jsonl``, the list of videos that failed."""
    return f"{split}-errors.jsonl"


def write_shards(job: ShardJob, records: list[VideoRecord], first_index: int,
                 output: ShardOutput) -> tuple[list[ShardInfo], list[Failure]]:
    """Decode ``records`` in parallel and write them, in order, into shards numbered from ``first_index``;
    each shard is published as soon as it is finished, while the workers go on decoding."""
    workers = max(1, min(job.workers, len(records)))
    encode = functools.partial(encode_record, dataset=job.dataset, settings=job.decode,
                               threads=max(1, available_cores() // workers))
    failures: list[Failure] = []
    published = 0
    # The pool is forked before the progress bar starts its thread.
    with worker_pool(workers) as pool, ShardWriter(output.local, job.stem, job.limits, first_index) as writer:
        for outcome in _progress(pool.imap(encode, records), len(records), job.progress):
            if isinstance(outcome, Failure):
                failures.append(outcome)
            else:
                writer.add(outcome.key, outcome.meta, outcome.frames)
                published = _publish_finished(output, writer.finished, published)
    _publish_finished(output, writer.finished, published)
    return writer.finished, failures


def _publish_finished(output: ShardOutput, finished: list[ShardInfo], published: int) -> int:
    """Publish the shards finished since the first ``published``; returns how many are published now."""
    for info in finished[published:]:
        output.publish(info.name)
    return len(finished)


def sibling_classes(job: ShardJob, output: ShardOutput) -> list[str] | None:
    """The training split's class list when it was sharded into the same folder from the same dataset."""
    if job.split == "train" or manifest_name("train") not in output.names():
        return None
    manifest = read_manifest(output.location(manifest_name("train")))
    return manifest.classes if manifest.dataset == job.dataset else None


def shuffled(records: list[VideoRecord], seed: int) -> list[VideoRecord]:
    """Records in a seeded random order (independent of the order annotation files list them)."""
    ordered = sorted(records, key=lambda r: r.key)
    random.Random(seed).shuffle(ordered)
    return ordered


def decode_record(job: ShardJob) -> dict[str, Any]:
    """The manifest's ``decode`` entry: the decode settings and the shuffle seed."""
    return {**dataclasses.asdict(job.decode), "seed": job.seed}


# --- where the files go: a folder, or a bucket through a local staging folder ---------------------------


class ShardOutput:
    """The place a run's files end up: the ``out`` folder, or an object-store prefix.

    Files are always written locally first, into :attr:`local` (temporary name, then rename). For a
    folder that is the folder itself and :meth:`publish` has nothing to do; for a URL it is a staging
    folder, and :meth:`publish` uploads a finished file and deletes the local copy, so local disk holds
    about one shard. Object stores show an upload only once it is complete, so the bucket, like the
    folder, never holds part of a file under its final name.
    """

    def __init__(self, out: Path | str, local: Path):
        self.out = out
        self.local = local
        self.remote = is_url(out)
        self._fs, self._root = url_filesystem(str(out))

    def location(self, name: str) -> Path | str:
        """Where file ``name`` ends up: a path, or a URL."""
        return f"{str(self.out).rstrip('/')}/{name}" if self.remote else Path(self.out) / name

    def names(self) -> list[str]:
        """Names of the files already at the final place."""
        found = self._call("list", str(self.out), lambda: self._fs.find(self._root, maxdepth=1))
        return [posixpath.basename(path) for path in found]

    def publish(self, name: str) -> None:
        """Make the finished local file ``name`` appear at the final place."""
        if not self.remote:
            return
        local = self.local / name
        self._call("upload", name, lambda: self._fs.put_file(str(local), self._path(name)))
        local.unlink()

    def remove(self, name: str) -> None:
        self._call("remove", name, lambda: self._fs.rm_file(self._path(name)))

    def read_text(self, name: str) -> str:
        return self._call("read", name, lambda: self._fs.cat_file(self._path(name))).decode("utf-8")

    def sha256(self, name: str) -> str:
        return self._call("read", name, lambda: file_sha256(self.location(name)))

    def size(self, name: str) -> int:
        return self._call("read", name, lambda: self._fs.size(self._path(name)))

    def _path(self, name: str) -> str:
        return posixpath.join(self._root, name) if self.remote else os.path.join(self._root, name)

    def _call(self, action: str, name: str, call: Callable[[], Any]) -> Any:
        """Run a storage call; its errors name the file or URL, never a credential."""
        try:
            return call()
        except Exception as err:  # file systems and network libraries raise their own types
            target = name if name == str(self.out) else str(self.location(name))
            raise storage_error(target, err, f"shard output: cannot {action}") from err


@contextlib.contextmanager
def shard_output(out: Path | str, split: str) -> Iterator[ShardOutput]:
    """The output of a run of ``split``. A local folder is held by one run of a split at a time
    (:mod:`sifar.run_lock`). A URL is checked at once (bucket and credentials) and gets a staging folder in
    the temporary directory, removed afterwards (an object store has no lock: runs of one split there must
    not overlap); HTTP(S), being read-only, is refused."""
    if not is_url(out):
        Path(out).mkdir(parents=True, exist_ok=True)
        with run_lock(out, f".{split}.lock", f"shard run of split {split}"):
            yield ShardOutput(Path(out), Path(out))
        return
    if is_http(out):
        raise ValueError(f"cannot write shards to {out}: HTTP(S) is read-only; use a folder or an object store "
                         "(s3://bucket/prefix/, gs://...)")
    check_store_access(str(out), context="shard output")
    with tempfile.TemporaryDirectory(prefix="sifar-shard-") as staging:
        yield ShardOutput(out, Path(staging))


# --- finished shards, fresh starts and resuming -------------------------------------------------------


@dataclass
class KeptShard:
    """A finished shard of an earlier run and the keys of its samples."""

    info: ShardInfo
    keys: set[str]


def run_settings_name(split: str) -> str:
    """Hidden file recording what the split's shards are being made with, checked by ``--resume``."""
    return f".{split}-run.json"


def write_run_settings(job: ShardJob, classes: list[str], output: ShardOutput) -> None:
    name = run_settings_name(job.stem)
    write_json(output.local / name, _run_settings(job, classes), indent=None)
    output.publish(name)


def _run_settings(job: ShardJob, classes: list[str]) -> dict[str, Any]:
    return {"dataset": job.dataset, "decode": dataclasses.asdict(job.decode), "classes": classes}


def resume_state(job: ShardJob, classes: list[str], output: ShardOutput) -> list[KeptShard]:
    """Finished shards to keep; refuses to mix them with shards made by different settings.

    Each kept shard is read back (from the bucket, for a URL) to learn its keys: the manifest that would
    list them is written only at the end of a run.
    """
    names = output.names()
    settings_name = run_settings_name(job.stem)
    if settings_name in names:
        previous = json.loads(output.read_text(settings_name))
        current = _run_settings(job, classes)
        if previous != current:
            raise ValueError(f"cannot resume in {job.out}: its {job.split} shards were made with {previous}, "
                             f"this run asks for {current}; run without --resume to start over")
    return [_kept_shard(output, name) for name in finished_shards(output, job.stem, names)]


def shard_files(names: list[str], split: str) -> list[tuple[int, str]]:
    """(number, name) of the split's complete shards among ``names``, by number."""
    pattern = shard_pattern(split)
    return sorted((int(m.group(1)), name) for name in names if (m := pattern.fullmatch(name)))


def finished_shards(output: ShardOutput, split: str, names: list[str]) -> list[str]:
    """The split's complete shards, numbered 0.. without gaps (a gap means a foreign folder: error)."""
    numbered = shard_files(names, split)
    for expected, (number, name) in enumerate(numbered):
        if number != expected:
            raise ValueError(f"cannot resume: {output.location(shard_name(split, expected))} is missing but "
                             f"{name} exists")
    return [name for _, name in numbered]


def _kept_shard(output: ShardOutput, name: str) -> KeptShard:
    keys, frames = set(), 0
    for sample in read_shard(output.location(name), with_frames=False):
        keys.add(sample.key)
        frames += sample.num_frames
    return KeptShard(ShardInfo(name, len(keys), frames, output.size(name), output.sha256(name)), keys)


def start_fresh(job: ShardJob, output: ShardOutput) -> list[KeptShard]:
    """Remove the split's shards, manifest and error list from an earlier run (nothing is kept)."""
    names = output.names()
    stale = {*(name for _, name in shard_files(names, job.stem)), manifest_name(job.stem), errors_name(job.stem)}
    for name in sorted(stale & set(names)):
        output.remove(name)
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
        meta = sample_meta(record, decoded, dataset)
    except (DecodeError, OSError) as err:
        return Failure(record.source, str(err))
    return EncodedSample(record.key, meta, decoded.frames)


def _frame_range(record: VideoRecord) -> FrameRange | None:
    if record.start_frame is None and record.end_frame is None:
        return None
    return FrameRange(record.start_frame or 0, record.end_frame)


def sample_meta(record: VideoRecord, decoded: DecodedVideo, dataset: str) -> dict[str, Any]:
    """The sample's ``<key>.json``: key, label, frame count, rate and size, the source, and where the list
    gives them, the trim (``start_frame``/``end_frame``) and the object ``boxes`` of every stored frame."""
    meta = {"key": record.key, "label": record.label, "label_name": record.label_name,
            "num_frames": len(decoded.frames), "fps": decoded.fps, "width": decoded.width,
            "height": decoded.height, "orig_width": decoded.orig_width, "orig_height": decoded.orig_height,
            "source": record.source, "dataset": dataset}
    if record.start_frame is not None or record.end_frame is not None:
        meta["start_frame"], meta["end_frame"] = record.start_frame, record.end_frame
    if record.boxes is not None:
        meta["boxes"] = stored_boxes(record, decoded)
    return meta


def stored_boxes(record: VideoRecord, decoded: DecodedVideo) -> list[list[int] | None]:
    """The record's per-frame object boxes for the frames as stored: trimmed, resampled and scaled like them
    (widened to whole pixels, so a box still holds every pixel of its object); DecodeError when the record
    has fewer boxes than the video has frames."""
    boxes = record.boxes[record.start_frame or 0:record.end_frame]
    rate = 1.0
    if decoded.fps and decoded.orig_fps and not math.isclose(decoded.fps, decoded.orig_fps):
        rate = decoded.orig_fps / decoded.fps  # ffmpeg's fps filter keeps the source frame nearest in time
    scale_x, scale_y = decoded.width / decoded.orig_width, decoded.height / decoded.orig_height
    stored = []
    for i in range(len(decoded.frames)):
        source = math.floor(i * rate + 0.5)
        if source >= len(boxes):
            raise DecodeError(f"the list gives {len(record.boxes)} object boxes, but frame {source} is needed "
                              f"(the video has more frames than boxes)")
        box = boxes[source]
        stored.append(None if box is None else [
            math.floor(box[0] * scale_x), math.floor(box[1] * scale_y),
            math.ceil(box[2] * scale_x), math.ceil(box[3] * scale_y)])
    return stored


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
