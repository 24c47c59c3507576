"""The shard format, in one place: what a sample's members are called, what its JSON holds, how its frames
are indexed. The writer (:mod:`sifar.data.shard_writer`) and the one tar reader (:mod:`sifar.data.tar_reader`)
both take it from here.

A shard is plain GNU tar (``tar tf`` and webdataset read it). A sample is ``<key>.json`` followed by its
frames ``<key>.000000.jpg, <key>.000001.jpg, ...``, consecutive.

Frame index: the writer adds ``"frame_index": [[offset, size], ...]`` to each ``<key>.json``, one pair per
frame in frame order: ``size`` is the frame's byte size and ``offset`` the position of its member (its first
header: the GNU long-name header when the name needs one) counted from the end of the JSON member (the end
of its data padded to 512 bytes), so the pairs do not depend on where the sample sits in the shard. A reader
of a local file seeks straight to the sampled frames (:mod:`sifar.data.tar_reader` parses the member found
there and checks its name and size); readers that ignore the field (``tar``, webdataset, shards written
before it existed) lose nothing.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass
from typing import Any, Mapping

BLOCK = tarfile.BLOCKSIZE
JSON_SUFFIX = "json"
_ENCODING = "utf-8"
_MEMBER_NAME = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


def frame_member(key: str, index: int) -> str:
    """Tar member name of a sample's ``index``-th frame (``<key>.000012.jpg``)."""
    return f"{key}.{frame_member_suffix(index)}"


def split_member_name(name: str) -> tuple[str, str]:
    """``dir/key.000003.jpg`` -> (``dir/key``, ``000003.jpg``), webdataset's rule for sample keys."""
    match = _MEMBER_NAME.match(name)
    return (match.group(1), match.group(2)) if match else (name, "")


def frame_member_suffix(index: int) -> str:
    """The member name suffix of frame ``index`` in the shard format (``000012.jpg``)."""
    return f"{index:06d}.jpg"


def tar_member_bytes(size: int) -> int:
    """Bytes a member of ``size`` bytes takes in a tar: one header block plus data padded to blocks."""
    return BLOCK + -(-size // BLOCK) * BLOCK


def frame_index(frame_infos: list[tarfile.TarInfo]) -> list[list[int]]:
    """``[offset, size]`` of each frame's member, from the frames' tar headers (see the module docstring)."""
    index, offset = [], 0
    for info in frame_infos:
        index.append([offset, info.size])
        headers = info.tobuf(tarfile.GNU_FORMAT, _ENCODING, "surrogateescape")  # long-name headers included
        offset += len(headers) + tar_member_bytes(info.size) - BLOCK
    return index


def sample_json(key: str, meta: Mapping[str, Any], frame_infos: list[tarfile.TarInfo]) -> bytes:
    """``<key>.json``: ``meta`` and the frames' ``frame_index``; ValueError naming the sample if JSON cannot
    hold ``meta``."""
    if not isinstance(meta, Mapping):
        raise ValueError(f"the metadata of sample {key} must be a mapping, got {type(meta).__name__}")
    try:
        return json.dumps({**meta, "frame_index": frame_index(frame_infos)}).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise ValueError(f"the metadata of sample {key} cannot be written as JSON: {err}") from err


def frame_index_of(meta: dict[str, Any]) -> list[Any]:
    """The JSON's ``frame_index``, one entry per frame (entries checked by :func:`index_entry`)."""
    index = meta["frame_index"]
    if not isinstance(index, list) or len(index) != meta.get("num_frames"):
        raise ValueError(f"frame_index is not a list of num_frames={meta.get('num_frames')!r} entries")
    return index


def index_entry(index: list[Any], frame: int) -> tuple[int, int]:
    """(data offset, size) of ``frame``; ValueError for an entry that is not two non-negative integers."""
    entry = index[frame]
    if type(entry) is list and len(entry) == 2:
        offset, size = entry
        if type(offset) is int and type(size) is int and offset >= 0 and size >= 0:
            return offset, size
    raise ValueError(f"frame_index entry {entry!r} of frame {frame} is not [offset, size]")


@dataclass(frozen=True)
class SampleInfo:
    """What a sample's JSON tells its readers, parsed and checked once: the loader, inspect and preview read
    these fields rather than the JSON's keys. The writer also stores ``fps``, ``source``, ``orig_width``,
    ``orig_height``, the trim and the object ``boxes``, which readers take from the JSON where they need them."""

    key: str
    label: int  # -1: unlabelled (test splits)
    num_frames: int
    label_name: str | None = None
    width: int | None = None
    height: int | None = None
    dataset: str | None = None

    @classmethod
    def parse(cls, meta: Mapping[str, Any], key: str) -> SampleInfo:
        """The info of a parsed ``<key>.json``; ValueError naming the field a reader cannot use."""
        frames, label = meta.get("num_frames"), meta.get("label", -1)
        if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
            raise ValueError(f"num_frames must be a positive integer, got {frames!r}")
        if not isinstance(label, int) or isinstance(label, bool):
            raise ValueError(f"label must be an integer, got {label!r}")
        return cls(str(meta.get("key", key)), label, frames, meta.get("label_name"), meta.get("width"),
                   meta.get("height"), meta.get("dataset"))

    @property
    def stored_short_side(self) -> int:
        """The stored frames' shorter side (0 when the JSON does not say)."""
        return min(self.width or 0, self.height or 0)
