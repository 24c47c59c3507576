"""Finding a dataset's files under ``--src``: label files by their shipped names, videos in any subfolder.

Datasets ship videos in nested folders (``20bn-something-something-v2/``, ``train/<label>/``,
``training/<class>/``, ``rgb/``), so the tree under ``--src`` is walked once and files are looked up by name.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sifar.data.formats.records import ReadRequest, label_lookup

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ogv", ".ts")


class MissingLabelFile(FileNotFoundError):
    """A dataset's annotation or label file is not where it ships."""


class SourceTree:
    """An index of the files and folders under a dataset root, built on first use."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._files: dict[str, list[Path]] | None = None
        self._dirs: dict[str, list[Path]] | None = None

    def _walk(self) -> None:
        files: dict[str, list[Path]] = defaultdict(list)
        dirs: dict[str, list[Path]] = defaultdict(list)
        for folder, dirnames, filenames in os.walk(self.root, followlinks=True):
            dirnames.sort()
            base = Path(folder)
            for name in dirnames:
                dirs[name].append(base / name)
            for name in sorted(filenames):
                files[name].append(base / name)
        self._files, self._dirs = files, dirs

    @property
    def files(self) -> dict[str, list[Path]]:
        if self._files is None:
            self._walk()
        return self._files

    @property
    def dirs(self) -> dict[str, list[Path]]:
        if self._dirs is None:
            self._walk()
        return self._dirs

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, with '/' separators (as stored in shards and error lists)."""
        return Path(os.path.relpath(path, self.root)).as_posix()

    def source_of(self, path: Path | None, expected: str) -> str:
        """The ``source`` of a record: the found file relative to the root, else what the annotation named."""
        return self.relative(path) if path is not None else expected

    def label_file(self, names: list[str], given: Path | None, what: str) -> Path:
        """The annotation file: ``given`` if set, else the first of ``names`` found (shallowest first)."""
        if given is not None:
            if not Path(given).is_file():
                raise MissingLabelFile(f"{what}: the file given with --annotations does not exist: {given}")
            return Path(given)
        for name in names:
            if (self.root / name).is_file():
                return self.root / name
        for name in names:
            if self.files.get(name):
                return _shallowest(self.files[name])
        expected = " or ".join(names)
        raise MissingLabelFile(f"{what}: expected {expected} in {self.root} (or any folder below it); "
                               "pass --annotations FILE to use another file")

    def video(self, name: str) -> Path | None:
        """The file called ``name`` anywhere under the root (the shallowest if there are several)."""
        found = self.files.get(name)
        return _shallowest(found) if found else None

    def video_by_stem(self, stem: str) -> Path | None:
        """A video file ``<stem>.<any video extension>`` anywhere under the root."""
        for extension in VIDEO_EXTENSIONS:
            found = self.files.get(stem + extension)
            if found:
                return _shallowest(found)
        return None

    def video_by_suffix(self, relative: str, folders: list[str]) -> Path | None:
        """A file whose path ends with ``relative`` (e.g. ``class/file.mp4``): ``<root>/<folder>/relative``
        for each of ``folders`` first, then anywhere under the root."""
        for folder in folders:
            candidate = self.root / folder / relative
            if candidate.is_file():
                return candidate
        parts = Path(relative).parts
        matches = [p for p in self.files.get(parts[-1], []) if p.parts[-len(parts):] == parts]
        return _shallowest(matches) if matches else None

    def folder(self, name: str) -> Path | None:
        """A folder called ``name`` anywhere under the root (frame folders of datasets shipped as frames)."""
        direct = self.root / name
        if direct.is_dir():
            return direct
        found = self.dirs.get(name)
        return _shallowest(found) if found else None


def read_json(path: Path) -> Any:
    """A JSON annotation file; the error names the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def read_lines(path: Path) -> list[str]:
    """Non-blank lines of a text annotation file (a UTF-8 byte-order mark is ignored)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _shallowest(paths: list[Path]) -> Path:
    return min(paths, key=lambda p: (len(p.parts), str(p)))


@dataclass(frozen=True)
class LabelledSplit:
    """A split whose labels come from a separate class file: the tree, both files and the class lookup."""

    tree: SourceTree
    labels_file: Path
    classes: list[str]
    lookup: dict[str, int]
    split_file: Path


def open_labelled_split(request: ReadRequest, labels_name: str, labels_what: str, split_names: list[str],
                        split_what: str, read_classes: Callable[[Path], list[str]]) -> LabelledSplit:
    """Find the class file and the split's list under ``--src`` (or ``--annotations``) and read the classes."""
    tree = SourceTree(request.src)
    labels_file = tree.label_file([labels_name], None, labels_what)
    classes = read_classes(labels_file)
    split_file = tree.label_file(split_names, request.annotations, split_what)
    return LabelledSplit(tree, labels_file, classes, label_lookup(classes, str(labels_file)), split_file)
