import io
import json
import tarfile

import pytest

from shard_files import Sample, add_member, frame_jpeg, sample_meta, write_shard
from sifar.data.shard_writer import ShardLimits, ShardWriter
from sifar.data.shard_format import SampleInfo, split_member_name
from sifar.data.tar_reader import (SampleError, ShardSample, TarFormatError, TarMemberReader, TruncatedShardError,
                                   read_samples)


class TrickleStream(io.RawIOBase):
    """A non-seekable stream that hands out at most ``chunk`` bytes per read, like a network socket."""

    def __init__(self, data: bytes, chunk: int = 100):
        self._data, self._pos, self._chunk = data, 0, chunk

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._chunk if size < 0 else min(size, self._chunk)
        out = self._data[self._pos:self._pos + size]
        self._pos += len(out)
        return out


def tar_bytes(members: list[tuple[str, bytes]], tar_format: int = tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        for name, data in members:
            add_member(tar, name, data)
    return buffer.getvalue()


def read_all(data: bytes, seekable: bool) -> list[tuple[str, bytes]]:
    stream = io.BytesIO(data) if seekable else TrickleStream(data)
    reader = TarMemberReader(stream, "test.tar", seekable=seekable)
    return [(member.name, reader.read(member)) for member in reader]


LONG = "d" * 120 + "/" + "k" * 130 + ".000001.jpg"
MEMBERS = [("a.json", b"{}"), ("a.000000.jpg", b"x" * 700), ("dir/b.json", b""), (LONG, b"y" * 513),
           ("caf\u00e9.json", b"z")]


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("seekable", [True, False])
def test_reads_every_member_as_tarfile_wrote_it(tar_format, seekable):
    members = MEMBERS if tar_format != tarfile.USTAR_FORMAT else MEMBERS[:3] + [("p" * 90 + "/" + "q" * 90, b"u")]
    assert read_all(tar_bytes(members, tar_format), seekable) == members


@pytest.mark.parametrize("seekable", [True, False])
def test_unread_members_are_skipped(seekable):
    data = tar_bytes([(f"s.{i:06d}.jpg", bytes([i]) * (100 + 300 * i)) for i in range(6)])
    stream = io.BytesIO(data) if seekable else TrickleStream(data, chunk=7)
    reader = TarMemberReader(stream, "t.tar", seekable=seekable)
    got = {m.name: reader.read(m) for m in reader if m.name.endswith(("2.jpg", "5.jpg"))}
    assert got == {"s.000002.jpg": b"\x02" * 700, "s.000005.jpg": b"\x05" * 1600}


@pytest.mark.parametrize("size_field", [
    b"\x80" + (20).to_bytes(11, "big"),  # GNU base-256
    b"00000000024\0", b"00000000024 ", b"24\0\0\0\0\0\0\0\0\0\0", b"         24\0", b"000000000024",
])
def test_sizes_are_read_in_every_form_tar_writers_use(size_field):
    data = bytearray(tar_bytes([("big.json", b"q" * 20)]))
    data[124:136] = size_field
    data[148:156] = b"        "
    data[148:155] = f"{sum(data[:512]):06o}\0".encode()
    assert read_all(bytes(data), seekable=True) == [("big.json", b"q" * 20)]


def test_directories_and_links_are_passed_over():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "l" * 150  # GNU long link name ('K') too
        tar.addfile(link)
        add_member(tar, "folder/x.json", b"1")
    assert read_all(buffer.getvalue(), seekable=True) == [("folder/x.json", b"1")]


def test_truncated_archive_names_the_shard_and_offset():
    data = tar_bytes([("a.json", b"x" * 2000)])[:1200]
    reader = TarMemberReader(TrickleStream(data), "cut.tar", seekable=False)
    member = reader.next_member()
    with pytest.raises(TarFormatError, match=r"cut\.tar is truncated.*byte 1200"):
        reader.read(member)


def test_truncated_local_file_is_noticed_even_when_the_cut_member_was_skipped():
    data = tar_bytes([("a.json", b"x" * 2000), ("b.json", b"y" * 3000)])[:3072 + 100]
    reader = TarMemberReader(io.BytesIO(data), "cut.tar", seekable=True)
    assert reader.next_member().name == "a.json"
    assert reader.next_member().name == "b.json"
    with pytest.raises(TarFormatError, match=r"cut\.tar is truncated"):
        reader.next_member()


def test_not_a_tar_is_refused_clearly():
    reader = TarMemberReader(io.BytesIO(b"PK\x03\x04" + bytes(2000)), "zip.tar")
    with pytest.raises(TarFormatError, match=r"zip\.tar: no tar header at byte 0"):
        reader.next_member()


def test_bad_checksum_of_a_read_member_is_reported():
    data = bytearray(tar_bytes([("a.json", b"{}")]))
    data[0:1] = b"b"  # the name changes, the stored checksum does not
    reader = TarMemberReader(io.BytesIO(bytes(data)), "bad.tar")
    member = reader.next_member()
    with pytest.raises(TarFormatError, match=r"bad\.tar: bad tar header checksum at byte 0"):
        reader.read(member)


def test_read_member_at_reads_the_member_there_and_walks_on_after_it():
    long_name = "k" * 120 + ".000000.jpg"
    data = tar_bytes([("a.json", b"{}"), ("a.000000.jpg", b"x" * 700), (long_name, b"y" * 10), ("z.json", b"[]")])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        offsets = {info.name: info.offset for info in tar.getmembers()}  # where each member's headers start
    reader = TarMemberReader(io.BytesIO(data), "t.tar")
    assert reader.read_member_at(offsets["a.000000.jpg"], "a.000000.jpg", 700) == b"x" * 700
    assert reader.next_member().name == long_name
    assert reader.read_member_at(offsets[long_name], long_name, 10) == b"y" * 10  # behind a name header
    assert reader.next_member().name == "z.json"
    stream = CountingFile(data)
    headers_only = TarMemberReader(stream, "t.tar")
    assert headers_only.read_member_at(offsets["a.000000.jpg"], "a.000000.jpg", 700, keep_data=False) == b""
    assert (stream.reads, stream.tell()) == (1, offsets["a.000000.jpg"] + 512)  # one header block, no data
    assert headers_only.next_member().name == long_name
    assert headers_only.read_member_at(offsets[long_name], long_name, 10, keep_data=False) == b""
    assert headers_only.next_member().name == "z.json"
    with pytest.raises(TarFormatError, match="is not a.000001.jpg"):
        headers_only.read_member_at(offsets["a.000000.jpg"], "a.000001.jpg", 700, keep_data=False)
    for name, size in [("a.000001.jpg", 700), ("a.000000.jpg", 699)]:
        with pytest.raises(TarFormatError, match=rf"t.tar: the member at byte {offsets['a.000000.jpg']} is not"):
            reader.read_member_at(offsets["a.000000.jpg"], name, size)
    with pytest.raises(TarFormatError, match="t.tar is truncated"):
        reader.read_member_at(offsets["z.json"], "z.json", 10**6)


def test_only_the_current_member_can_be_read():
    reader = TarMemberReader(io.BytesIO(tar_bytes([("a.json", b"1"), ("b.json", b"2")])), "t.tar")
    first = reader.next_member()
    reader.next_member()
    with pytest.raises(ValueError, match="not the current unread member"):
        reader.read(first)


def test_an_archive_without_members_has_none_and_an_empty_file_is_not_one():
    assert list(TarMemberReader(io.BytesIO(tar_bytes([])), "none.tar")) == []
    with pytest.raises(TruncatedShardError, match=r"empty.tar is empty \(0 bytes"):
        list(TarMemberReader(io.BytesIO(b""), "empty.tar"))


@pytest.mark.parametrize("seekable", [True, False])
def test_an_archive_cut_between_two_members_is_truncated(seekable):
    data = tar_bytes([("a.json", b"x" * 512), ("b.json", b"y" * 100)])
    reader = TarMemberReader(io.BytesIO(data[:1024]), "cut.tar", seekable=seekable)
    assert reader.next_member().name == "a.json"
    with pytest.raises(TruncatedShardError, match="cut.tar is truncated: it ends at byte 1024 without tar's "
                                                  "end-of-archive blocks"):
        reader.next_member()


def test_split_member_name_follows_webdataset():
    assert split_member_name("dir/key.000003.jpg") == ("dir/key", "000003.jpg")
    assert split_member_name("key.json") == ("key", "json")
    assert split_member_name("README") == ("README", "")


def shard_bytes(tmp_path, samples, **options) -> bytes:
    path = tmp_path / "s.tar"
    write_shard(path, samples, **options)
    return path.read_bytes()


def first_and_last(position, info):
    return [[0, info.num_frames - 1]]


def test_read_samples_reads_json_then_only_the_chosen_frames(tmp_path):
    data = shard_bytes(tmp_path, [Sample("v0", 1, 5), Sample("v1", 2, 3)])
    samples = list(read_samples(TarMemberReader(io.BytesIO(data), "s.tar"), first_and_last))
    assert [(s.key, s.position, s.meta["label"], s.clips) for s in samples] == [
        ("v0", 0, 1, [[0, 4]]), ("v1", 1, 2, [[0, 2]])]
    assert samples[0].jpegs == {0: frame_jpeg(0, 64, 48), 4: frame_jpeg(4, 64, 48)}


def test_read_samples_reports_missing_frames_and_bad_json(tmp_path):
    samples = [Sample("gap", 0, 4), Sample("broken", 0, 2), Sample("nojson", 0, 2), Sample("fine", 0, 2)]
    data = shard_bytes(tmp_path, samples, drop={"gap.000003.jpg", "nojson.json"},
                       broken={"broken.json": b"{not json"})
    items = list(read_samples(TarMemberReader(io.BytesIO(data), "s.tar"), first_and_last))
    assert [type(i) for i in items] == [SampleError, SampleError, SampleError, ShardSample]
    assert items[0].missing_frames and "frames [3] missing" in items[0].reason
    assert "unusable broken.json" in items[1].reason and not items[1].missing_frames
    assert "starts with nojson.000000.jpg, not nojson.json" in items[2].reason
    assert items[3].key == "fine" and items[3].position == 3


def test_read_samples_keep_skips_samples_without_reading_them(tmp_path):
    data = shard_bytes(tmp_path, [Sample(f"v{i}", i, 2) for i in range(5)], broken={"v1.json": b"{"})
    seen = []

    def select(position, info):
        seen.append(position)
        return [[0]]

    items = list(read_samples(TarMemberReader(io.BytesIO(data), "s.tar"), select, keep=lambda p: p % 2 == 0))
    assert [i.key for i in items] == ["v0", "v2", "v4"] and seen == [0, 2, 4]


def test_read_samples_passes_on_select_errors(tmp_path):
    data = shard_bytes(tmp_path, [Sample("v0", 0, 2)])

    def refuse(position, info):
        raise ValueError("clips need 8 frames")

    (item,) = read_samples(TarMemberReader(io.BytesIO(data), "s.tar"), refuse)
    assert isinstance(item, SampleError) and "clips need 8 frames" in item.reason


def test_sample_json_is_the_contract_json(tmp_path):
    data = shard_bytes(tmp_path, [Sample("v0", 2, 3, dataset="ssv2")])
    (sample,) = read_samples(TarMemberReader(io.BytesIO(data), "s.tar"), first_and_last)
    assert sample.meta == json.loads(tarfile.open(fileobj=io.BytesIO(data)).extractfile("v0.json").read())
    assert sample.info == SampleInfo("v0", 2, 3, "class2", 64, 48, "ssv2") and sample.info.stored_short_side == 48


class CountingFile(io.BytesIO):
    """A seekable in-memory file that counts read calls."""

    reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        return super().read(size)


def indexed_shard(tmp_path, samples: list[Sample]) -> bytes:
    """A shard written by the project's writer, so each JSON carries a frame_index."""
    with ShardWriter(tmp_path, "train", ShardLimits()) as writer:
        for sample in samples:
            frames = [frame_jpeg(t, sample.width, sample.height) for t in range(sample.num_frames)]
            writer.add(sample.key, sample_meta(sample), frames)
    return (tmp_path / "train-000000.tar").read_bytes()


def middle_frames(position, info):
    return [[1, 3, 3]]


def read_clips(data: bytes, seekable: bool, select=middle_frames) -> list[tuple]:
    stream = CountingFile(data) if seekable else TrickleStream(data)
    items = read_samples(TarMemberReader(stream, "s.tar", seekable=seekable), select)
    return [(i.key, i.position, i.clips, i.jpegs) for i in items]


def test_indexed_shard_is_read_by_seeking_with_the_same_bytes_as_by_walking(tmp_path):
    samples = [Sample("v0", 0, 6), Sample("k" * 110, 1, 5), Sample("v2", 2, 4)]
    data = indexed_shard(tmp_path, samples)
    walked = read_clips(data, seekable=False)
    assert walked == read_clips(data, seekable=True)
    assert walked[0][3] == {1: frame_jpeg(1, 64, 48), 3: frame_jpeg(3, 64, 48)}
    stream = CountingFile(data)
    list(read_samples(TarMemberReader(stream, "s.tar"), middle_frames))
    # v0: JSON header and data, then one read (header and data) for each of frames 1 and 3, and the last
    # frame's header alone; the long key: JSON behind its name header (4 reads), frames 1 and 3 each a read
    # that finds the name header, then name header, name, header, data, and the last frame's the same without
    # its data; v2: JSON, frames 1 and 3 (the last); end-of-archive block
    assert stream.reads == (2 + 3) + (4 + 2 * 5 + 4) + (2 + 2) + 1


@pytest.mark.parametrize("frame_index", [
    lambda index: [[o + 512, s] for o, s in index],  # offsets one block off
    lambda index: [[o, s + 1] for o, s in index],  # sizes wrong
    lambda index: index[:-1],  # one frame short
    lambda index: [[o, -s] for o, s in index],
    lambda index: "0,512",
])
def test_index_that_does_not_match_the_tar_is_warned_about_and_walked(tmp_path, frame_index):
    data = indexed_shard(tmp_path, [Sample("v0", 0, 5), Sample("v1", 1, 5)])
    expected = read_clips(data, seekable=False)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        meta = json.loads(tar.extractfile("v0.json").read())
    meta["frame_index"] = frame_index(meta["frame_index"])
    write_shard(tmp_path / "bad.tar", [Sample("v0", 0, 5), Sample("v1", 1, 5)],
                broken={"v0.json": json.dumps(meta).encode()})
    with pytest.warns(UserWarning, match=r"s.tar: the frame_index of sample v0 does not match the tar") as caught:
        got = read_clips((tmp_path / "bad.tar").read_bytes(), seekable=True)
    assert len(caught) == 1 and [g[:3] for g in got] == [e[:3] for e in expected]
    assert [g[3] for g in got] == [e[3] for e in expected]
