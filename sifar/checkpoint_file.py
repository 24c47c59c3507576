"""Checkpoint files on disk: torch's zip archive, sealed with a checksum and read back verified.

``torch.load`` checks no checksum: a flipped bit in a tensor loads silently (torch writes a CRC-32 per
record and reads none of them), and a truncated or foreign file fails with an error naming no file.
So :func:`save_sealed` stores the SHA-256 of the archive's records in its zip comment (a field the zip
format keeps for such notes; torch and any zip tool ignore it), and :func:`load_verified` checks it before
unpickling anything, with an error that names the file and says what to do. Files without the seal (from
other tools, or torch's older pickle format) load as before, unverified.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from typing import IO, Any

import torch

SEAL_PREFIX = b"sifar-sha256:"
ZIP_MAGIC = b"PK\x03\x04"
_END_RECORD_MAGIC = b"PK\x05\x06"  # the zip's end-of-central-directory record: 22 bytes, then the comment
_END_RECORD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_CHUNK = 8 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model; the message names the file and keys."""


def sealed_bytes(obj: Any) -> io.BytesIO:
    """``obj`` serialised by ``torch.save``, with the SHA-256 of its records in the zip comment."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as archive:
        records_end = archive.start_dir
    digest = hashlib.sha256(buffer.getbuffer()[:records_end]).hexdigest()
    with zipfile.ZipFile(buffer, "a") as archive:  # rewrites only the directory at the end, records stay
        archive.comment = SEAL_PREFIX + digest.encode()
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


def _truncated(handle: IO[bytes], name: str) -> CheckpointError:
    size = os.fstat(handle.fileno()).st_size
    return CheckpointError(f"{name} is truncated: its {size} bytes end before the end of the archive (an "
                           f"interrupted copy or download?); copy it again, or use another checkpoint")


def _comment_cut_short(handle: IO[bytes]) -> bool:
    """Whether the file ends inside the zip comment its end record announces. zipfile reads such a comment
    as far as the file goes, without a word: a copy cut inside the seal would then load as an unsealed file."""
    size = os.fstat(handle.fileno()).st_size
    tail_size = min(size, _END_RECORD_SIZE + _MAX_COMMENT)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    end_record = tail.rfind(_END_RECORD_MAGIC)  # the last one, as zipfile finds it
    announced = int.from_bytes(tail[end_record + 20:end_record + 22], "little")
    return tail_size - end_record - _END_RECORD_SIZE < announced


def _verify(handle: IO[bytes], name: str) -> None:
    head = handle.read(len(ZIP_MAGIC))
    handle.seek(0)
    try:
        archive = zipfile.ZipFile(handle)
    except zipfile.BadZipFile:
        if head == ZIP_MAGIC:
            raise _truncated(handle, name) from None
        return  # not a zip archive: torch's legacy format, or not a checkpoint (torch.load will tell)
    if _comment_cut_short(handle):
        raise _truncated(handle, name)
    if not archive.comment.startswith(SEAL_PREFIX):
        return
    expected = archive.comment.removeprefix(SEAL_PREFIX).decode("ascii", "replace")
    digest = hashlib.sha256()
    handle.seek(0)
    remaining = archive.start_dir
    while remaining > 0:
        chunk = handle.read(min(_CHUNK, remaining))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    if digest.hexdigest() != expected:
        raise CheckpointError(f"{name} is corrupt: its contents do not match the SHA-256 stored when it was "
                              f"written (damaged on disk or in a copy); use another copy or checkpoint")
