"""Dataset formats as they ship: a registry of readers, name -> (split request -> records and class names).

Each dataset lives in its own module and registers its reader with :func:`register_format`, the way timm
registers models; :func:`get_format` is the one door in.
"""

from __future__ import annotations

from sifar.data.formats.records import DatasetIndex, ReadRequest, VideoRecord
from sifar.data.formats.registry import DatasetFormat, get_format, list_formats, read_split, register_format

# Importing the modules registers them (order = order listed in --help).
from sifar.data.formats import ssv2, kinetics, mit, jester, diving48, csv_list  # noqa: F401,I001

__all__ = ["DatasetFormat", "DatasetIndex", "ReadRequest", "VideoRecord", "get_format", "list_formats",
           "read_split", "register_format"]
