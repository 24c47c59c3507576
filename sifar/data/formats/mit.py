"""Moments in Time as it ships.

``moments_categories.txt`` lists ``name,index``; ``trainingSet.csv`` / ``validationSet.csv`` list
``filename,label,positive responses,negative responses`` with ``filename`` like ``<class>/<file>.mp4``
relative to ``training/`` or ``validation/``.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from sifar.data.formats.registry import register_format
from sifar.data.formats.records import (DatasetIndex, ReadRequest, VideoRecord, classes_in_index_order, sanitize_key,
                                        unknown_label_error, with_unique_keys)
from sifar.data.formats.source_files import open_labelled_split, read_lines

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
    return classes_in_index_order(by_index, path)


@register_format("mit", splits=("train", "val"))
def read_mit(request: ReadRequest) -> DatasetIndex:
    """Records of one Moments in Time split."""
    split = open_labelled_split(request, CATEGORIES_FILE, "mit categories", [SPLIT_FILES[request.split]],
                                f"mit {request.split} list", read_categories)
    tree, categories_file, classes, lookup, split_file = (split.tree, split.labels_file, split.classes,
                                                          split.lookup, split.split_file)
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
