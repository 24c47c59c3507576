"""Kinetics-400 as released: one CSV per split, clips named after the YouTube id and the clip's times.

Columns ``label,youtube_id,time_start,time_end,split`` (extra ones such as ``is_cc`` are ignored; a test
CSV without labels gives label -1). Clips are ``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4``, flat or
in one folder per label. Classes are indexed by sorted label name unless a class list is given (so a
validation split reuses the training split's indices).
"""

from __future__ import annotations

import csv
from pathlib import Path

from sifar.data.formats.registry import register_format
from sifar.data.formats.records import (UNLABELED, DatasetIndex, ReadRequest, VideoRecord, index_by_name,
                                        sanitize_key, with_unique_keys)
from sifar.data.formats.source_files import SourceTree

SPLIT_FILES = {
    "train": ["train.csv", "kinetics-400_train.csv", "kinetics_train.csv"],
    "val": ["validate.csv", "val.csv", "kinetics-400_val.csv", "kinetics-400_validate.csv", "kinetics_val.csv"],
    "test": ["test.csv", "kinetics-400_test.csv", "kinetics_test.csv"],
}
REQUIRED_COLUMNS = ("youtube_id", "time_start", "time_end")


def clip_stem(youtube_id: str, time_start: str, time_end: str) -> str:
    """The released clip name without extension: ``<id>_<start:06d>_<end:06d>``."""
    return f"{youtube_id}_{int(float(time_start)):06d}_{int(float(time_end)):06d}"


def read_rows(path: Path) -> list[dict[str, str]]:
    """The CSV's rows as dicts; checks the columns clips are named by are there."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} "
                             "(expected label,youtube_id,time_start,time_end,split)")
        return list(reader)


@register_format("kinetics400")
def read_kinetics(request: ReadRequest) -> DatasetIndex:
    """Records of one Kinetics-400 split."""
    tree = SourceTree(request.src)
    csv_path = tree.label_file(SPLIT_FILES[request.split], request.annotations, f"kinetics400 {request.split} CSV")
    rows = read_rows(csv_path)
    names = [row["label"] for row in rows if row.get("label")]
    classes, lookup = index_by_name(names, request.classes, str(csv_path))
    records = []
    for line, row in enumerate(rows, start=2):
        try:
            stem = clip_stem(row["youtube_id"], row["time_start"], row["time_end"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{csv_path} line {line}: bad clip times ({err})") from err
        name = row.get("label") or None
        path = tree.video_by_stem(stem)
        records.append(VideoRecord(sanitize_key(stem), tree.source_of(path, f"{stem}.mp4"), path,
                                   lookup[name] if name else UNLABELED, name))
    return DatasetIndex(with_unique_keys(records), classes)
