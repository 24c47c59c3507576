import io
import json
import shutil
import tarfile
from pathlib import Path

import fsspec
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from video_files import COUNTER_STEP, make_video

from sifar.cli.data_commands import inspect, preview
from sifar.data.ffmpeg import DecodeSettings
from sifar.data.manifest import read_manifest
from sifar.data.sampling import eval_indices
from sifar.data.shard_writer import ShardLimits
from sifar.data.sharding import ShardJob, shard_dataset


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Two shards of counter videos; one video is named "3" so its key looks like an index."""
    src = tmp_path_factory.mktemp("src")
    names = ["3", "a", "b", "c", "d"]
    for i, name in enumerate(names):
        make_video(src / f"{name}.mp4", frames=10 + i, content="counter")
    (src / "train.csv").write_text("".join(f"{n}.mp4,{'odd' if i % 2 else 'even'}\n" for i, n in enumerate(names)))
    out = tmp_path_factory.mktemp("shards")
    shard_dataset(ShardJob("csv", src, out, decode=DecodeSettings(short_side=0), limits=ShardLimits(max_samples=3),
                           workers=2, progress=False))
    return out


def copy_of(shards: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    return copy


def test_inspect_reports_counts_and_checks_every_shard(shards):
    result = CliRunner().invoke(inspect, [str(shards)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "train" in text and "dataset csv, 5 samples, 60 frames, 2 shards" in text
    assert "classes: 2 (even, odd); samples per class: min 2, max 3, 2 classes present" in text
    assert "frames per sample: min 10, mean 12, max 14" in text
    assert "videos that failed when sharding: 0" in text
    assert "2 shards checked: all readable" in text
    assert CliRunner().invoke(inspect, [str(shards / "train.json"), "--decode"]).exit_code == 0


def test_inspect_catches_a_flipped_bit_that_still_decodes_by_the_manifests_checksum(shards, tmp_path):
    copy = copy_of(shards, tmp_path)
    with tarfile.open(copy / "train-000000.tar") as tar:
        frame = next(m for m in tar.getmembers() if m.name.endswith(".000002.jpg"))
    data = bytearray((copy / "train-000000.tar").read_bytes())
    data[frame.offset_data + frame.size // 2] ^= 0x01  # inside the entropy-coded data: the JPEG still decodes
    (copy / "train-000000.tar").write_bytes(bytes(data))
    manifest = json.loads((copy / "train.json").read_text())
    assert all(len(shard["sha256"]) == 64 for shard in manifest["shards"])
    result = CliRunner().invoke(inspect, [str(copy), "--decode"])
    assert result.exit_code == 1
    assert "BAD train-000000.tar: its bytes differ from the SHA-256 the manifest recorded" in result.output
    assert "BAD train-000001.tar" not in result.output


def test_inspect_fails_on_a_truncated_shard(shards, tmp_path):
    copy = copy_of(shards, tmp_path)
    data = (copy / "train-000001.tar").read_bytes()
    (copy / "train-000001.tar").write_bytes(data[:len(data) // 2])
    result = CliRunner().invoke(inspect, [str(copy)])
    assert result.exit_code == 1
    assert "BAD train-000001.tar" in result.output and "1 bad shard(s)" in result.output
    assert "BAD train-000000.tar" not in result.output


def test_inspect_fails_on_a_missing_frame_and_a_missing_shard(shards, tmp_path):
    copy = copy_of(shards, tmp_path)
    with tarfile.open(copy / "train-000000.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(copy / "train-000000.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for member, data in members[:3] + members[4:]:          # drop the third frame of the first sample
            tar.addfile(member, io.BytesIO(data))
    (copy / "train-000001.tar").unlink()
    result = CliRunner().invoke(inspect, [str(copy)])
    assert result.exit_code == 1
    assert "000002.jpg" in result.output and "found" in result.output
    assert f"BAD train-000001.tar: missing (no file at {copy}/train-000001.tar)" in result.output


def test_inspect_needs_a_manifest(tmp_path):
    result = CliRunner().invoke(inspect, [str(tmp_path)])
    assert result.exit_code == 1 and f"no split manifest (<split>.json) in {tmp_path}" in result.output


def test_inspect_reads_urls(shards):
    fs = fsspec.filesystem("memory")
    for path in shards.iterdir():
        fs.pipe(f"/bucket/shards/{path.name}", path.read_bytes())
    result = CliRunner().invoke(inspect, ["memory://bucket/shards"])
    assert result.exit_code == 0, result.output
    assert "5 samples" in result.output and "all readable" in result.output


def cells(image: Image.Image, rows: int, cols: int) -> list[np.ndarray]:
    pixels = np.asarray(image)
    height, width = pixels.shape[0] // rows, pixels.shape[1] // cols
    return [pixels[r * height:(r + 1) * height, c * width:(c + 1) * width] for r in range(rows) for c in range(cols)]


def test_preview_by_key_is_the_evaluation_clip_as_a_super_image(shards, tmp_path):
    out = tmp_path / "preview.png"
    result = CliRunner().invoke(preview, [str(shards), "--sample", "3", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("3 (even, 10 frames)")     # the key "3" wins over index 3
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (3 * 64, 3 * 48)
    grid = cells(image, 3, 3)
    expected = eval_indices(10, 8)[0]
    shown = [int(round(cell[..., 0].mean() / COUNTER_STEP)) for cell in grid[:8]]
    assert shown == expected
    assert grid[8].max() == 0          # the ninth cell is padding


def test_preview_by_index_with_a_layout_from_a_single_shard(shards, tmp_path):
    manifest = read_manifest(shards / "train.json")
    out = tmp_path / "p.png"
    result = CliRunner().invoke(preview, [str(shards / manifest.shards[1].name), "--sample", "1", "--output", str(out),
                                          "--num-frames", "4", "--layout", "1x4"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (4 * 64, 48)
    wrong = CliRunner().invoke(preview, [str(shards), "--sample", "99", "--output", str(out)])
    assert wrong.exit_code == 1 and "no sample with key or index '99' among 5 samples" in wrong.output
    too_small = CliRunner().invoke(preview, [str(shards), "--sample", "0", "--output", str(out), "--layout", "2x2"])
    assert too_small.exit_code == 1 and "too few for 8 frames" in too_small.output
