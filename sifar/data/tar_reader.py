"""Read only the tar members a clip needs from a shard, local or streamed.

A shard sample is ``<key>.json`` followed by one JPEG per frame (``<key>.000000.jpg``, ...), of which a
clip decodes about eight. ``tarfile`` (and webdataset's tar stage built on it) makes a TarInfo and reads
the data of every member, which caps plain iteration over 90-frame samples at ~150 samples/s per core.
Here the 512-byte headers are parsed directly, the JSON is read first, the frames to keep are chosen
from it, and the data of every other member is skipped: seeked over in local files, read and dropped
on streams.

Shards written by :mod:`sifar.data.shard_writer` carry a ``frame_index`` in each sample's JSON (the
member offset and size of every frame). In a local file the reader then seeks to the sampled frames'
members (each header read with its data in one read and checked against the expected name and size)
and to the header of the sample's last frame, past which the walk goes on: no other member of the sample
is touched. Samples without an index (older shards, other writers) and streams are walked member by
member; an index that does not match the tar is warned about once per shard, and that shard is walked
from there on.

Format: POSIX ustar and GNU tar (every header carries the ``ustar`` magic; old v7 archives are refused),
GNU long names (``L``; long link names ``K`` are skipped), pax headers (``x`` ``path`` and ``size``;
global ``g`` headers are skipped), base-256 sizes. Header checksums are verified for every member whose
data is read on a walk (summing 512 bytes would double the cost of walking past the others; a damaged
header among those shows up as a missing magic one member later). A member reached through the index is
checked against the index instead (type, magic, name and size all as expected), which a misplaced or
damaged header fails just as well. Damage raises :class:`TarFormatError` naming the shard and the byte
offset.
"""

from __future__ import annotations

import json
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterator, NamedTuple, Sequence

from sifar.data.shard_format import (SampleInfo, frame_index_of, frame_member_suffix, index_entry,
                                    split_member_name)

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR_TYPES = (b"0", b"\0", b"7")
_FIELD_ENDS = (0, 0x20)  # NUL or space after an octal number
_SKIP_CHUNK = 1 << 20
_HEADER = struct.Struct("100s24x12s20xc100x6s")  # name, size, typeflag, magic + version's first byte


class TarFormatError(ValueError):
    """The bytes are not a readable tar archive (bad header, truncated member)."""


class TruncatedShardError(TarFormatError):
    """The archive ends early: inside a member, or without tar's end-of-archive blocks."""


class TarMember(NamedTuple):
    """A regular file in the archive: its name, data size and the stream offset of its data."""

    name: str
    size: int
    offset: int


class TarMemberReader:
    """Iterate the regular-file members of a tar stream and read only the ones asked for.

    The data of a member not passed to :meth:`read` before the next member is requested is skipped.
    ``seekable`` (default: ask the file) chooses between seeking and reading-and-dropping.
    """

    def __init__(self, fileobj: BinaryIO, name: str = "<tar stream>", seekable: bool | None = None):
        self._file = fileobj
        self._name = name
        self._seekable = fileobj.seekable() if seekable is None else seekable
        self._position = 0
        self._unread = 0
        self._current: TarMember | None = None
        self._current_header = b""

    def __iter__(self) -> Iterator[TarMember]:
        while (member := self.next_member()) is not None:
            yield member

    def next_member(self) -> TarMember | None:
        """The next regular file, or None at the end of the archive."""
        if self._unread:
            self._skip(self._unread)
            self._unread = 0
        self._current = None
        long_name: str | None = None
        pax: dict[str, str] = {}
        while True:
            offset = self._position
            header = self._file.read(BLOCK)
            if len(header) != BLOCK:
                header = self._rest_of_header(header)
            self._position = offset + BLOCK
            raw_name, raw_size, typeflag, magic = _HEADER.unpack_from(header)
            if magic[:5] != b"ustar":
                if header == _ZERO_BLOCK:
                    return None
                raise TarFormatError(f"{self._name}: no tar header at byte {offset} "
                                     "(not a POSIX/GNU tar, or damaged)")
            size = _parse_size(raw_size, offset, self._name)
            if typeflag in _REGULAR_TYPES:
                name = long_name or _header_name(raw_name, magic, header)
                if pax:
                    name, size = pax.get("path", name), _pax_size(pax, size, offset, self._name)
                self._current = member = TarMember(name, size, self._position)
                self._current_header = header
                self._unread = _padded(size)
                return member
            if typeflag in (b"L", b"x"):
                _check_checksum(header, offset, self._name)
                data = self._read_exact(size)
                self._skip(_padded(size) - size)
                if typeflag == b"L":
                    long_name = _c_string(data)
                else:
                    pax = _parse_pax(data, offset, self._name)
            else:  # directories, links, long link names ('K'), global pax headers ('g')
                self._skip(_padded(size))
                if typeflag not in (b"K", b"g"):
                    long_name, pax = None, {}

    @property
    def seekable(self) -> bool:
        return self._seekable

    @property
    def position(self) -> int:
        """Stream offset of the next header (no member pending) or inside the current member."""
        return self._position

    def seek(self, position: int) -> None:
        """Continue at ``position``, which must be a header's offset (seekable files only)."""
        self._file.seek(position - self._position, 1)
        self._position, self._unread, self._current = position, 0, None

    def read_member_at(self, position: int, name: str, size: int, keep_data: bool = True) -> bytes:
        """The data of the member whose headers start at ``position`` (seekable files only), checked to be
        a regular file ``name`` of ``size`` bytes (TarFormatError if not); the walk goes on after it.

        A plain member takes one read for its header and data; one behind a long-name or pax header is
        parsed as :meth:`next_member` does. ``keep_data=False``: only the headers are read and checked (b""
        returned), e.g. to go on walking after a member without using it.
        """
        self.seek(position)
        block = self._read_exact(BLOCK + (size if keep_data else 0)) if size else b""
        if block and _is_plain_member(block, name, size, position, self._name):
            data = block[BLOCK:]
            self._unread = _padded(size) - len(data)  # next_member skips the rest
            return data
        # behind a long-name or pax header, empty, or not the member expected: parsed the general way
        self.seek(position)
        member = self.next_member()
        if member is None or (member.name, member.size) != (name, size):
            raise TarFormatError(f"{self._name}: the member at byte {position} is not {name} ({size} bytes)")
        return self.read(member) if keep_data else b""

    @property
    def name(self) -> str:
        return self._name

    def read(self, member: TarMember) -> bytes:
        """The data of ``member``, which must be the member last returned and not read yet."""
        if member is not self._current:
            raise ValueError(f"{member.name} is not the current unread member of {self._name}")
        _check_checksum(self._current_header, member.offset - BLOCK, self._name)
        data = self._read_exact(member.size)
        self._skip(self._unread - member.size)
        self._unread = 0
        self._current = None
        return data

    def _rest_of_header(self, start: bytes) -> bytes:
        if not start:
            if self._seekable and (end := self._file.seek(0, 2)) < self._position:  # a skip ran past the end
                raise TruncatedShardError(f"{self._name} is truncated: it ends inside a member, at byte {end}")
            # tar writers (tarfile, GNU tar, webdataset) all end an archive with zero blocks: one cut
            # between two members is truncated too, though it reads like a whole archive
            if self._position == 0:
                raise TruncatedShardError(f"{self._name} is empty (0 bytes; even a tar without members has "
                                          "its end-of-archive blocks)")
            raise TruncatedShardError(f"{self._name} is truncated: it ends at byte {self._position} without "
                                      "tar's end-of-archive blocks")
        rest = self._read_exact(BLOCK - len(start))
        self._position -= len(rest)  # the caller counts the whole block
        return start + rest

    def _read_exact(self, size: int) -> bytes:
        data = self._file.read(size)
        while len(data) < size:  # streams may return less than asked
            more = self._file.read(size - len(data))
            if not more:
                raise TruncatedShardError(f"{self._name} is truncated: it ends inside a member, at byte "
                                          f"{self._position + len(data)}")
            data += more
        self._position += size
        return data

    def _skip(self, size: int) -> None:
        if size <= 0:
            return
        if self._seekable:
            self._file.seek(size, 1)
            self._position += size
            return
        while size:
            chunk = self._read_exact(min(size, _SKIP_CHUNK))
            size -= len(chunk)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _c_string(field_bytes: bytes) -> str:
    return field_bytes.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_size(field_bytes: bytes, offset: int, source: str) -> int:
    """The size field; its usual form (11 octal digits and a NUL or space) parsed without the general rules."""
    if field_bytes[11] in _FIELD_ENDS:
        try:
            return int(field_bytes[:11], 8)
        except ValueError:
            pass
    return _parse_number(field_bytes, offset, source)


def _parse_number(field_bytes: bytes, offset: int, source: str) -> int:
    if field_bytes[0] == 0x80:  # GNU base-256 for values that do not fit the octal field
        return int.from_bytes(field_bytes[1:], "big")
    text = field_bytes.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError as err:
        raise TarFormatError(f"{source}: invalid number {field_bytes!r} in the tar header at byte "
                             f"{offset}") from err


def _header_name(raw_name: bytes, magic: bytes, header: bytes) -> str:
    name = _c_string(raw_name)
    if magic == b"ustar\0" and header[345]:  # POSIX ustar: the prefix field holds leading directories
        return f"{_c_string(header[345:500])}/{name}"
    return name


def _is_plain_member(block: bytes, name: str, size: int, offset: int, source: str) -> bool:
    """Whether ``block`` starts with the header of the regular file ``name`` of ``size`` bytes, named in the
    header itself (no long-name or pax header before it). Type, magic, name and size are compared with what
    the index expects instead of summing the header for its checksum."""
    raw_name, raw_size, typeflag, magic = _HEADER.unpack_from(block)
    return (typeflag in _REGULAR_TYPES and magic[:5] == b"ustar" and _parse_size(raw_size, offset, source) == size
            and _header_name(raw_name, magic, block) == name)


def _check_checksum(header: bytes, offset: int, source: str) -> None:
    stored = _parse_number(header[148:156], offset, source)
    unsigned = sum(header) - sum(header[148:156]) + 8 * 0x20
    if stored != unsigned and stored != _signed_checksum(header):
        raise TarFormatError(f"{source}: bad tar header checksum at byte {offset} (damaged shard)")


def _signed_checksum(header: bytes) -> int:
    signed = [b - 256 if b > 127 else b for b in header]
    return sum(signed) - sum(signed[148:156]) + 8 * 0x20


def _parse_pax(data: bytes, offset: int, source: str) -> dict[str, str]:
    """Records ``"<length> <key>=<value>\\n"``, the length counting the whole record."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data) and data[position] != 0:
        try:
            space = data.index(b" ", position)
            length = int(data[position:space])
            key, _, value = data[space + 1:position + length - 1].partition(b"=")
        except ValueError as err:
            raise TarFormatError(f"{source}: malformed pax header at byte {offset}") from err
        if length < 1:
            raise TarFormatError(f"{source}: malformed pax header at byte {offset}")
        records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        position += length
    return records


def _pax_size(pax: dict[str, str], size: int, offset: int, source: str) -> int:
    if "size" not in pax:
        return size
    try:
        return int(pax["size"])
    except ValueError as err:
        raise TarFormatError(f"{source}: invalid pax size {pax['size']!r} at byte {offset}") from err


@dataclass
class ShardSample:
    """One sample read from a shard: its JSON (and what it tells, checked), the chosen clips and the JPEG
    bytes of their frames."""

    key: str
    position: int
    meta: dict[str, Any]
    clips: list[list[int]]
    info: SampleInfo
    jpegs: dict[int, bytes] = field(default_factory=dict)


@dataclass
class SampleError:
    """A sample that could not be read; ``missing_frames`` tells a gap in the frames from the rest."""

    key: str
    position: int
    reason: str
    missing_frames: bool = False


FrameSelector = Callable[[int, SampleInfo], Sequence[Sequence[int]]]


def read_samples(reader: TarMemberReader, select: FrameSelector,
                 keep: Callable[[int], bool] | None = None) -> Iterator[ShardSample | SampleError]:
    """Group members into samples, read each JSON, then only the JPEGs of the frames ``select`` picks.

    ``select(position, info)`` returns the clips (lists of frame indices) to read; it may raise
    ValueError for a JSON it cannot use. ``keep(position)`` (default: all) decides before anything is
    read whether a sample is wanted at all; unwanted samples are skipped without a trace. Broken
    samples come out as :class:`SampleError` so the caller can count them and go on; a broken archive
    raises :class:`TarFormatError`.
    """
    use_index = reader.seekable
    member = reader.next_member()
    position = -1
    while member is not None:
        position += 1
        prefix, suffix = split_member_name(member.name)
        outcome = None
        if keep is None or keep(position):
            outcome = _start_sample(reader, member, prefix, suffix, position, select)
        wanted = ({f"{prefix}.{frame_member_suffix(i)}": i for clip in outcome.clips for i in clip}
                  if isinstance(outcome, ShardSample) else {})
        try:
            if wanted and use_index and "frame_index" in outcome.meta:
                use_index = _read_by_index(reader, outcome, prefix)
            same_sample = prefix + "."
            member = reader.next_member()
            while member is not None and member.name.startswith(same_sample):
                index = wanted.get(member.name)
                if index is not None:
                    outcome.jpegs[index] = reader.read(member)
                member = reader.next_member()
        except TruncatedShardError:
            checked = _check_frames(outcome, wanted) if outcome is not None else None
            if isinstance(checked, ShardSample):  # the archive ends after what this sample's clip needs
                yield checked
            raise
        if outcome is not None:
            yield _check_frames(outcome, wanted)


def _start_sample(reader: TarMemberReader, member: TarMember, prefix: str, suffix: str, position: int,
                  select: FrameSelector) -> ShardSample | SampleError:
    if suffix != "json":
        return SampleError(prefix, position, f"sample starts with {member.name}, not {prefix}.json")
    try:
        meta = json.loads(reader.read(member))
        if not isinstance(meta, dict):
            raise ValueError("the JSON is not an object")
        info = SampleInfo.parse(meta, prefix)
        clips = [list(clip) for clip in select(position, info)]
    except (ValueError, KeyError, TypeError) as err:
        return SampleError(prefix, position, f"unusable {member.name}: {err}")
    return ShardSample(info.key, position, meta, clips, info)


def _read_by_index(reader: TarMemberReader, sample: ShardSample, prefix: str) -> bool:
    """Read the sampled frames by seeking with the JSON's ``frame_index``, and stop after the sample's last
    frame (the caller's walk goes on from there).

    The reader stands right after the JSON. When the index does not match the tar, it goes back there
    (the caller walks the sample's members instead), warns naming the shard, and returns False.
    """
    start = reader.position
    try:
        index = frame_index_of(sample.meta)
        wanted = {i for clip in sample.clips for i in clip}
        jpegs = {}
        for frame in sorted({*wanted, len(index) - 1}):  # the last frame too: the walk goes on after it
            offset, size = index_entry(index, frame)
            name = f"{prefix}.{frame_member_suffix(frame)}"
            data = reader.read_member_at(start + offset, name, size, keep_data=frame in wanted)
            if frame in wanted:
                jpegs[frame] = data
    except TruncatedShardError:
        raise  # the index is fine, the file is short: walking it would end the same way
    except (ValueError, IndexError) as err:  # TarFormatError is a ValueError
        reader.seek(start)
        warnings.warn(f"{reader.name}: the frame_index of sample {sample.key} does not match the tar ({err}); "
                      "reading this shard member by member", stacklevel=3)
        return False
    sample.jpegs.update(jpegs)
    return True


def _check_frames(outcome: ShardSample | SampleError, wanted: dict[str, int]) -> ShardSample | SampleError:
    if isinstance(outcome, SampleError):
        return outcome
    missing = sorted(set(wanted.values()) - outcome.jpegs.keys())
    if missing:
        return SampleError(outcome.key, outcome.position,
                           f"frames {missing} missing (JSON says {outcome.meta.get('num_frames')} frames)",
                           missing_frames=True)
    return outcome
