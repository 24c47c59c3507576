"""``sifar-tools inspect``: what a split's shards hold, and whether every shard reads back as promised."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from typing import Callable

from PIL import Image

from sifar.data.jpeg import is_complete_jpeg
from sifar.data.manifest import Manifest, read_manifest
from sifar.data.shard_format import SampleInfo
from sifar.data.shard_reader import ShardFormatError, StoredSample, read_shard
from sifar.io import file_sha256, open_url, url_filesystem
from sifar.progress import progress_bar


@dataclass
class ShardCheck:
    """One shard as found: its counts and size, and what is wrong with it (None when fine)."""

    name: str
    samples: int = 0
    frames: int = 0
    bytes: int = 0
    problem: str | None = None


@dataclass
class SplitReport:
    """A split read back from its manifest and shards."""

    manifest_path: str
    manifest: Manifest
    shards: list[ShardCheck] = field(default_factory=list)
    class_counts: Counter = field(default_factory=Counter)
    frames_per_sample: list[int] = field(default_factory=list)
    failed_videos: int | None = None

    @property
    def problems(self) -> list[str]:
        return [f"{s.name}: {s.problem}" for s in self.shards if s.problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def find_manifests(path: str) -> list[str]:
    """Manifests to inspect: ``path`` itself when it is a ``.json``, else every split manifest in the folder."""
    if path.endswith(".json"):
        return [path]
    fs, root = url_filesystem(path)
    if not fs.isdir(root):
        raise FileNotFoundError(f"{path} is neither a manifest (.json) nor a folder of shards")
    prefix = path.rstrip("/")
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    manifests = [f"{prefix}/{n}" for n in names if n.endswith(".json") and not n.startswith(".")
                 and _looks_like_manifest(f"{prefix}/{n}")]
    if not manifests:
        raise FileNotFoundError(f"no split manifest (<split>.json) in {path}")
    return manifests


def _looks_like_manifest(path: str) -> bool:
    try:
        read_manifest(path)
    except ValueError:
        return False
    return True


def inspect_split(manifest_path: str, decode: bool = False, progress: bool = False) -> SplitReport:
    """Read every shard the manifest lists; ``decode`` also decodes every JPEG (slower, catches bad pixels);
    ``progress``: a progress bar of shards where stderr is a terminal."""
    manifest = read_manifest(manifest_path)
    folder = manifest_path.rsplit("/", 1)[0] if "/" in manifest_path else "."
    report = SplitReport(manifest_path, manifest, failed_videos=_count_failures(folder, manifest.split))
    for info in progress_bar(manifest.shards, progress, desc=f"inspecting {manifest.split}", unit="shard"):
        check = ShardCheck(info.name)
        report.shards.append(check)
        url = f"{folder}/{info.name}"
        fs, fs_path = url_filesystem(url)
        if not fs.exists(fs_path):
            check.problem = f"missing (no file at {url})"
            continue
        check.bytes = fs.size(fs_path)
        try:
            for sample in read_shard(url):
                sample_info = _check_sample(sample, decode, len(manifest.classes))
                check.samples += 1
                check.frames += sample.num_frames
                report.class_counts[sample_info.label_name or sample_info.label] += 1
                report.frames_per_sample.append(sample.num_frames)
        except ShardFormatError as err:
            check.problem = str(err).removeprefix(f"{url}: ")
            continue
        check.problem = _mismatch(check, info.samples, info.frames, info.bytes) or _changed(url, info.sha256)
    return report


def _changed(url: str, sha256: str | None) -> str | None:
    """A shard whose bytes are not those the manifest recorded: a flipped bit in JPEG data decodes, so only
    the checksum tells (manifests from before it was recorded have none to compare)."""
    if sha256 is None or file_sha256(url) == sha256:
        return None
    return "its bytes differ from the SHA-256 the manifest recorded (changed or corrupted since it was written)"


def _check_sample(sample: StoredSample, decode: bool, num_classes: int) -> SampleInfo:
    try:
        info = SampleInfo.parse(sample.meta, sample.key)
    except ValueError as err:
        raise ShardFormatError(f"sample {sample.key}: {err}") from err
    if not -1 <= info.label < num_classes:
        raise ShardFormatError(f"sample {sample.key}: label {info.label!r} outside the manifest's {num_classes} "
                               "classes")
    for i, frame in enumerate(sample.frames):
        if not is_complete_jpeg(frame):
            raise ShardFormatError(f"sample {sample.key}: frame {i} is not a complete JPEG")
        if decode:
            try:
                Image.open(BytesIO(frame)).load()
            except OSError as err:
                raise ShardFormatError(f"sample {sample.key}: frame {i} does not decode ({err})") from err
    return info


def _mismatch(check: ShardCheck, samples: int, frames: int, size: int) -> str | None:
    if (check.samples, check.frames, check.bytes) != (samples, frames, size):
        return (f"holds {check.samples} samples, {check.frames} frames, {check.bytes} bytes; "
                f"the manifest says {samples}, {frames}, {size}")
    return None


def _count_failures(folder: str, split: str) -> int | None:
    try:
        with open_url(f"{folder}/{split}-errors.jsonl", "r") as handle:
            return sum(1 for line in handle if line.strip() and json.loads(line))
    except FileNotFoundError:
        return None


def format_report(report: SplitReport) -> list[str]:
    """Human-readable lines for one split."""
    m = report.manifest
    sizes = [s.bytes for s in report.shards if s.bytes]
    counts = sorted(report.class_counts.values())
    lines = [
        f"{m.split} ({report.manifest_path}): dataset {m.dataset}, {m.num_samples} samples, {m.num_frames} frames, "
        f"{len(m.shards)} shards, {_size_text(sum(sizes))}",
        f"  classes: {m.num_classes} ({_preview(m.classes)}); samples per class: "
        + (f"min {counts[0]}, max {counts[-1]}, {len(counts)} classes present" if counts else "none"),
        "  frames per sample: " + (_spread(report.frames_per_sample, "{:.4g}".format)
                                   if report.frames_per_sample else "none"),
        "  shard sizes: " + (_spread(sizes, _size_text) if sizes else "none"),
        f"  decode settings: {json.dumps(m.decode)}; tool version {m.tool_version}",
    ]
    if report.failed_videos is not None:
        lines.append(f"  videos that failed when sharding: {report.failed_videos} (see {m.split}-errors.jsonl)")
    lines += [f"  BAD {problem}" for problem in report.problems]
    lines.append(f"  {len(report.shards)} shards checked: " + ("all readable" if report.ok
                                                             else f"{len(report.problems)} bad"))
    return lines


def _preview(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _spread(values: list[int], show: Callable[[float], str]) -> str:
    return f"min {show(min(values))}, mean {show(statistics.fmean(values))}, max {show(max(values))}"


def _size_text(size: float) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"
