"""The registry of dataset formats: each format module registers its reader here with
:func:`register_format`; :func:`get_format` is the one door in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sifar.data.formats.records import DatasetIndex, ReadRequest

Reader = Callable[[ReadRequest], DatasetIndex]


@dataclass(frozen=True)
class DatasetFormat:
    """A registered dataset format."""

    name: str
    read: Reader
    default_short_side: int = 256
    """``--short-side`` when the user gives none (0 for datasets shipped as frames: copy, don't re-encode)."""
    splits: tuple[str, ...] = ("train", "val", "test")


_FORMATS: dict[str, DatasetFormat] = {}


def register_format(name: str, default_short_side: int = 256,
                    splits: tuple[str, ...] = ("train", "val", "test")) -> Callable[[Reader], Reader]:
    """Decorator registering a reader under ``name``."""

    def register(read: Reader) -> Reader:
        if name in _FORMATS:
            raise ValueError(f"dataset format {name!r} is registered twice")
        _FORMATS[name] = DatasetFormat(name, read, default_short_side, splits)
        return read

    return register


def get_format(name: str) -> DatasetFormat:
    """The registered format called ``name``; the error lists the known ones."""
    try:
        return _FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown dataset format {name!r}; known: {', '.join(list_formats())}") from None


def list_formats() -> list[str]:
    """Names of all registered formats."""
    return list(_FORMATS)


def read_split(name: str, request: ReadRequest) -> DatasetIndex:
    """Read one split of dataset ``name``; checks the split is one the dataset has."""
    dataset_format = get_format(name)
    if request.split not in dataset_format.splits:
        raise ValueError(f"{name} has no {request.split!r} split (it has {', '.join(dataset_format.splits)})")
    return dataset_format.read(request)
