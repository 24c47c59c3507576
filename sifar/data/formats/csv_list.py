"""A generic list for users' own data: ``path,label`` lines, paths relative to ``--src``.

No header needed (a first line ``path,label`` is accepted as one). Labels are integer indices or class
names; names get indices in sorted order (or the order of a given class list). A path may contain commas:
the label is what follows the last one. A path may also be a URL (``s3://``, ``gs://``, ``https://``): the
video is streamed to ffmpeg, and its key is the URL without its scheme.

A list whose header is ``path,label,boxes`` also gives each video's object box in every frame (what
``sifar-tools synth`` writes; class activation maps are scored against it): its lines are read as CSV
(quoted fields), and the ``boxes`` field is a JSON list with one ``[x0, y0, x1, y1]`` per frame, in pixels
of the video's frames (x1, y1 exclusive), or ``null`` for a frame without a visible object. Sharding carries
the boxes into each sample's JSON, trimmed, resampled and scaled like the stored frames.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from sifar.data.formats.registry import register_format
from sifar.data.formats.records import (Box, DatasetIndex, ReadRequest, VideoRecord, index_by_name, sanitize_key,
                                        with_unique_keys)
from sifar.data.formats.source_files import SourceTree, read_lines
from sifar.io import is_url

SPLIT_FILES = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}


BOXES_HEADER = ("path", "label", "boxes")


@dataclass(frozen=True)
class ListEntry:
    """One line of a list: the video, its label and, in a list with a ``boxes`` column, its boxes."""

    video: str
    label: str
    boxes: tuple[Box | None, ...] | None = None


class RepeatedVideoWarning(UserWarning):
    """A list names a video on more than one line: it is sharded once per line."""


def read_entries(path: Path) -> list[ListEntry]:
    """The entries of a list file, with or without a ``boxes`` column; warns about repeated videos."""
    lines = read_lines(path)
    if lines and tuple(field.strip() for field in lines[0].split(",")) == BOXES_HEADER:
        numbered = [(line, _entry_with_boxes(fields, path, line))
                    for line, fields in enumerate(csv.reader(lines[1:]), start=2)]
    else:
        numbered = []
        for line, text in enumerate(lines, start=1):
            video, sep, label = text.rpartition(",")
            if not sep or not video.strip() or not label.strip():
                raise ValueError(f"{path} line {line}: expected 'path,label', got {text!r}")
            if line == 1 and (video.strip(), label.strip()) == ("path", "label"):
                continue
            numbered.append((line, ListEntry(video.strip(), label.strip())))
    _warn_about_repeats(numbered, path)
    return [entry for _, entry in numbered]


def _repeat_example(video: str, found: list[tuple[int, str]]) -> str:
    labels = sorted({label for _, label in found})
    conflict = f" (labels {', '.join(labels)})" if len(labels) > 1 else ""
    return f"{video} on lines {', '.join(str(line) for line, _ in found)}{conflict}"


def _warn_about_repeats(numbered: list[tuple[int, ListEntry]], path: Path, shown: int = 5) -> None:
    lines_of: dict[str, list[tuple[int, str]]] = {}
    for line, entry in numbered:
        lines_of.setdefault(entry.video, []).append((line, entry.label))
    repeated = {video: found for video, found in lines_of.items() if len(found) > 1}
    if not repeated:
        return
    examples = "; ".join(_repeat_example(video, found) for video, found in list(repeated.items())[:shown])
    more = f"; and {len(repeated) - shown} more" if len(repeated) > shown else ""
    warnings.warn(f"{path}: {len(repeated)} videos listed more than once, each is sharded once per line: "
                  f"{examples}{more}", RepeatedVideoWarning, stacklevel=2)


def _entry_with_boxes(fields: list[str], path: Path, line: int) -> ListEntry:
    if len(fields) != 3 or not fields[0].strip() or not fields[1].strip():
        raise ValueError(f"{path} line {line}: expected 'path,label,boxes' (quote fields with commas), "
                         f"got {len(fields)} fields: {fields!r}")
    try:
        boxes = parse_boxes(json.loads(fields[2]))
    except ValueError as err:
        raise ValueError(f"{path} line {line}: bad boxes: {err}") from err
    return ListEntry(fields[0].strip(), fields[1].strip(), boxes)


def parse_boxes(value: object) -> tuple[Box | None, ...]:
    """Checked boxes from parsed JSON: a list of ``[x0, y0, x1, y1]`` (x0 < x1, y0 < y1) or null per frame."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a non-empty list of [x0, y0, x1, y1] or null, got {value!r}")
    boxes: list[Box | None] = []
    for i, box in enumerate(value):
        if box is None:
            boxes.append(None)
            continue
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in box)
                or not (box[0] < box[2] and box[1] < box[3])):
            raise ValueError(f"frame {i}: expected [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {box!r}")
        boxes.append(tuple(box))
    return tuple(boxes)


def write_entries(handle: IO[str], entries: list[ListEntry]) -> None:
    """Write a list with a ``boxes`` column (every entry must have boxes)."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(BOXES_HEADER)
    for entry in entries:
        boxes = [list(box) if box is not None else None for box in entry.boxes]
        writer.writerow([entry.video, entry.label, json.dumps(boxes, separators=(",", ":"))])


def integer_classes(labels: list[int], classes: list[str] | None, where: str) -> list[str]:
    """The class list for integer labels: the given names, else the indices themselves as names."""
    if classes is None:
        return [str(i) for i in range(max(labels, default=-1) + 1)]
    if labels and max(labels) >= len(classes):
        raise ValueError(f"{where}: label {max(labels)} but the given class list has {len(classes)} names")
    return list(classes)


@register_format("csv")
def read_csv_list(request: ReadRequest) -> DatasetIndex:
    """Records of a ``path,label`` list (``<src>/<split>.csv`` unless ``--annotations`` names the file)."""
    tree = SourceTree(request.src)
    list_file = tree.label_file([SPLIT_FILES[request.split]], request.annotations, f"csv {request.split} list")
    entries = read_entries(list_file)
    labels = [entry.label for entry in entries]
    if all(label.lstrip("-").isdigit() for label in labels):
        indices = [int(label) for label in labels]
        if any(i < 0 for i in indices):
            raise ValueError(f"{list_file}: negative label {min(indices)}")
        classes = integer_classes(indices, request.classes, str(list_file))
        named = [(i, classes[i]) for i in indices]
    else:
        classes, lookup = index_by_name(labels, request.classes, str(list_file))
        named = [(lookup[label], label) for label in labels]
    records = []
    for entry, (label, name) in zip(entries, named):
        found = entry.video if is_url(entry.video) else tree.resolve(entry.video)  # a URL: ffmpeg says if it is not
        key = sanitize_key(str(PurePosixPath(entry.video.split("://", 1)[-1]).with_suffix("")))
        records.append(VideoRecord(key, PurePosixPath(entry.video).as_posix(), found, label, name,
                                   boxes=entry.boxes))
    return DatasetIndex(with_unique_keys(records), classes)
