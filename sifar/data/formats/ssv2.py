"""Something-Something V2 as it ships.

``something-something-v2-labels.json`` maps each template to its index (``{"Putting something on a
surface": "101", ...}``); ``something-something-v2-train.json`` / ``-validation.json`` list
``{"id", "label", "template", "placeholders"}``, the class being the template with the brackets of
``[something]`` stripped; ``-test.json`` lists ids only (sharded unlabeled, label -1). Videos: ``<id>.webm``.
"""

from __future__ import annotations

from pathlib import Path

from sifar.data.formats.registry import register_format
from sifar.data.formats.records import (UNLABELED, DatasetIndex, ReadRequest, VideoRecord, classes_in_index_order,
                                        sanitize_key, unknown_label_error, with_unique_keys)
from sifar.data.formats.source_files import open_labelled_split, read_json

LABELS_FILE = "something-something-v2-labels.json"
SPLIT_FILES = {"train": "something-something-v2-train.json", "val": "something-something-v2-validation.json",
               "test": "something-something-v2-test.json"}


def template_class(template: str) -> str:
    """The class of an annotation: its template with the placeholder brackets removed."""
    return template.replace("[", "").replace("]", "")


def read_labels(path: Path) -> list[str]:
    """Class names ordered by the index the labels file gives them."""
    mapping = read_json(path)
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: expected an object {{template: index}}")
    return classes_in_index_order([(int(index), name) for name, index in mapping.items()], path)


@register_format("ssv2")
def read_ssv2(request: ReadRequest) -> DatasetIndex:
    """Records of one Something-Something V2 split."""
    split = open_labelled_split(request, LABELS_FILE, "ssv2 labels", [SPLIT_FILES[request.split]],
                                f"ssv2 {request.split} list", read_labels)
    tree, labels_file, classes, lookup, split_file = (split.tree, split.labels_file, split.classes, split.lookup,
                                                      split.split_file)
    records = []
    for i, entry in enumerate(read_json(split_file)):
        where = f"{split_file} entry {i}"
        if not isinstance(entry, dict) or "id" not in entry:
            raise ValueError(f"{where}: expected an object with an 'id'")
        label, name = UNLABELED, None
        if request.split != "test":
            if "template" not in entry:
                raise ValueError(f"{where}: no 'template' in a labeled split")
            name = template_class(entry["template"])
            if name not in lookup:
                raise unknown_label_error(name, where, labels_file)
            label = lookup[name]
        video_id = str(entry["id"])
        path = tree.video(f"{video_id}.webm") or tree.video_by_stem(video_id)
        records.append(VideoRecord(sanitize_key(video_id), tree.source_of(path, f"{video_id}.webm"), path,
                                   label, name))
    return DatasetIndex(with_unique_keys(records), classes)
