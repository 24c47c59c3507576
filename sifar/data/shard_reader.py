"""Reading whole samples back from a shard, checking the layout the writer promises (json first, frames
numbered from 0 without gaps, as many as the json says).

For tools (inspect, preview, resume); the training loader reads only the sampled frames of each sample
(:func:`sifar.data.tar_reader.read_samples`). Both walk the shard with the one tar reader,
:class:`~sifar.data.tar_reader.TarMemberReader`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

from sifar.data.shard_format import JSON_SUFFIX, frame_member, split_member_name
from sifar.data.sources import open_shard
from sifar.data.tar_reader import TarFormatError, TarMember, TarMemberReader
from sifar.io import is_url


class ShardFormatError(ValueError):
    """A shard that is unreadable or does not follow the sample layout."""


@dataclass
class StoredSample:
    """One sample as stored: its key, its ``<key>.json`` and all its frames (none when read without data)."""

    key: str
    meta: dict[str, Any]
    num_frames: int = 0
    frames: list[bytes] = field(default_factory=list)


def read_shard(path: str | os.PathLike, with_frames: bool = True) -> Iterator[StoredSample]:
    """Samples of the shard at ``path`` (local path or URL), in order; ``with_frames=False`` skips the JPEG
    data (seeked over in local files).

    Raises :class:`ShardFormatError` naming the shard for a damaged or truncated tar, or a sample that
    breaks the layout.
    """
    name = str(path)
    try:
        stream = open_shard(name)
    except OSError as err:
        raise ShardFormatError(f"cannot open shard {name}: {err}") from err
    with stream:
        reader = TarMemberReader(stream, name, seekable=not is_url(name))
        try:
            yield from _samples(reader, name, with_frames)
        except TarFormatError as err:  # its message names the shard
            raise ShardFormatError(str(err)) from err
        except OSError as err:
            raise ShardFormatError(f"{name}: unreadable ({err})") from err


def _samples(reader: TarMemberReader, name: str, with_frames: bool) -> Iterator[StoredSample]:
    current: StoredSample | None = None
    for member in reader:
        key, suffix = split_member_name(member.name)
        if suffix == JSON_SUFFIX:
            if current is not None:
                yield _checked(current, name)
            current = StoredSample(key, _read_json(reader, member, name))
            continue
        if current is None or key != current.key:
            raise ShardFormatError(f"{name}: {member.name} does not follow its sample's {key}.json")
        if member.name != frame_member(key, current.num_frames):
            raise ShardFormatError(f"{name}: expected {frame_member(key, current.num_frames)}, found {member.name}")
        current.num_frames += 1
        if with_frames:
            current.frames.append(reader.read(member))
    if current is not None:
        yield _checked(current, name)


def _read_json(reader: TarMemberReader, member: TarMember, name: str) -> dict[str, Any]:
    try:
        meta = json.loads(reader.read(member).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ShardFormatError(f"{name}: {member.name} is not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise ShardFormatError(f"{name}: {member.name} is not a JSON object")
    return meta


def _checked(sample: StoredSample, name: str) -> StoredSample:
    if sample.meta.get("num_frames") != sample.num_frames:
        raise ShardFormatError(f"{name}: sample {sample.key} has {sample.num_frames} frames, "
                               f"its json says {sample.meta.get('num_frames')}")
    return sample
