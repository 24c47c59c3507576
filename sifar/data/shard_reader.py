"""Reading samples back from a shard with plain ``tarfile``, checking the layout the writer promises.

For tools (inspect, preview, resume); the training loader streams shards through webdataset instead.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import IO, Any, Iterator

from sifar.data.shard_format import frame_member
from sifar.io import is_url, open_url


class ShardFormatError(ValueError):
    """A shard that is unreadable or does not follow the sample layout."""


@dataclass
class ShardSample:
    """One sample: its key, its ``<key>.json`` and its frames (empty when read without frame data)."""

    key: str
    meta: dict[str, Any]
    num_frames: int = 0
    frames: list[bytes] = field(default_factory=list)


def read_shard(path: str | os.PathLike, with_frames: bool = True) -> Iterator[ShardSample]:
    """Samples of the shard at ``path`` (local path or URL), in order.

    Raises :class:`ShardFormatError` naming the shard for a damaged tar or a sample that breaks the layout
    (json first, frames numbered from 0 without gaps, frame count as the json says).
    """
    with _open(path) as handle:
        yield from _samples(handle, str(path), with_frames, seekable=not is_url(path))


def _open(path: str | os.PathLike) -> IO[bytes]:
    try:
        return open_url(path, "rb") if is_url(path) else open(path, "rb")
    except OSError as err:
        raise ShardFormatError(f"cannot open shard {path}: {err}") from err


def _samples(handle: IO[bytes], name: str, with_frames: bool, seekable: bool) -> Iterator[ShardSample]:
    current: ShardSample | None = None
    try:
        with tarfile.open(fileobj=handle, mode="r:" if seekable else "r|") as tar:
            for member in tar:
                key, _, suffix = member.name.partition(".")
                if suffix == "json":
                    if current is not None:
                        yield _checked(current, name)
                    current = ShardSample(key, _read_json(tar, member, name))
                    continue
                if current is None or key != current.key:
                    raise ShardFormatError(f"{name}: {member.name} does not follow its sample's {key}.json")
                if member.name != frame_member(key, current.num_frames):
                    raise ShardFormatError(f"{name}: expected {frame_member(key, current.num_frames)}, "
                                           f"found {member.name}")
                current.num_frames += 1
                if with_frames:
                    current.frames.append(tar.extractfile(member).read())
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ShardFormatError(f"{name}: unreadable tar ({err})") from err
    if current is not None:
        yield _checked(current, name)


def _read_json(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> dict[str, Any]:
    try:
        meta = json.loads(tar.extractfile(member).read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ShardFormatError(f"{name}: {member.name} is not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise ShardFormatError(f"{name}: {member.name} is not a JSON object")
    return meta


def _checked(sample: ShardSample, name: str) -> ShardSample:
    if sample.meta.get("num_frames") != sample.num_frames:
        raise ShardFormatError(f"{name}: sample {sample.key} has {sample.num_frames} frames, "
                               f"its json says {sample.meta.get('num_frames')}")
    return sample
