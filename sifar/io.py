"""Small file helpers shared by shard writing, manifests and checkpoints: atomic writes, URL opening,
and clear errors for object stores (S3 endpoint and credentials come from the standard AWS environment:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``)."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import fsspec

SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
CREDENTIALS_HINT = ("credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
                    "the endpoint from AWS_ENDPOINT_URL")
_PATTERN = re.compile(r"[{*?\[]")
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}  # protocol -> the extra installing its package


def is_url(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` strings (s3, gs, http, ...), False for local paths and ``file://``."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def is_http(path: str | os.PathLike) -> bool:
    """True for ``http://`` and ``https://`` URLs (read-only, no listing of buckets)."""
    return str(path).startswith(("http://", "https://"))


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


def without_secrets(text: str) -> str:
    """``text`` with the secret credential values of the environment masked: a safeguard for messages
    built from storage libraries' errors, which are not known to contain them."""
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value:
            text = text.replace(value, "***")
    return text


def storage_error(url: str, err: BaseException, context: str = "") -> OSError:
    """An error naming ``url`` (and nothing secret) for a failed storage call, of the kind the cause was.

    PermissionError: refused credentials; FileNotFoundError: missing (e.g. no such bucket); any other
    error of a file system or network library: ConnectionError.
    """
    lead = f"{context}: " if context else ""
    reason = without_secrets(str(err) or type(err).__name__)
    if isinstance(err, PermissionError):
        return PermissionError(f"{lead}access to {url} denied ({reason}); {CREDENTIALS_HINT}")
    if isinstance(err, FileNotFoundError):
        return FileNotFoundError(f"{lead}{url} not found ({reason})")
    return ConnectionError(f"{lead}cannot reach {url} ({reason})")


def url_filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path within it; ValueError when its package is missing."""
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as err:  # e.g. gs:// without gcsfs
        extra = _EXTRAS.get(url.split("://", 1)[0])
        hint = f" (pip install 'sifar[{extra}]')" if extra else ""
        raise ValueError(f"{url}: {err}{hint}") from err


def check_store_access(url: str, context: str = "") -> None:
    """For object-store URLs (s3://, gs://, ...): fail at once, naming ``url``, when its bucket does not
    exist or the store refuses the credentials. A prefix that holds nothing yet is fine; local paths and
    HTTP(S) URLs are not probed.
    """
    if not is_url(url) or is_http(url):
        return
    fs, path = url_filesystem(_PATTERN.split(url, maxsplit=1)[0])
    bucket = path.split("/", 1)[0]
    lead = f"{context}: " if context else ""
    try:
        fs.info(bucket)
        return
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{lead}{url}: bucket {bucket!r} does not exist") from err
    except PermissionError:
        pass  # credentials may be good for a prefix and not for the bucket itself: ask about the prefix
    except Exception as err:  # file systems and network libraries raise their own types
        raise storage_error(url, err, context) from err
    try:
        fs.ls(path)
    except FileNotFoundError:
        pass
    except Exception as err:  # file systems and network libraries raise their own types
        raise storage_error(url, err, context) from err
