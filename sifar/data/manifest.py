"""The manifest written beside a split's shards (``<out>/<split>.json``) and read by the loader and trainer.

It is the source of truth for class names (so indices never drift), the number of classes, epoch
length and the decode settings the shards were made with.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from sifar import __version__
from sifar.io import open_url, write_json

FORMAT_VERSION = 1


@dataclass
class ShardInfo:
    """One finished shard: its file name (relative to the manifest), sample and frame counts, size, and the
    SHA-256 of its bytes (None in manifests written before it was recorded)."""

    name: str
    samples: int
    frames: int
    bytes: int
    sha256: str | None = None


@dataclass
class Manifest:
    """What a split's shards hold."""

    dataset: str
    split: str
    classes: list[str]
    shards: list[ShardInfo] = field(default_factory=list)
    decode: dict[str, Any] = field(default_factory=dict)
    tool_version: str = __version__
    format_version: int = FORMAT_VERSION

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def num_frames(self) -> int:
        return sum(s.frames for s in self.shards)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["num_samples"] = self.num_samples
        data["num_frames"] = self.num_frames
        data["num_classes"] = self.num_classes
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["shards"] = [ShardInfo(**s) for s in data.get("shards", [])]
        return cls(**kwargs)


def manifest_path(out_dir: str | os.PathLike, split: str) -> str:
    """Where the manifest of ``split`` lives inside a shard folder or URL prefix."""
    return f"{str(out_dir).rstrip('/')}/{split}.json"


def write_manifest(manifest: Manifest, path: str | os.PathLike) -> None:
    """Write atomically (temporary name, then rename)."""
    write_json(path, manifest.to_dict())


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read a manifest from a local path or URL; a clear error names the file when it is not one."""
    try:
        with open_url(path, "r") as handle:
            data = json.load(handle)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no manifest at {path}") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a sifar manifest (invalid JSON: {err})") from err
    if not isinstance(data, dict) or "shards" not in data or "classes" not in data:
        raise ValueError(f"{path} is not a sifar manifest (no 'shards' and 'classes' entries)")
    return Manifest.from_dict(data)
