"""Finding a dataset's files under ``--src``: label files by their shipped names, videos in any subfolder.

Datasets ship videos in nested folders (``20bn-something-something-v2/``, ``train/<label>/``,
``training/<class>/``, ``rgb/``), so the tree under ``--src`` is walked once and files are looked up by name.

``--src`` may be an object-store prefix (``s3://bucket/k400/``, ``gs://...``): the tree is then listed
through fsspec, the annotation files are fetched into a temporary folder (they are small; the readers parse
them as local files), and videos are named by their URLs, which ffmpeg streams (:func:`sifar.io.ffmpeg_input`).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from sifar.data.formats.records import ReadRequest, label_lookup
from sifar.io import is_url, storage_error, url_filesystem

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ogv", ".ts")


class MissingLabelFile(FileNotFoundError):
    """A dataset's annotation or label file is not where it ships."""


class SourceTree:
    """An index of the files and folders under a dataset root (a folder or an object-store prefix), built
    on first use. Found files are Paths under a folder, and URLs under a prefix."""

    def __init__(self, root: Path | str):
        self.remote = is_url(root)
        self.root: Any = str(root).rstrip("/") if self.remote else Path(root)
        self._files: dict[str, list[Any]] | None = None
        self._dirs: dict[str, list[Any]] | None = None
        self._downloads: Path | None = None

    def _walk(self) -> None:
        files: dict[str, list[Any]] = defaultdict(list)
        dirs: dict[str, list[Any]] = defaultdict(list)
        for folder, dirnames, filenames in self._listing():
            dirnames.sort()
            for name in dirnames:
                dirs[name].append(folder / name)
            for name in sorted(filenames):
                files[name].append(folder / name)
        self._files, self._dirs = files, dirs

    def _listing(self):
        """(folder, folder names, file names) of every folder below the root, folders as Paths, or as
        PurePosixPaths relative to the prefix."""
        if not self.remote:
            walked = os.walk(self.root, followlinks=True)
            return ((Path(folder), dirnames, filenames) for folder, dirnames, filenames in walked)
        fs, base = url_filesystem(self.root)
        try:
            return [(PurePosixPath(folder[len(base):].strip("/")), dirnames, filenames)
                    for folder, dirnames, filenames in fs.walk(base)]
        except Exception as err:  # file systems and network libraries raise their own types
            raise storage_error(self.root, err, "dataset source: cannot list") from err

    def _found(self, path: Any) -> Path | str:
        """A listed file as the readers take it: the Path, or the URL of a path relative to the prefix."""
        return f"{self.root}/{path.as_posix()}" if self.remote else path

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

    def relative(self, path: Path | str) -> str:
        """``path`` relative to the root, with '/' separators (as stored in shards and error lists)."""
        if self.remote:
            return str(path)[len(self.root) + 1:]
        return Path(os.path.relpath(path, self.root)).as_posix()

    def resolve(self, relative: str) -> Path | str | None:
        """The file at ``relative`` below the root, or None when there is none."""
        if not self.remote:
            path = self.root / relative
            return path if path.exists() else None
        url = f"{self.root}/{PurePosixPath(relative).as_posix()}"
        name = PurePosixPath(relative).name
        return url if any(self._found(path) == url for path in self.files.get(name, [])) else None

    def source_of(self, path: Path | None, expected: str) -> str:
        """The ``source`` of a record: the found file relative to the root, else what the annotation named."""
        return self.relative(path) if path is not None else expected

    def label_file(self, names: list[str], given: Path | None, what: str) -> Path:
        """The annotation file: ``given`` if set, else the first of ``names`` found (shallowest first)."""
        if given is not None:
            if not Path(given).is_file():
                raise MissingLabelFile(f"{what}: the file given with --annotations does not exist: {given}")
            return Path(given)
        if not self.remote:
            for name in names:
                if (self.root / name).is_file():
                    return self.root / name
        for name in names:
            if self.files.get(name):
                return self._local_copy(_shallowest(self.files[name]))
        expected = " or ".join(names)
        raise MissingLabelFile(f"{what}: expected {expected} in {self.root} (or any folder below it); "
                               "pass --annotations FILE to use another file")

    def _local_copy(self, path: Any) -> Path:
        """A label file to read: itself under a folder; under a prefix, fetched into a temporary folder
        removed when the program ends."""
        if not self.remote:
            return path
        if self._downloads is None:
            self._downloads = Path(tempfile.mkdtemp(prefix="sifar-annotations-"))
            atexit.register(shutil.rmtree, self._downloads, ignore_errors=True)
        local = self._downloads / self.relative(self._found(path))
        local.parent.mkdir(parents=True, exist_ok=True)
        fs, base = url_filesystem(self.root)
        try:
            fs.get_file(f"{base.rstrip('/')}/{path.as_posix()}", str(local))
        except Exception as err:  # file systems and network libraries raise their own types
            raise storage_error(self._found(path), err, "dataset source: cannot read") from err
        return local

    def video(self, name: str) -> Path | str | None:
        """The file called ``name`` anywhere under the root (the shallowest if there are several)."""
        found = self.files.get(name)
        return self._found(_shallowest(found)) if found else None

    def video_by_stem(self, stem: str) -> Path | str | None:
        """A video file ``<stem>.<any video extension>`` anywhere under the root."""
        for extension in VIDEO_EXTENSIONS:
            found = self.files.get(stem + extension)
            if found:
                return self._found(_shallowest(found))
        return None

    def video_by_suffix(self, relative: str, folders: list[str]) -> Path | str | None:
        """A file whose path ends with ``relative`` (e.g. ``class/file.mp4``): ``<root>/<folder>/relative``
        for each of ``folders`` first, then anywhere under the root."""
        for folder in folders:
            candidate = self.resolve(f"{folder}/{relative}")
            if candidate is not None:
                return candidate
        parts = PurePosixPath(relative).parts
        matches = [p for p in self.files.get(parts[-1], []) if p.parts[-len(parts):] == parts]
        return self._found(_shallowest(matches)) if matches else None

    def folder(self, name: str) -> Path | None:
        """A folder called ``name`` anywhere under the root (frame folders of datasets shipped as frames)."""
        if self.remote:
            raise ValueError(f"{self.root}: datasets shipped as frame folders are read from a local --src only "
                             f"(copy it to a disk first)")
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


def _shallowest(paths: list[Any]) -> Any:
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
