"""Small file helpers shared by shard writing, manifests and checkpoints: atomic writes, URL opening,
and clear errors for object stores (S3 endpoint and credentials come from the standard AWS environment:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``).

Every remote file system is made here, with deadlines (:class:`NetworkDeadlines`): the storage
libraries' own defaults wait 5 minutes (aiohttp, so fsspec's HTTP and gcsfs) or retry 5 x 5 times
(s3fs around botocore), so one silent server hung a run for more than 7 minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Iterator

import fsspec

SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
CREDENTIALS_HINT = ("credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
                    "the endpoint from AWS_ENDPOINT_URL")
_PATTERN = re.compile(r"[{*?\[]")
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}  # protocol -> the extra installing its package
DEADLINE_VARIABLES = {"connect_timeout": "SIFAR_CONNECT_TIMEOUT", "read_timeout": "SIFAR_READ_TIMEOUT",
                      "probe_timeout": "SIFAR_PROBE_TIMEOUT"}


@dataclass(frozen=True)
class NetworkDeadlines:
    """How long a remote request may wait, for S3, GCS and HTTP(S) alike.

    ``connect_timeout``: seconds to open a connection; ``read_timeout``: seconds without a byte from the
    server, between the bytes of a body too (so a stalled download fails instead of hanging). A request
    is retried by one loop only: s3fs's (5 tries; botocore's own retries are switched off, else the two
    multiply to 25), gcsfs's (6 tries, up to 31 s of back-off between them), none for fsspec's HTTP (the
    loader re-opens a shard whose body stalled, from the sample where it stalled).
    ``probe_timeout``: the first contact with a bucket (does it exist, are the credentials accepted) must
    end within it whatever the library's retry schedule, so a wrong or silent endpoint fails in a minute.
    Set with ``SIFAR_CONNECT_TIMEOUT``, ``SIFAR_READ_TIMEOUT`` and ``SIFAR_PROBE_TIMEOUT``; what fsspec's
    own configuration sets (``FSSPEC_S3='{"config_kwargs": ...}'``, ``~/.config/fsspec``) wins over these.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 10.0
    probe_timeout: float = 60.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"{DEADLINE_VARIABLES[name]} must be > 0 seconds, got {value}")

    @classmethod
    def from_environment(cls) -> NetworkDeadlines:
        """The defaults, with what the ``SIFAR_*`` variables set; a malformed value names its variable."""
        values = {}
        for name, variable in DEADLINE_VARIABLES.items():
            text = os.environ.get(variable)
            if text is not None:
                try:
                    values[name] = float(text)
                except ValueError:
                    raise ValueError(f"{variable}={text!r} is not a number of seconds") from None
        return cls(**values)

    def options_for(self, protocol: str) -> dict[str, Any]:
        """fsspec storage options of ``protocol`` that set these deadlines (none for local files)."""
        if protocol in ("s3", "s3a"):
            return {"config_kwargs": {"connect_timeout": self.connect_timeout, "read_timeout": self.read_timeout,
                                      "retries": {"total_max_attempts": 1}}}
        if protocol in ("http", "https"):
            return {"client_kwargs": {"timeout": self._aiohttp_timeout()}}
        if protocol in ("gs", "gcs"):
            return {"requests_timeout": self._aiohttp_timeout()}
        return {}

    def _aiohttp_timeout(self) -> Any:
        import aiohttp  # fsspec's HTTP and gcsfs are built on it; imported only when they are used

        # no total: a long shard streams for as long as bytes keep coming (aiohttp's default cuts at 300 s)
        return aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout)


def storage_options(url: str) -> dict[str, Any]:
    """The storage options every remote file system of ``url`` is made with: the deadlines, under what
    fsspec's configuration sets for the protocol."""
    protocol = url.split("://", 1)[0] if is_url(url) else "file"
    ours = NetworkDeadlines.from_environment().options_for(protocol)
    return _merged(ours, fsspec.config.conf.get(protocol, {}))


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        both_dicts = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both_dicts else value
    return merged


def is_url(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` strings (s3, gs, http, ...), False for local paths and ``file://``."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def check_local_folder(path: str | os.PathLike | None, name: str = "output") -> None:
    """ValueError ``"<name>: ..."`` for an object-store URL where a local folder is needed (written file by
    file, locked, resumed in place): said, instead of a folder named ``s3:`` made in the working directory."""
    if path is not None and is_url(path):
        raise ValueError(f"{name}: {path} is object storage; this is written to a local folder (copy it there "
                         f"afterwards, e.g. aws s3 sync <folder> {path})")


def ffmpeg_input(url: str) -> tuple[str, dict[str, Any]]:
    """What ffmpeg is given to read a remote video (``url``: s3://, gs://, http(s)://) and its input options:
    an object-store URL becomes a presigned HTTPS URL (valid an hour), which ffmpeg streams with range
    requests, so a container that needs seeking needs no local copy; reads wait at most the read deadline."""
    deadline = {"rw_timeout": int(NetworkDeadlines.from_environment().read_timeout * 1e6)}  # microseconds
    if is_http(url):
        return url, deadline
    fs, path = url_filesystem(url)
    try:
        return fs.sign(path, expiration=3600), deadline
    except NotImplementedError as err:
        raise ValueError(f"{url}: this store cannot hand out a URL ffmpeg can read ({err})") from err


def is_http(path: str | os.PathLike) -> bool:
    """True for ``http://`` and ``https://`` URLs (read-only, no listing of buckets)."""
    return str(path).startswith(("http://", "https://"))


def write_json(path: str | os.PathLike, value: Any, indent: int = 2) -> None:
    """``value`` as JSON (and a final newline) at ``path``, atomically (:func:`atomic_write`)."""
    with atomic_write(path, "w") as handle:
        json.dump(value, handle, indent=indent)
        handle.write("\n")


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


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a local file's or a URL's bytes, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with (open_url(path) if is_url(path) else open(path, "rb")) as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def open_url(path: str | os.PathLike, mode: str = "rb") -> IO:
    """Open a local path or any fsspec URL (s3://, gs://, http(s)://) for reading (with deadlines)."""
    return fsspec.open(str(path), mode, **storage_options(str(path))).open()


def without_secrets(text: str) -> str:
    """``text`` with the secret credential values of the environment masked: a safeguard for messages
    built from storage libraries' errors, which are not known to contain them."""
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value:
            text = text.replace(value, "***")
    return text


def describe_error(err: BaseException) -> str:
    """What went wrong, for a message: the error's text (its type when it has none), a timeout said as one."""
    if isinstance(err, (TimeoutError, asyncio.TimeoutError)):
        deadlines = asdict(NetworkDeadlines.from_environment())
        limits = ", ".join(f"{name.removesuffix('_timeout')} {deadlines[name]:g} s ({variable})"
                           for name, variable in DEADLINE_VARIABLES.items())
        return f"timed out; deadlines: {limits}"
    return without_secrets(str(err) or type(err).__name__)


def storage_error(url: str, err: BaseException, context: str = "") -> OSError:
    """An error naming ``url`` (and nothing secret) for a failed storage call, of the kind the cause was.

    PermissionError: refused credentials; FileNotFoundError: missing (e.g. no such bucket); any other
    error of a file system or network library: ConnectionError.
    """
    lead = f"{context}: " if context else ""
    reason = describe_error(err)
    if isinstance(err, PermissionError):
        return PermissionError(f"{lead}access to {url} denied ({reason}); {CREDENTIALS_HINT}")
    if isinstance(err, FileNotFoundError):
        return FileNotFoundError(f"{lead}{url} not found ({reason})")
    return ConnectionError(f"{lead}cannot reach {url} ({reason})")


def url_filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system of ``url`` (with deadlines) and the path within it; ValueError when its
    package is missing."""
    try:
        return fsspec.core.url_to_fs(url, **storage_options(url))
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
    # fsspec's blocking wrappers of asynchronous file systems take a deadline for the whole call
    bounded = {"timeout": NetworkDeadlines.from_environment().probe_timeout} if fs.async_impl else {}
    try:
        fs.info(bucket, **bounded)
        return
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{lead}{url}: bucket {bucket!r} does not exist") from err
    except PermissionError:
        pass  # credentials may be good for a prefix and not for the bucket itself: ask about the prefix
    except Exception as err:  # file systems and network libraries raise their own types
        raise storage_error(url, err, context) from err
    try:
        fs.ls(path, **bounded)
    except FileNotFoundError:
        pass
    except Exception as err:  # file systems and network libraries raise their own types
        raise storage_error(url, err, context) from err
