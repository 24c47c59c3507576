"""A generic list for users' own data: ``path,label`` lines, paths relative to ``--src``.

No header (a first line ``path,label`` is accepted as one). Labels are integer indices or class names;
names get indices in sorted order (or the order of a given class list). A path may contain commas: the
label is what follows the last one.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from sifar.data.formats import register_format
from sifar.data.formats.records import (DatasetIndex, ReadRequest, VideoRecord, index_by_name, sanitize_key,
                                        with_unique_keys)
from sifar.data.formats.source_files import SourceTree, read_lines

SPLIT_FILES = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(path, label) pairs of a list file."""
    pairs = []
    for line, text in enumerate(read_lines(path), start=1):
        video, sep, label = text.rpartition(",")
        if not sep or not video.strip() or not label.strip():
            raise ValueError(f"{path} line {line}: expected 'path,label', got {text!r}")
        if line == 1 and (video.strip(), label.strip()) == ("path", "label"):
            continue
        pairs.append((video.strip(), label.strip()))
    return pairs


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
    pairs = read_pairs(list_file)
    labels = [label for _, label in pairs]
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
    for (video, _), (label, name) in zip(pairs, named):
        path = request.src / video
        found = path if path.exists() else None
        key = sanitize_key(str(PurePosixPath(video).with_suffix("")))
        records.append(VideoRecord(key, PurePosixPath(video).as_posix(), found, label, name))
    return DatasetIndex(with_unique_keys(records), classes)
