"""JPEG byte streams: split ffmpeg's concatenated MJPEG output into single JPEGs, read a JPEG's size.

Only the marker structure is parsed (no pixel decoding), so splitting costs a few regex searches per frame.
"""

from __future__ import annotations

import re

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
_SOS = 0xDA
_EOI_CODE = 0xD9
# Markers without a length field: TEM and the restart markers RST0..RST7.
_STANDALONE = {0x01, *range(0xD0, 0xD8)}
# Start-of-frame markers (baseline, extended, progressive, lossless, ...); DHT (C4), JPG (C8), DAC (CC) are not.
_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}
# Inside entropy-coded data an 0xFF byte is followed by 0x00 (stuffing) or a restart marker; anything
# else is the next real marker.
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class JpegError(ValueError):
    """Bytes that are not a complete JPEG."""


def jpeg_end(data: bytes, start: int = 0) -> int:
    """Offset just past the EOI marker of the JPEG that begins at ``start``."""
    if data[start:start + 2] != SOI:
        raise JpegError(f"no JPEG start marker at byte {start}")
    pos = start + 2
    while True:
        pos = _skip_fill_bytes(data, pos)
        marker = data[pos + 1]
        if marker == _EOI_CODE:
            return pos + 2
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > len(data):
            raise JpegError(f"JPEG at byte {start} ends inside a marker segment")
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == _SOS:
            match = _MARKER_AFTER_SCAN.search(data, pos)
            if match is None:
                raise JpegError(f"JPEG at byte {start} has no end marker")
            pos = match.start()


def _skip_fill_bytes(data: bytes, pos: int) -> int:
    """Position of the marker at ``pos`` (markers may be preceded by extra 0xFF fill bytes)."""
    if pos + 1 >= len(data) or data[pos] != 0xFF:
        raise JpegError(f"expected a JPEG marker at byte {pos}")
    while pos + 2 < len(data) and data[pos + 1] == 0xFF:
        pos += 1
    return pos


def split_jpeg_stream(data: bytes) -> list[bytes]:
    """Cut a concatenation of JPEGs (ffmpeg ``-f image2pipe -c:v mjpeg``) into one bytes object per image."""
    frames = []
    pos = 0
    while pos < len(data):
        end = jpeg_end(data, pos)
        frames.append(data[pos:end])
        pos = end
    return frames


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG's start-of-frame segment."""
    if data[:2] != SOI:
        raise JpegError("not a JPEG (no start marker)")
    pos = 2
    while pos + 4 <= len(data):
        pos = _skip_fill_bytes(data, pos)
        marker = data[pos + 1]
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in _SOF and pos + 9 <= len(data):
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            return width, height
        if marker in (_SOS, _EOI_CODE):
            break
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    raise JpegError("JPEG has no frame header before its image data")


def is_complete_jpeg(data: bytes) -> bool:
    """True when ``data`` is exactly one JPEG, start marker to end marker."""
    try:
        return jpeg_end(data) == len(data)
    except (JpegError, IndexError):
        return False
