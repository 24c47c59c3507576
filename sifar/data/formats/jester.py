"""20BN-Jester V1 as it ships: folders of JPEG frames, not videos.

``jester-v1-labels.csv`` holds one label a line (its 0-based line number is the index);
``jester-v1-train.csv`` / ``-validation.csv`` hold ``id;label`` lines, ``-test.csv`` ids only (label -1).
Frames are ``<id>/00001.jpg, 00002.jpg, ...`` (usually under ``20bn-jester-v1/``), recorded at 12 fps. They
are copied into the shards as they are unless resizing or resampling is asked for.
"""

from __future__ import annotations

from sifar.data.formats.registry import register_format
from sifar.data.formats.records import (UNLABELED, DatasetIndex, ReadRequest, VideoRecord,
                                        sanitize_key, unknown_label_error, with_unique_keys)
from sifar.data.formats.source_files import open_labelled_split, read_lines

LABELS_FILE = "jester-v1-labels.csv"
SPLIT_FILES = {"train": "jester-v1-train.csv", "val": "jester-v1-validation.csv", "test": "jester-v1-test.csv"}
FRAME_RATE = 12.0


@register_format("jester", default_short_side=0)
def read_jester(request: ReadRequest) -> DatasetIndex:
    """Records (frame folders) of one Jester split."""
    split = open_labelled_split(request, LABELS_FILE, "jester labels", [SPLIT_FILES[request.split]],
                                f"jester {request.split} list", read_lines)
    tree, labels_file, classes, lookup, split_file = (split.tree, split.labels_file, split.classes, split.lookup,
                                                      split.split_file)
    records = []
    for line, text in enumerate(read_lines(split_file), start=1):
        video_id, _, name = text.partition(";")
        label = UNLABELED
        if request.split != "test":
            if name not in lookup:
                raise unknown_label_error(name, f"{split_file} line {line}", labels_file)
            label = lookup[name]
        folder = tree.folder(video_id)
        records.append(VideoRecord(sanitize_key(video_id), tree.source_of(folder, video_id), folder, label,
                                   name or None, frame_folder=True, fps=FRAME_RATE))
    return DatasetIndex(with_unique_keys(records), classes)
