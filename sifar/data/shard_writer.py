"""Writing samples into ``<out>/<split>-%06d.tar`` shards, each under a temporary name until complete.

The format itself (member names, the sample JSON, the frame index) is :mod:`sifar.data.shard_format`.
A new shard starts when the next sample would take the current one past the byte target, or when it
holds the target number of samples.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Mapping

from sifar.data.manifest import ShardInfo
from sifar.data.shard_format import frame_member, sample_json, tar_member_bytes
from sifar.io import atomic_write

_ENCODING = "utf-8"
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def shard_name(split: str, index: int) -> str:
    """``<split>-%06d.tar``."""
    return f"{split}-{index:06d}.tar"


def shard_pattern(split: str) -> re.Pattern[str]:
    """Matches the names of ``split``'s finished shards; group 1 is the shard number."""
    return re.compile(rf"{re.escape(split)}-(\d{{6}})\.tar")


def parse_size(text: str | int) -> int:
    """Bytes from a size such as ``500MB``, ``1GB``, ``2GiB`` or a plain number of bytes.

    KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024; case and a missing ``B`` do not matter.
    """
    if isinstance(text, int):
        return text
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower().removesuffix("b") if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 500MB, 1GB, 2GiB, 1000000)")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size < 1:
        raise ValueError(f"size must be at least one byte, got {text!r}")
    return size


class HashedFile:
    """A file being written, with the SHA-256 of the bytes written through it: the manifest's checksum of a
    shard without reading the shard back (what tarfile needs of a file: ``write`` and ``tell``)."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._handle.write(data)

    def tell(self) -> int:
        return self._handle.tell()

    def sha256(self) -> str:
        return self._digest.hexdigest()


@dataclass(frozen=True)
class ShardLimits:
    """When a shard is full: ``max_samples`` if set, else about ``max_bytes``."""

    max_bytes: int = 10**9
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or (self.max_samples is not None and self.max_samples < 1):
            raise ValueError(f"shard limits must be positive, got {self}")

    def is_full(self, samples: int, size: int, next_size: int) -> bool:
        if samples == 0:
            return False
        if self.max_samples is not None:
            return samples >= self.max_samples
        return size + next_size > self.max_bytes


class ShardWriter:
    """Writes samples into numbered shards; each is renamed into place only once complete.

    Use as a context manager: leaving normally finishes the last shard, leaving with an exception drops
    the shard being written (no partial file remains under a shard name).
    """

    def __init__(self, out_dir: str | os.PathLike, split: str, limits: ShardLimits, first_index: int = 0):
        self.out_dir = Path(out_dir)
        self.split = split
        self.limits = limits
        self.next_index = first_index
        self.finished: list[ShardInfo] = []
        self._mtime = int(time.time())
        self._stack: contextlib.ExitStack | None = None
        self._tar: tarfile.TarFile | None = None
        self._file: HashedFile | None = None
        self._name = ""
        self._samples = self._frames = self._bytes = 0

    def add(self, key: str, meta: Mapping[str, Any], frames: list[bytes]) -> None:
        """Append one sample: ``<key>.json`` (``meta`` with ``frame_index`` added) then its frames."""
        frame_infos = [self._tar_info(frame_member(key, i), len(f)) for i, f in enumerate(frames)]
        meta_json = sample_json(key, meta, frame_infos)
        infos = [self._tar_info(f"{key}.json", len(meta_json))] + frame_infos
        size = sum(tar_member_bytes(info.size) for info in infos)
        if self._tar is not None and self.limits.is_full(self._samples, self._bytes, size):
            self._finish_shard()
        if self._tar is None:
            self._start_shard()
        for info, data in zip(infos, [meta_json, *frames]):
            self._tar.addfile(info, io.BytesIO(data))
        self._samples += 1
        self._frames += len(frames)
        self._bytes += size

    def _tar_info(self, name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, self._mtime, 0o644
        return info

    def _start_shard(self) -> None:
        self._name = shard_name(self.split, self.next_index)
        self._stack = contextlib.ExitStack()
        self._file = HashedFile(self._stack.enter_context(atomic_write(self.out_dir / self._name, "wb")))
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.GNU_FORMAT, encoding=_ENCODING)
        self._samples = self._frames = self._bytes = 0

    def _finish_shard(self) -> None:
        self._tar.close()
        self._stack.close()
        size = (self.out_dir / self._name).stat().st_size
        self.finished.append(ShardInfo(self._name, self._samples, self._frames, size, self._file.sha256()))
        self.next_index += 1
        self._tar = self._stack = None

    def _abort_shard(self, exc: BaseException) -> None:
        self._tar = None
        self._stack.__exit__(type(exc), exc, exc.__traceback__)
        self._stack = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._tar is None:
            return
        if exc is None:
            self._finish_shard()
        else:
            self._abort_shard(exc)
