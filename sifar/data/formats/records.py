"""What a dataset format reader returns: one record per video (or frame folder) and the class names."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

UNLABELED = -1
Box = tuple[float, float, float, float]
"""An object's box in one frame: x0, y0, x1, y1 in pixels (x1, y1 exclusive)."""
_KEY_UNSAFE = re.compile(r"[./\\]")


@dataclass(frozen=True)
class VideoRecord:
    """One video of a split: where it is, its key in the shards and its label."""

    key: str
    source: str
    """Path relative to ``--src`` (POSIX separators), as written to the shards and the error list."""
    path: Path | None
    """The file (or frame folder) found under ``--src``; None when it is missing."""
    label: int = UNLABELED
    label_name: str | None = None
    start_frame: int | None = None
    end_frame: int | None = None
    """Exclusive; None runs to the end of the video."""
    frame_folder: bool = False
    """True for datasets shipped as folders of JPEG frames (Jester)."""
    fps: float | None = None
    """Frame rate stated by the dataset for frame folders (videos carry their own)."""
    boxes: tuple[Box | None, ...] | None = None
    """The object's box in every frame of the video (None where none is visible), for lists that give it."""


@dataclass
class DatasetIndex:
    """A split as listed by its annotation files."""

    records: list[VideoRecord]
    classes: list[str]


@dataclass(frozen=True)
class ReadRequest:
    """What a format reader is asked for: the split of the dataset under ``src``."""

    src: Path | str
    """The dataset's root: a folder, or an object-store prefix (s3://, gs://)."""
    split: str
    annotations: Path | None = None
    """The split's annotation file when given explicitly (else the reader looks for the shipped name)."""
    classes: list[str] | None = None
    """A fixed class list for datasets labelled by name (kinetics400, csv), so indices match another split."""


def sanitize_key(text: str) -> str:
    """A shard key: no '.', '/' or '\\' (webdataset splits keys at the first dot)."""
    return _KEY_UNSAFE.sub("_", text)


def with_unique_keys(records: list[VideoRecord]) -> list[VideoRecord]:
    """Keys made unique within a split by suffixing repeats with ``_2``, ``_3``, ..."""
    seen: set[str] = set()
    unique = []
    for record in records:
        key, n = record.key, 1
        while key in seen:
            n += 1
            key = f"{record.key}_{n}"
        seen.add(key)
        unique.append(record if key == record.key else replace(record, key=key))
    return unique


def index_by_name(names_used: list[str], classes: list[str] | None, where: str) -> tuple[list[str], dict[str, int]]:
    """Class list and name -> index for name-labelled data: ``classes`` if given, else the sorted names.

    A name missing from a given class list is an error naming ``where`` it came from.
    """
    if classes is None:
        classes = sorted(set(names_used))
    lookup = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(names_used) - lookup.keys())
    if unknown:
        raise ValueError(f"{where}: labels not in the given class list: {', '.join(unknown[:10])}"
                         + (f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""))
    return list(classes), lookup


def label_lookup(classes: list[str], source: str) -> dict[str, int]:
    """name -> index of a dataset's own class list (checks it has no duplicate names)."""
    lookup = {name: i for i, name in enumerate(classes)}
    if len(lookup) != len(classes):
        raise ValueError(f"{source} lists a class name twice")
    return lookup


def unknown_label_error(name: str, where: str, labels_file: str | Path) -> ValueError:
    """The error for an annotation whose class is not in the dataset's label file."""
    return ValueError(f"{where}: label {name!r} is not in {labels_file}")


def classes_in_index_order(pairs: list[tuple[int, str]], path: str | Path) -> list[str]:
    """Class names from (index, name) pairs, checking the indices are exactly 0..n-1."""
    by_index = sorted(pairs)
    if [i for i, _ in by_index] != list(range(len(by_index))):
        raise ValueError(f"{path}: class indices are not 0..{len(by_index) - 1}")
    return [name for _, name in by_index]
