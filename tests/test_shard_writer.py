import hashlib
import json
import tarfile

import pytest

from sifar.data.shard_reader import ShardFormatError, read_shard
from sifar.data.shard_format import frame_member, tar_member_bytes
from sifar.data.shard_writer import ShardLimits, ShardWriter, parse_size, shard_name


@pytest.mark.parametrize("text, size", [("500MB", 500 * 10**6), ("1GB", 10**9), ("2GiB", 2 * 2**30),
                                        ("64kb", 64_000), ("1.5 MB", 1_500_000), ("123", 123), ("10M", 10**7)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "1XB", "-5MB", "0"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def frames(n: int, size: int = 100) -> list[bytes]:
    return [bytes([i]) * size for i in range(n)]


def test_rollover_by_samples_and_by_bytes(tmp_path):
    with ShardWriter(tmp_path, "val", ShardLimits(max_samples=2)) as writer:
        for i in range(5):
            writer.add(f"s{i}", {}, frames(1))
    assert [(s.name, s.samples, s.frames) for s in writer.finished] == [
        ("val-000000.tar", 2, 2), ("val-000001.tar", 2, 2), ("val-000002.tar", 1, 1)]
    sample_bytes = tar_member_bytes(2) + 3 * tar_member_bytes(100)
    with ShardWriter(tmp_path / "b", "train", ShardLimits(max_bytes=2 * sample_bytes), first_index=7) as writer:
        for i in range(5):
            writer.add(f"s{i}", {}, frames(3))
    assert [(s.name, s.samples) for s in writer.finished] == [
        ("train-000007.tar", 2), ("train-000008.tar", 2), ("train-000009.tar", 1)]
    assert all(s.bytes == (tmp_path / "b" / s.name).stat().st_size for s in writer.finished)
    assert all(s.sha256 == hashlib.sha256((tmp_path / "b" / s.name).read_bytes()).hexdigest() for s in writer.finished)


def test_an_exception_leaves_no_partial_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "train", ShardLimits(max_samples=2)) as writer:
            for i in range(3):
                writer.add(f"s{i}", {}, frames(1))
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == [shard_name("train", 0)]


def test_reader_checks_the_sample_layout(tmp_path):
    with ShardWriter(tmp_path, "train", ShardLimits()) as writer:
        writer.add("a", {"num_frames": 2}, frames(2))
        writer.add("b", {"num_frames": 3}, frames(2))
    path = tmp_path / "train-000000.tar"
    with tarfile.open(path) as tar:
        assert tar.getnames()[:3] == ["a.json", "a.000000.jpg", "a.000001.jpg"]
    samples = read_shard(path)
    assert next(samples).frames == frames(2)
    with pytest.raises(ShardFormatError, match="sample b has 2 frames, its json says 3"):
        next(samples)


def test_frame_index_gives_each_frames_member_offset_after_the_json_and_size(tmp_path):
    long_key = "k" * 120  # frame names over 100 bytes: GNU long-name headers in front of each frame
    data = [bytes([i]) * (300 + 400 * i) for i in range(4)]
    with ShardWriter(tmp_path, "train", ShardLimits()) as writer:
        writer.add("short", {"num_frames": 4}, data)
        writer.add(long_key, {"num_frames": 4}, data)
    with tarfile.open(tmp_path / "train-000000.tar") as tar:
        members = tar.getmembers()
        for first in (0, 5):
            json_member, frame_members = members[first], members[first + 1:first + 5]
            meta = json.loads(tar.extractfile(json_member).read())
            json_end = json_member.offset_data + tar_member_bytes(json_member.size) - 512
            assert meta["num_frames"] == 4
            assert meta["frame_index"] == [[m.offset - json_end, m.size] for m in frame_members]
            assert [tar.extractfile(m).read() for m in frame_members] == data
    assert frame_members[0].name == frame_member(long_key, 0)


@pytest.mark.parametrize("meta, message", [({"fps": object()}, "metadata of sample s cannot be written as JSON"),
                                           ({"labels": {1, 2}}, "cannot be written as JSON"),
                                           ([1, 2], "metadata of sample s must be a mapping")])
def test_sample_metadata_must_be_a_json_object(tmp_path, meta, message):
    with pytest.raises(ValueError, match=message):
        with ShardWriter(tmp_path, "train", ShardLimits()) as writer:
            writer.add("s", meta, frames(1))
    assert list(tmp_path.iterdir()) == []
