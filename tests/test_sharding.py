"""``sifar-tools shard`` end to end: real ffmpeg on small videos made here, shards read back with plain
``tarfile``, ``tar`` and ``webdataset``."""

import json
import signal
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from click.testing import CliRunner, Result
from PIL import Image
from video_files import counter_value, make_video, require_encoder, run_ffmpeg

from sifar.cli.data_commands import merge, shard
from sifar.data import ClipSettings, LoaderSettings, build_loader
from sifar.data.ffmpeg import DecodeSettings, has_encoder
from sifar.data.manifest import read_manifest
from sifar.data.shard_writer import ShardLimits
from sifar.data.sharding import ShardJob, shard_dataset

REPO = Path(__file__).resolve().parents[1]


def csv_dataset(root: Path, videos: dict[str, tuple[str, dict]], list_name: str = "train.csv") -> Path:
    """Make each video (relative path -> (label, make_video kwargs)) and the ``path,label`` list."""
    for relative, (_, kwargs) in videos.items():
        make_video(root / relative, **kwargs)
    (root / list_name).write_text("".join(f"{rel},{label}\n" for rel, (label, _) in videos.items()))
    return root


def run_shard(*args: str) -> Result:
    return CliRunner().invoke(shard, [*args, "--no-progress"], catch_exceptions=False)


def tar_members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def samples_in(shard_path: Path) -> dict[str, dict]:
    """key -> {"meta": json, "frames": [jpeg bytes]} read with plain tarfile."""
    samples: dict[str, dict] = {}
    with tarfile.open(shard_path) as tar:
        for member in tar:
            key, _, suffix = member.name.partition(".")
            data = tar.extractfile(member).read()
            if suffix == "json":
                samples[key] = {"meta": json.loads(data), "frames": []}
            else:
                samples[key]["frames"].append(data)
    return samples


@pytest.fixture(scope="module")
def counter_videos(tmp_path_factory) -> Path:
    """Six counter videos of two classes with 6..11 frames."""
    root = tmp_path_factory.mktemp("src")
    videos = {f"clips/{name}_{i}.mp4": (name, {"frames": 6 + i, "content": "counter"})
              for i, name in enumerate(["walk", "run", "walk", "run", "walk", "run"])}
    return csv_dataset(root, videos)


def test_shard_naming_manifest_and_sample_layout(counter_videos, tmp_path):
    out = tmp_path / "shards"
    result = run_shard("--dataset", "csv", "--src", str(counter_videos), "--output", str(out), "--short-side", "24",
                       "--samples-per-shard", "4", "--workers", "2", "--quality", "4")
    assert result.exit_code == 0, result.output
    assert "6 videos, 51 frames in 2 shards" in result.output and "0 failed" in result.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "train-000000.tar", "train-000001.tar", "train-errors.jsonl", "train.json"]
    manifest = read_manifest(out / "train.json")
    assert (manifest.dataset, manifest.split, manifest.classes) == ("csv", "train", ["run", "walk"])
    assert [(s.name, s.samples) for s in manifest.shards] == [("train-000000.tar", 4), ("train-000001.tar", 2)]
    assert all(s.bytes == (out / s.name).stat().st_size for s in manifest.shards)
    assert manifest.num_samples == 6 and manifest.num_frames == 51
    assert manifest.decode == {"short_side": 24, "fps": None, "quality": 4, "max_frames": None, "seed": 0}
    raw = json.loads((out / "train.json").read_text())
    assert raw["num_classes"] == 2 and raw["tool_version"]
    assert (out / "train-errors.jsonl").read_text() == ""

    samples = {}
    for info in manifest.shards:
        names = tar_members(out / info.name)
        samples.update(samples_in(out / info.name))
        # json first, then the frames numbered from 0, consecutive, per sample
        position = 0
        while position < len(names):
            key = names[position].split(".")[0]
            count = json.loads(_member(out / info.name, names[position]))["num_frames"]
            assert names[position:position + 1 + count] == [f"{key}.json"] + [
                f"{key}.{i:06d}.jpg" for i in range(count)]
            position += 1 + count
    assert set(samples) == {f"clips_{n}_{i}" for i, n in enumerate(["walk", "run"] * 3)}
    meta = samples["clips_run_3"]["meta"]
    assert len(meta.pop("frame_index")) == 9  # the frames' offsets and sizes: tests/test_shard_writer.py
    assert meta == {"key": "clips_run_3", "label": 0, "label_name": "run", "num_frames": 9, "fps": 10.0,
                    "width": 32, "height": 24, "orig_width": 64, "orig_height": 48,
                    "source": "clips/run_3.mp4", "dataset": "csv"}
    assert [counter_value(f) for f in samples["clips_run_3"]["frames"]] == list(range(9))

    listing = subprocess.run(["tar", "tf", str(out / "train-000001.tar")], capture_output=True, text=True,
                             check=True).stdout.split()
    assert listing == tar_members(out / "train-000001.tar")


def _member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()


def test_plain_webdataset_reads_the_shards(counter_videos, tmp_path):
    out = tmp_path / "shards"
    assert run_shard("--dataset", "csv", "--src", str(counter_videos), "--output", str(out), "--short-side", "0",
                     "--samples-per-shard", "3", "--workers", "1").exit_code == 0
    urls = [str(out / s.name) for s in read_manifest(out / "train.json").shards]
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        frames = [sample[f"{i:06d}.jpg"] for i in range(meta["num_frames"])]
        assert sorted(k for k in sample if k.endswith(".jpg")) == [f"{i:06d}.jpg" for i in range(len(frames))]
        assert Image.open(BytesIO(frames[0])).size == (64, 48)
        seen[sample["__key__"]] = [counter_value(f) for f in frames]
    assert len(seen) == 6
    assert seen["clips_walk_0"] == list(range(6))


def test_seeded_shuffle_mixes_classes_in_every_shard(tmp_path):
    videos = {f"{name}/{i}.mp4": (name, {"frames": 2, "size": (32, 24)}) for name in ("a", "b") for i in range(6)}
    src = csv_dataset(tmp_path / "src", videos)

    def shard_order(seed: int, out: str) -> list[list[str]]:
        job = ShardJob("csv", src, tmp_path / out, decode=DecodeSettings(short_side=0), workers=2, seed=seed,
                       limits=ShardLimits(max_samples=4), progress=False)
        manifest = shard_dataset(job).manifest
        return [list(samples_in(tmp_path / out / s.name)) for s in manifest.shards]

    first, again, other = shard_order(0, "one"), shard_order(0, "two"), shard_order(1, "three")
    assert first == again != other
    assert [key for shard_keys in first for key in shard_keys] != sorted(f"{n}_{i}" for n in "ab" for i in range(6))
    assert all({key[0] for key in shard_keys} == {"a", "b"} for shard_keys in first)


def test_shard_size_target(counter_videos, tmp_path):
    out = tmp_path / "shards"
    assert run_shard("--dataset", "csv", "--src", str(counter_videos), "--output", str(out), "--short-side", "0",
                     "--shard-size", "30KB", "--workers", "2").exit_code == 0
    manifest = read_manifest(out / "train.json")
    assert len(manifest.shards) > 1
    sample_sizes = [sum(len(f) + 1024 for f in s["frames"]) for info in manifest.shards
                    for s in samples_in(out / info.name).values()]
    # A shard only goes past the target by its last tar padding, or when it holds a single large sample.
    for info in manifest.shards:
        assert info.bytes <= 30_000 + 10240 or info.samples == 1
    assert manifest.num_samples == 6 and max(sample_sizes) < 30_000


def _audio_only(path: Path) -> None:
    run_ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(path))


def test_bad_inputs_are_recorded_and_the_run_goes_on(tmp_path):
    src = tmp_path / "src"
    good = {f"good_{i}.mp4": ("ok", {"frames": 4}) for i in range(3)}
    csv_dataset(src, good)
    (src / "zero.mp4").write_bytes(b"")
    (src / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    whole = make_video(src / "truncated.mp4", frames=30).read_bytes()
    (src / "truncated.mp4").write_bytes(whole[:len(whole) // 2])
    _audio_only(src / "audio.m4a")
    (src / "unreadable.mp4").mkdir()
    bad = ["zero.mp4", "corrupt.mp4", "truncated.mp4", "audio.m4a", "unreadable.mp4", "missing.mp4"]
    with open(src / "train.csv", "a") as handle:
        handle.writelines(f"{name},bad\n" for name in bad)
    out = tmp_path / "shards"

    tolerant = run_shard("--dataset", "csv", "--src", str(src), "--output", str(out), "--short-side", "16",
                         "--max-failures", "0.9", "--workers", "2")
    assert tolerant.exit_code == 0, tolerant.output
    assert "3 videos" in tolerant.output and "6 failed" in tolerant.output
    errors = {e["source"]: e["reason"] for e in map(json.loads, (out / "train-errors.jsonl").read_text().splitlines())}
    assert set(errors) == set(bad)
    assert errors["zero.mp4"] == "empty file (0 bytes)"
    assert "moov atom not found" in errors["truncated.mp4"]
    assert "no video stream" in errors["audio.m4a"]
    assert "Is a directory" in errors["unreadable.mp4"]
    assert "not found" in errors["missing.mp4"]
    assert all(errors.values())
    # The bad videos' class still counts (indices never depend on which videos failed).
    assert read_manifest(out / "train.json").classes == ["bad", "ok"]

    strict = CliRunner().invoke(shard, ["--dataset", "csv", "--src", str(src), "--output", str(out), "--short-side",
                                        "16", "--workers", "2", "--no-progress"])
    assert strict.exit_code == 1
    assert "6 of 9 videos failed" in strict.output and "train-errors.jsonl" in strict.output
    assert read_manifest(out / "train.json").num_samples == 3      # the good ones are still sharded


@pytest.fixture(scope="module")
def unusual_videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unusual")
    make_video(root / "odd.mkv", frames=5, size=(63, 47), pix_fmt="yuv444p")
    make_video(root / "plain.mp4", frames=5, size=(64, 48))
    run_ffmpeg("-display_rotation", "90", "-i", str(root / "plain.mp4"), "-c", "copy", str(root / "rotated.mp4"))
    run_ffmpeg("-f", "lavfi", "-i", "color=black:size=64x48:rate=10", "-vf",
               "format=rgb24,geq=r='8*N':g=128:b=128,setpts='(N/10+if(gte(N,3),0.7,0))/TB'", "-fps_mode", "vfr",
               "-frames:v", "6", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(root / "vfr.mkv"))
    make_video(root / "gray.mkv", frames=5, codec="ffv1", pix_fmt="gray")
    make_video(root / "h264.mkv", frames=5)
    make_video(root / "mjpeg.avi", frames=5, codec="mjpeg", pix_fmt="yuvj420p")
    if has_encoder("libvpx-vp9"):
        make_video(root / "vp9.webm", frames=5, codec="libvpx-vp9")
    names = sorted(p.name for p in root.iterdir() if p.name != "plain.mp4")
    (root / "train.csv").write_text("".join(f"{n},{n.split('.')[0]}\n" for n in names))
    return root


def test_unusual_inputs_all_work(unusual_videos, tmp_path):
    require_encoder("libvpx-vp9")
    out = tmp_path / "shards"
    result = run_shard("--dataset", "csv", "--src", str(unusual_videos), "--output", str(out), "--short-side", "24",
                       "--workers", "2")
    assert result.exit_code == 0, result.output
    assert (out / "train-errors.jsonl").read_text() == ""
    samples = samples_in(out / "train-000000.tar")
    metas = {key: s["meta"] for key, s in samples.items()}
    assert set(metas) == {"odd", "rotated", "vfr", "gray", "h264", "mjpeg", "vp9"}
    assert (metas["odd"]["width"], metas["odd"]["height"], metas["odd"]["orig_width"]) == (32, 24, 63)
    assert (metas["rotated"]["width"], metas["rotated"]["height"]) == (24, 32)
    assert (metas["rotated"]["orig_width"], metas["rotated"]["orig_height"]) == (48, 64)
    assert [counter_value(f) for f in samples["vfr"]["frames"]] == list(range(6))
    assert Image.open(BytesIO(samples["gray"]["frames"][0])).mode == "RGB"
    assert all(m["num_frames"] == 5 for k, m in metas.items() if k != "vfr")


# --- every dataset format, end to end ------------------------------------------------------------------------


def _jpeg(value: int) -> bytes:
    buffer = BytesIO()
    Image.fromarray(np.full((20, 30, 3), value * 8, np.uint8)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_ssv2_end_to_end_with_unlabeled_test_split(tmp_path):
    require_encoder("libvpx-vp9")
    (tmp_path / "something-something-v2-labels.json").write_text(json.dumps({"Pushing something": "0"}))
    (tmp_path / "something-something-v2-test.json").write_text(json.dumps([{"id": "11"}, {"id": "12"}]))
    for video_id in ("11", "12"):
        make_video(tmp_path / "20bn-something-something-v2" / f"{video_id}.webm", frames=3, codec="libvpx-vp9")
    out = tmp_path / "shards"
    assert run_shard("--dataset", "ssv2", "--src", str(tmp_path), "--output", str(out), "--split", "test",
                     "--short-side", "0", "--workers", "1").exit_code == 0
    metas = [s["meta"] for s in samples_in(out / "test-000000.tar").values()]
    assert sorted((m["key"], m["label"], m["label_name"], m["dataset"]) for m in metas) == [
        ("11", -1, None, "ssv2"), ("12", -1, None, "ssv2")]
    assert read_manifest(out / "test.json").classes == ["Pushing something"]


def test_jester_frames_are_copied_without_reencoding(tmp_path):
    (tmp_path / "jester-v1-labels.csv").write_text("Swiping Left\nSwiping Right\n")
    (tmp_path / "jester-v1-train.csv").write_text("101;Swiping Right\n102;Swiping Left\n")
    shipped = {}
    for video_id, count in (("101", 4), ("102", 3)):
        folder = tmp_path / "20bn-jester-v1" / video_id
        folder.mkdir(parents=True)
        shipped[video_id] = [_jpeg(i) for i in range(count)]
        for i, data in enumerate(shipped[video_id], start=1):
            (folder / f"{i:05d}.jpg").write_bytes(data)
    out = tmp_path / "shards"
    done = run_shard("--dataset", "jester", "--src", str(tmp_path), "--output", str(out), "--workers", "1")
    assert done.exit_code == 0
    samples = samples_in(out / "train-000000.tar")
    assert samples["101"]["frames"] == shipped["101"]          # byte for byte: no re-encoding
    assert samples["101"]["meta"]["label_name"] == "Swiping Right" and samples["101"]["meta"]["fps"] == 12.0
    assert read_manifest(out / "train.json").decode["short_side"] == 0

    resized = tmp_path / "resized"
    assert run_shard("--dataset", "jester", "--src", str(tmp_path), "--output", str(resized), "--short-side", "10",
                     "--workers", "1").exit_code == 0
    meta = samples_in(resized / "train-000000.tar")["102"]["meta"]
    assert (meta["width"], meta["height"], meta["num_frames"]) == (15, 10, 3)


def test_diving48_trims_by_frame_number(tmp_path):
    (tmp_path / "Diving48_vocab.json").write_text(json.dumps([["Back", "15som", "05Twis", "FREE"]]))
    (tmp_path / "Diving48_V2_train.json").write_text(json.dumps(
        [{"vid_name": "dive_00001", "label": 0, "start_frame": 2, "end_frame": 7}]))
    make_video(tmp_path / "rgb" / "dive_00001.mp4", frames=10, content="counter")
    out = tmp_path / "shards"
    assert run_shard("--dataset", "diving48", "--src", str(tmp_path), "--output", str(out), "--short-side", "0",
                     "--workers", "1").exit_code == 0
    sample = samples_in(out / "train-000000.tar")["dive_00001"]
    assert [counter_value(f) for f in sample["frames"]] == [2, 3, 4, 5, 6]
    assert (sample["meta"]["start_frame"], sample["meta"]["end_frame"]) == (2, 7)
    assert sample["meta"]["label_name"] == "Back 15som 05Twis FREE"


def test_kinetics_and_mit_end_to_end_and_val_reuses_train_classes(tmp_path):
    (tmp_path / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                        "zumba,aaa,0,10,train\nabseiling,bbb,5,15,train\n")
    (tmp_path / "validate.csv").write_text("label,youtube_id,time_start,time_end,split\nzumba,ccc,1,11,val\n")
    for label, stem in (("zumba", "aaa_000000_000010"), ("abseiling", "bbb_000005_000015"),
                        ("zumba", "ccc_000001_000011")):
        make_video(tmp_path / "videos" / label / f"{stem}.mp4", frames=3)
    out = tmp_path / "shards"
    for split in ("train", "val"):
        assert run_shard("--dataset", "kinetics400", "--src", str(tmp_path), "--output", str(out), "--split", split,
                         "--short-side", "16", "--workers", "1").exit_code == 0
    assert read_manifest(out / "val.json").classes == ["abseiling", "zumba"]   # not just ["zumba"]
    assert samples_in(out / "val-000000.tar")["ccc_000001_000011"]["meta"]["label"] == 1

    mit = tmp_path / "mit"
    mit.mkdir()
    (mit / "moments_categories.txt").write_text("aiming,0\nclapping,1\n")
    (mit / "trainingSet.csv").write_text("clapping/c1.mp4,clapping,3,0\n")
    make_video(mit / "training" / "clapping" / "c1.mp4", frames=3)
    assert run_shard("--dataset", "mit", "--src", str(mit), "--output", str(mit / "shards"), "--short-side", "16",
                     "--workers", "1").exit_code == 0
    meta = samples_in(mit / "shards" / "train-000000.tar")["clapping_c1"]["meta"]
    assert (meta["label"], meta["source"]) == (1, "training/clapping/c1.mp4")


def test_missing_label_file_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(shard, ["--dataset", "ssv2", "--src", str(tmp_path), "--output", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert f"expected something-something-v2-labels.json in {tmp_path}" in result.output


# --- resume ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many_videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many")
    videos = {f"v{i:02d}.mp4": (f"c{i % 3}", {"frames": 20, "size": (96, 72)}) for i in range(20)}
    return csv_dataset(root, videos)


def test_resume_after_an_interruption_keeps_finished_shards(many_videos, tmp_path):
    out = tmp_path / "shards"
    command = [sys.executable, "-m", "sifar.cli.tools", "shard", "--dataset", "csv", "--src", str(many_videos),
               "--output", str(out), "--short-side", "72", "--samples-per-shard", "2", "--workers", "1",
               "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not (out / "train-000001.tar").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "the shard run did not produce two shards in time"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "train.json").exists(), "the run finished before it could be interrupted"
    kept = sorted(p.name for p in out.glob("train-*.tar"))
    stamps = {name: (out / name).stat().st_mtime_ns for name in kept}
    kept_keys = {key for name in kept for key in samples_in(out / name)}
    assert len(kept) >= 2 and len(kept_keys) == 2 * len(kept)

    result = run_shard("--dataset", "csv", "--src", str(many_videos), "--output", str(out), "--short-side", "72",
                       "--samples-per-shard", "2", "--workers", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert f"kept {len(kept_keys)} videos in {len(kept)} finished shards" in result.output
    assert f"decoded {20 - len(kept_keys)} videos" in result.output
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == stamps      # untouched
    manifest = read_manifest(out / "train.json")
    all_keys = [key for s in manifest.shards for key in samples_in(out / s.name)]
    assert sorted(all_keys) == [f"v{i:02d}" for i in range(20)]                       # each once
    assert manifest.num_samples == 20 and [s.name for s in manifest.shards][:len(kept)] == kept
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_resume_refuses_other_settings_and_fresh_runs_replace_old_shards(counter_videos, tmp_path):
    out = tmp_path / "shards"
    base = ["--dataset", "csv", "--src", str(counter_videos), "--output", str(out), "--workers", "1"]
    assert run_shard(*base, "--short-side", "0", "--samples-per-shard", "1").exit_code == 0
    assert len(list(out.glob("train-*.tar"))) == 6
    refused = CliRunner().invoke(shard, [*base, "--short-side", "16", "--resume", "--no-progress"])
    assert refused.exit_code == 1 and "cannot resume" in refused.output
    assert run_shard(*base, "--short-side", "16", "--samples-per-shard", "10").exit_code == 0
    assert sorted(p.name for p in out.glob("train-*.tar")) == ["train-000000.tar"]
    assert read_manifest(out / "train.json").num_samples == 6


def test_boxes_of_a_csv_list_travel_into_the_samples_scaled_trimmed_and_checked(tmp_path):
    """Boxes in a ``path,label,boxes`` list reach each sample's JSON in pixels of the stored frames; a video
    with more frames than boxes fails with a reason and the run goes on."""
    make_video(tmp_path / "a.mp4", frames=6, size=(64, 48), content="counter")
    make_video(tmp_path / "long.mp4", frames=8, size=(64, 48), content="counter")
    boxes = [[2 * i, 4, 2 * i + 11, 21] for i in range(5)] + [None]
    (tmp_path / "train.csv").write_text(
        f'path,label,boxes\na.mp4,walk,"{json.dumps(boxes)}"\nlong.mp4,walk,"{json.dumps(boxes)}"\n')
    out = tmp_path / "shards"
    result = run_shard("--dataset", "csv", "--src", str(tmp_path), "--output", str(out), "--short-side", "24",
                       "--workers", "1", "--max-failures", "0.5")
    assert result.exit_code == 0, result.output
    (meta,) = [sample["meta"] for sample in samples_in(out / "train-000000.tar").values()]
    assert (meta["width"], meta["height"], meta["num_frames"]) == (32, 24, 6)
    # scaled by 1/2, widened to whole pixels: [2i, 4, 2i + 11, 21] -> [i, 2, ceil(i + 5.5), ceil(10.5)]
    assert meta["boxes"] == [[i, 2, i + 6, 11] for i in range(5)] + [None]
    errors = (out / "train-errors.jsonl").read_text()
    assert "long.mp4" in errors and "6 object boxes" in errors


def part_command(src: Path, out: Path, part: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sifar.cli.tools", "shard", "--dataset", "csv", "--src", str(src), "--output",
            str(out), "--short-side", "72", "--samples-per-shard", "2", "--workers", "1", "--no-progress",
            "--num-parts", "3", "--part", str(part), *extra]


def split_samples(out: Path, split: str = "train") -> dict[str, tuple[int, list[bytes]]]:
    """key -> (label, frame bytes) over the shards the split's manifest lists; a key twice fails."""
    samples: dict[str, tuple[int, list[bytes]]] = {}
    for info in read_manifest(out / f"{split}.json").shards:
        for key, sample in samples_in(out / info.name).items():
            assert key not in samples, f"{key} twice"
            samples[key] = (sample["meta"]["label"], sample["frames"])
    return samples


def test_parts_on_separate_processes_merge_into_the_split_one_run_makes(many_videos, tmp_path):
    """Three parts at once, one killed mid-way and resumed, merged: the samples of one plain run, once each."""
    parts = tmp_path / "parts"
    processes = [subprocess.Popen(part_command(many_videos, parts, k), cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for k in range(3)]
    first_shard = parts / "train.part-0000-of-0003-000000.tar"
    deadline = time.monotonic() + 60
    while not first_shard.exists() and processes[0].poll() is None:
        assert time.monotonic() < deadline, "part 0 wrote no shard in time"
        time.sleep(0.01)
    processes[0].send_signal(signal.SIGKILL)
    for process in processes:
        process.wait(timeout=120)
    assert [p.returncode for p in processes[1:]] == [0, 0]
    refused = CliRunner().invoke(merge, [str(parts)])
    assert refused.exit_code == 1 and "parts 0 of 3 have no manifest" in refused.output
    resumed = subprocess.run(part_command(many_videos, parts, 0, "--resume"), cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0 and "kept " in resumed.stdout, resumed.stdout + resumed.stderr
    merged = CliRunner().invoke(merge, [str(parts)])
    assert merged.exit_code == 0 and "train: 20 videos" in merged.output and "of 3 parts" in merged.output

    whole = tmp_path / "whole"
    assert run_shard("--dataset", "csv", "--src", str(many_videos), "--output", str(whole), "--short-side", "72",
                     "--samples-per-shard", "2", "--workers", "2").exit_code == 0
    assert split_samples(parts) == split_samples(whole)   # keys, labels and frame bytes; each once
    manifest, plain = read_manifest(parts / "train.json"), read_manifest(whole / "train.json")
    assert (manifest.classes, manifest.num_samples, manifest.num_frames) == (
        plain.classes, plain.num_samples, plain.num_frames)
    assert (parts / "train-errors.jsonl").read_text() == ""
    loader = build_loader(parts, ClipSettings(8, 32), LoaderSettings(batch_size=4, workers=0), split="train",
                          training=False)
    assert sorted(key for batch in loader for key in batch.keys) == sorted(split_samples(whole))


def test_part_options_and_merge_refusals(many_videos, tmp_path):
    no_part = CliRunner().invoke(shard, ["--dataset", "csv", "--src", str(many_videos), "--output", str(tmp_path),
                                         "--num-parts", "3"])
    assert no_part.exit_code == 2 and "--num-parts 3 needs --part (0 to 2)" in no_part.output
    beyond = CliRunner().invoke(shard, ["--dataset", "csv", "--src", str(many_videos), "--output", str(tmp_path),
                                        "--num-parts", "3", "--part", "3"])
    assert beyond.exit_code == 2 and "3 is not one of the parts 0..2" in beyond.output
    nothing = CliRunner().invoke(merge, [str(tmp_path)])
    assert nothing.exit_code == 1 and "no parts of it there" in nothing.output
    (tmp_path / "train.part-0000-of-0002.json").write_text("{}")
    (tmp_path / "train.part-0001-of-0003.json").write_text("{}")
    mixed = CliRunner().invoke(merge, [str(tmp_path)])
    assert mixed.exit_code == 1 and "cut [2, 3] ways are mixed" in mixed.output
