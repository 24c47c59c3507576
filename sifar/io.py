"""Small file helpers shared by shard writing, manifests and checkpoints: atomic writes, URL opening."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

import fsspec


def is_url(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` strings (s3, gs, http, ...), False for local paths and ``file://``."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place only once complete.

    A crash, a full disk or an exception leaves the previous file (if any) untouched and no partial file
    under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; finished files get the usual permissions
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def open_url(path: str | os.PathLike, mode: str = "rb") -> IO:
    """Open a local path or any fsspec URL (s3://, gs://, http(s)://) for reading."""
    return fsspec.open(str(path), mode).open()
