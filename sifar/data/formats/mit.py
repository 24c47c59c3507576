"""Moments in Time as it ships.

``moments_categories.txt`` lists ``name,index``; ``trainingSet.csv`` / ``validationSet.csv`` list
``filename,label,positive responses,negative responses`` with ``filename`` like ``<class>/<file>.mp4``
relative to ``training/`` or ``validation/``.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from sifar.data.formats import register_format
from sifar.data.formats.records import (DatasetIndex, ReadRequest, VideoRecord, label_lookup, sanitize_key,
                                        unknown_label_error, with_unique_keys)
from sifar.data.formats.source_files import SourceTree, read_lines

CATEGORIES_FILE = "moments_categories.txt"
SPLIT_FILES = {"train": "trainingSet.csv", "val": "validationSet.csv"}
SPLIT_FOLDERS = {"train": "training", "val": "validation"}


def read_categories(path: Path) -> list[str]:
    """Class names ordered by the index in ``name,index`` lines."""
    by_index = []
    for line in read_lines(path):
        name, _, index = line.rpartition(",")
        if not name or not index.strip().isdigit():
            raise ValueError(f"{path}: expected 'name,index' lines, got {line!r}")
        by_index.append((int(index), name))
    by_index.sort()
    if [i for i, _ in by_index] != list(range(len(by_index))):
        raise ValueError(f"{path}: class indices are not 0..{len(by_index) - 1}")
    return [name for _, name in by_index]


@register_format("mit", splits=("train", "val"))
def read_mit(request: ReadRequest) -> DatasetIndex:
    """Records of one Moments in Time split."""
    tree = SourceTree(request.src)
    categories_file = tree.label_file([CATEGORIES_FILE], None, "mit categories")
    classes = read_categories(categories_file)
    lookup = label_lookup(classes, str(categories_file))
    split_file = tree.label_file([SPLIT_FILES[request.split]], request.annotations, f"mit {request.split} list")
    folder = SPLIT_FOLDERS[request.split]
    records = []
    with open(split_file, newline="", encoding="utf-8-sig") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row or (line == 1 and row[0] == "filename"):
                continue
            if len(row) < 2:
                raise ValueError(f"{split_file} line {line}: expected 'filename,label,...', got {row!r}")
            filename, name = row[0], row[1]
            if name not in lookup:
                raise unknown_label_error(name, f"{split_file} line {line}", categories_file)
            path = tree.video_by_suffix(filename, [folder])
            stem = str(PurePosixPath(filename).with_suffix(""))
            records.append(VideoRecord(sanitize_key(stem), tree.source_of(path, f"{folder}/{filename}"), path,
                                       lookup[name], name))
    return DatasetIndex(with_unique_keys(records), classes)
