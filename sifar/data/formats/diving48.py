"""Diving48 (V2) as it ships.

``Diving48_V2_train.json`` / ``Diving48_V2_test.json`` list ``{"vid_name", "label", "start_frame",
"end_frame"}`` (label already an index; ``end_frame`` exclusive); ``Diving48_vocab.json`` lists, per label,
its four sub-labels (take-off, somersaults, twists, flight position), joined for a readable class name.
Videos: ``<vid_name>.mp4`` (usually under ``rgb/``). Diving48 has no separate validation set: ``val`` and
``test`` both read the test list, as the paper evaluates on it.
"""

from __future__ import annotations

from pathlib import Path

from sifar.data.formats.registry import register_format
from sifar.data.formats.records import DatasetIndex, ReadRequest, VideoRecord, sanitize_key, with_unique_keys
from sifar.data.formats.source_files import SourceTree, read_json

VOCAB_FILE = "Diving48_vocab.json"
SPLIT_FILES = {"train": "Diving48_V2_train.json", "val": "Diving48_V2_test.json", "test": "Diving48_V2_test.json"}


def read_vocab(path: Path) -> list[str]:
    """Class names: each entry's sub-labels joined by spaces (an entry may also be a plain string)."""
    vocab = read_json(path)
    if not isinstance(vocab, list):
        raise ValueError(f"{path}: expected a list of sub-label lists")
    return [" ".join(entry) if isinstance(entry, list) else str(entry) for entry in vocab]


@register_format("diving48")
def read_diving48(request: ReadRequest) -> DatasetIndex:
    """Records of one Diving48 split, trimmed to their start and end frames."""
    tree = SourceTree(request.src)
    vocab_file = tree.label_file([VOCAB_FILE], None, "diving48 vocabulary")
    classes = read_vocab(vocab_file)
    split_file = tree.label_file([SPLIT_FILES[request.split]], request.annotations, f"diving48 {request.split} list")
    records = []
    for i, entry in enumerate(read_json(split_file)):
        where = f"{split_file} entry {i}"
        try:
            name, label = str(entry["vid_name"]), int(entry["label"])
            start, end = int(entry.get("start_frame", 0)), entry.get("end_frame")
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: expected vid_name, label, start_frame, end_frame ({err!r})") from err
        if not 0 <= label < len(classes):
            raise ValueError(f"{where}: label {label} is outside {vocab_file}'s {len(classes)} classes")
        path = tree.video(f"{name}.mp4") or tree.video_by_stem(name)
        records.append(VideoRecord(sanitize_key(name), tree.source_of(path, f"{name}.mp4"), path, label,
                                   classes[label], start_frame=start,
                                   end_frame=int(end) if end is not None else None))
    return DatasetIndex(with_unique_keys(records), classes)
