"""Checkpoint files on disk: torch's zip archive, sealed with a checksum and read back verified.

``torch.load`` checks no checksum: a flipped bit in a tensor loads silently (torch writes a CRC-32 per
record and reads none of them), and a truncated or foreign file fails with an error naming no file.
So :func:`sealed_bytes` stores the SHA-256 of the whole archive in its zip comment (a field the zip format
keeps for such notes; torch and any zip tool ignore it): every byte before the digest itself, the records,
the central directory that locates them and the end record. :func:`load_verified` checks it before unpickling
anything, with an error that names the file and says what to do. Files without a seal (from other tools, or
torch's older pickle format) load as before, unverified; torch writes no zip comment, so a comment of a seal's
length without its prefix is a damaged seal, not the comment of an unsealed file.

Checkpoints written before session 23 carry the SHA-256 of the records alone (``RECORDS_SEAL_PREFIX``) and are
still verified so. That seal left the central directory out, and one flipped bit there (a record's compression
method, 0 -> 8) made ``torch.load`` return other numbers for a tensor without a word.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from typing import IO, Any

import torch

SEAL_PREFIX = b"sifar-sha256-archive:"  # the SHA-256 of every byte of the file before the digest
RECORDS_SEAL_PREFIX = b"sifar-sha256:"  # before session 23: the SHA-256 of the records only
ZIP_MAGIC = b"PK\x03\x04"
_END_RECORD_MAGIC = b"PK\x05\x06"  # the zip's end-of-central-directory record: 22 bytes, then the comment
_END_RECORD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_DIGEST_SIZE = 64  # hex characters of a SHA-256
_SEAL_SIZES = {len(SEAL_PREFIX) + _DIGEST_SIZE, len(RECORDS_SEAL_PREFIX) + _DIGEST_SIZE}  # torch writes no comment
_CHUNK = 8 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model; the message names the file and keys."""


def sealed_bytes(obj: Any) -> io.BytesIO:
    """``obj`` serialised by ``torch.save``, the SHA-256 of the archive in its zip comment, the file's last
    bytes: a placeholder comment of the digest's length is written first (zipfile rewrites the directory and
    end record behind the records), then the digest of everything before it takes its place."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.comment = SEAL_PREFIX + b"0" * _DIGEST_SIZE
    with buffer.getbuffer() as view:
        view[-_DIGEST_SIZE:] = hashlib.sha256(view[:-_DIGEST_SIZE]).hexdigest().encode()
    return buffer


def load_verified(path: str | os.PathLike) -> Any:
    """``torch.load`` (weights only, onto the CPU) of ``path`` after checking its seal when it has one.

    CheckpointError naming ``path``: a truncated archive, a seal that does not match the contents, a file
    torch cannot read. FileNotFoundError when there is no file.
    """
    with open(path, "rb") as handle:
        _verify(handle, str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, KeyError, ... for unreadable files
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err


def _comment_end(handle: IO[bytes], size: int) -> int | None:
    """Where the zip comment announced by the end record of the file (``size`` bytes) ends, None without an end
    record. Past ``size`` when the file is cut inside the comment: zipfile then reads the comment as far as the
    file goes, without a word."""
    tail_size = min(size, _END_RECORD_SIZE + _MAX_COMMENT)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    end_record = tail.rfind(_END_RECORD_MAGIC)  # the last one, as zipfile finds it
    if end_record < 0:
        return None
    announced = int.from_bytes(tail[end_record + 20:end_record + 22], "little")
    return size - tail_size + end_record + _END_RECORD_SIZE + announced


def _sha256(handle: IO[bytes], length: int) -> str:
    """The SHA-256 of the file's first ``length`` bytes, read in chunks."""
    digest = hashlib.sha256()
    handle.seek(0)
    while length > 0:
        chunk = handle.read(min(_CHUNK, length))
        if not chunk:
            break
        digest.update(chunk)
        length -= len(chunk)
    return digest.hexdigest()


def _verify(handle: IO[bytes], name: str) -> None:
    is_zip, size = handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC, os.fstat(handle.fileno()).st_size
    comment_end = _comment_end(handle, size)
    if is_zip and (comment_end is None or comment_end > size):
        raise CheckpointError(f"{name} is truncated: its {size} bytes end before the end of the archive (an "
                              f"interrupted copy or download?); copy it again, or use another checkpoint")
    handle.seek(0)
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, UnicodeDecodeError, NotImplementedError) as err:  # zipfile's, for a bad directory
        if not is_zip:
            return  # not a zip archive: torch's legacy format, or not a checkpoint (torch.load will tell)
        raise CheckpointError(f"{name} is corrupt: its zip directory cannot be read ({type(err).__name__}: {err}); "
                              f"use another copy or checkpoint") from err
    comment = archive.comment
    if comment.startswith(SEAL_PREFIX):
        expected, covered = comment.removeprefix(SEAL_PREFIX), comment_end - _DIGEST_SIZE
    elif comment.startswith(RECORDS_SEAL_PREFIX):
        expected, covered = comment.removeprefix(RECORDS_SEAL_PREFIX), archive.start_dir
    elif len(comment) in _SEAL_SIZES:  # a seal whose prefix was damaged: unsealed, the rest would load unverified
        raise CheckpointError(f"{name} is corrupt: its seal (the zip comment) is damaged; use another copy or "
                              f"checkpoint")
    else:
        return
    if _sha256(handle, covered) != expected.decode("ascii", "replace"):
        raise CheckpointError(f"{name} is corrupt: its contents do not match the SHA-256 stored when it was "
                              f"written (damaged on disk or in a copy); use another copy or checkpoint")
