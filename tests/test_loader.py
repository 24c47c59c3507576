import io
import multiprocessing
import os
import tarfile
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from shard_files import Sample, frame_index, serve_folder, write_shard, write_split
from test_decoders import LIBJPEG, needs_region_decoder
from sifar.cli.tools import main as sifar_tools
from sifar.data import ClipSettings, LoaderSettings, build_loader
from sifar.data.decoders import JpegDecoder
from sifar.data.batch_memory import Batch, BatchMemory, Shipment, free_when_dropped
from sifar.data.loader_stats import BadDataWarning
from sifar.data.manifest import Manifest, ShardInfo, write_manifest
from sifar.data.sampling import eval_indices
from sifar.layout import grid_shape, to_super_image

SIZE = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_split(root, "train", shards=3, per_shard=4, num_frames=12)
    write_split(root, "val", shards=5, per_shard=3, num_frames=10)
    write_split(root, "few", shards=2, per_shard=5, num_frames=10)
    return root


CLIP_FIELDS = ("num_frames", "frame_size", "sampling", "stride")
LOADER_FIELDS = ("batch_size", "workers", "shuffle_buffer", "decoder", "shard_retries", "retry_delay", "resident")


def loader_for(source, split="train", flip=None, training=None, **options):
    """build_loader with the tests' small clip; options name ClipSettings, LoaderSettings or build_loader
    arguments (``flip``: True / False forces it; ``training``: by default, the train split's stream is a
    training one and any other split's an evaluation one: the tests' shorthand, which build_loader leaves to
    its callers)."""
    options = {"num_frames": 8, "frame_size": SIZE, "batch_size": 4, "workers": 0, **options}
    clip = ClipSettings(**{k: options.pop(k) for k in CLIP_FIELDS if k in options},
                        flip={None: "auto", True: "on", False: "off"}[flip])
    settings = LoaderSettings(**{k: options.pop(k) for k in LOADER_FIELDS if k in options})
    training = split == "train" if training is None else training
    return build_loader(source, clip, settings, training=training, split=split, **options)


def frame_indices(clip: torch.Tensor) -> list[int]:
    """Frame indices of a (T, C, H, W) clip from the blue channel the test shards encode them in."""
    return [frame_index(frame[2].float().mean()) for frame in clip]


def keys_of(loader) -> list[str]:
    return [key for batch in loader for key in batch.keys]


def test_training_batches_are_uint8_clips_labels_and_keys(folder):
    loader = loader_for(folder)
    batches = list(loader)
    assert len(batches) == len(loader) == loader.steps_per_epoch == 12 // 4
    for batch in batches:
        assert isinstance(batch, Batch)
        frames, labels, keys = batch
        assert frames.shape == (4, 8, 3, SIZE, SIZE) and frames.dtype == torch.uint8
        assert labels.dtype == torch.int64 and all(0 <= int(label) < 3 for label in labels)
        assert len(keys) == 4 and all(isinstance(key, str) for key in keys)
        for clip in frames:
            indices = frame_indices(clip)
            assert indices == sorted(indices) and len(set(indices)) == 8  # uniform: one frame per segment
    assert loader.num_classes == 3 and loader.classes == ["class0", "class1", "class2"]
    assert loader.stats["samples"] == 12


def crop_signature(clip: torch.Tensor) -> torch.Tensor:
    """The red and green channels: the spatial ramps, identical in every frame of an aligned clip."""
    return clip[:, :2].float()


def is_flipped(clip: torch.Tensor) -> bool:
    red = clip[0, 0].float()
    return bool(red[:, 0].mean() > red[:, -1].mean())


def test_augmentation_keeps_all_frames_of_a_clip_aligned(folder):
    clips = torch.cat([batch.frames for batch in loader_for(folder, steps_per_epoch=6)])
    for clip in clips:
        signature = crop_signature(clip)
        assert (signature - signature[0]).abs().max() <= 6  # same crop in every frame (JPEG noise aside)
        assert len({is_flipped(clip[t:t + 1]) for t in range(8)}) == 1  # same flip in every frame
    flips = [is_flipped(clip) for clip in clips]
    assert 0 < sum(flips) < len(flips)
    widths = {round(float(crop_signature(c)[0, 0, 0].max() - crop_signature(c)[0, 0, 0].min())) for c in clips}
    assert len(widths) > 1  # crops differ between clips


def test_flip_is_off_for_datasets_where_left_and_right_matter(tmp_path):
    write_split(tmp_path, "train", shards=1, per_shard=8, num_frames=8, dataset="ssv2")
    clips = torch.cat([b.frames for b in loader_for(tmp_path, steps_per_epoch=4, batch_size=8)])
    assert not any(is_flipped(clip) for clip in clips)
    forced = torch.cat([b.frames for b in loader_for(tmp_path, steps_per_epoch=4, batch_size=8, flip=True)])
    assert any(is_flipped(clip) for clip in forced)


def test_evaluation_returns_clips_by_crops_views_in_time_order(folder):
    loader = loader_for(folder, "val", clips=2, crops=3)
    batches = list(loader)
    assert len(batches) == len(loader)
    frames = batches[0].frames
    assert frames.shape == (4, 6, 8, 3, SIZE, SIZE) and frames.dtype == torch.uint8
    expected = eval_indices(10, 8, clips=2)
    for view in range(6):
        assert frame_indices(frames[0, view]) == expected[view // 3]
    lefts = [float(frames[0, view, 0, 0, :, 0].float().mean()) for view in range(3)]
    assert lefts[0] < lefts[1] < lefts[2]  # top-left, centre, bottom-right crops of a landscape frame
    assert Counter(keys_of(loader)) == Counter(f"val{s}x{i}" for s in range(5) for i in range(3))


def test_evaluation_with_one_view_keeps_the_views_dimension(folder):
    frames = next(iter(loader_for(folder, "val"))).frames
    assert frames.shape == (4, 1, 8, 3, SIZE, SIZE)


@pytest.mark.parametrize("split, samples", [("val", 15), ("few", 10)])  # 5 shards: by shard; 2 shards: by sample
def test_evaluation_sees_every_sample_once_across_two_ranks_of_two_workers(folder, split, samples):
    seen = []
    for rank in range(2):
        loader = loader_for(folder, split, rank=rank, world_size=2, workers=2, batch_size=2)
        batches = list(loader)
        assert len(batches) == len(loader)
        seen += [key for batch in batches for key in batch.keys]
    assert len(seen) == samples and len(set(seen)) == samples


def test_training_gives_every_rank_the_same_number_of_batches(folder):
    for steps in (None, 5):
        counts = []
        for rank in range(2):
            loader = loader_for(folder, rank=rank, world_size=2, workers=2, batch_size=2,
                                steps_per_epoch=steps)
            counts.append([len(batch.keys) for batch in loader])
        assert counts[0] == counts[1] == [2] * (steps or 12 // (2 * 2))


@pytest.mark.parametrize("shards, per_shard, world_size, workers", [
    (1, 12, 1, 2),  # one shard, two loader workers
    (1, 12, 2, 0),  # one shard, two ranks
    (2, 2, 4, 0),   # shards smaller than the workers: split by the sample's place in the split, not in its shard
])
def test_training_with_fewer_shards_than_workers_reads_every_sample_once(tmp_path, shards, per_shard, world_size,
                                                                         workers):
    """Unsplit, every worker would read the same shard from its start and the shard's tail would never be seen."""
    samples = write_split(tmp_path, "train", shards=shards, per_shard=per_shard, num_frames=4)
    keys = []
    for rank in range(world_size):
        keys += keys_of(loader_for(tmp_path, rank=rank, world_size=world_size, workers=workers,
                                   batch_size=1, shuffle_buffer=0))
    assert Counter(keys) == Counter(sample.key for sample in samples)


def test_same_arguments_give_the_same_batches_and_epochs_differ(folder):
    first, second = (loader_for(folder, workers=2, batch_size=2, steps_per_epoch=6, seed=3) for _ in range(2))
    run_a, run_b = list(first), list(second)
    assert [b.keys for b in run_a] == [b.keys for b in run_b]
    assert all(torch.equal(a.frames, b.frames) for a, b in zip(run_a, run_b))
    first.set_epoch(1)
    assert [b.keys for b in first] != [b.keys for b in run_a]
    first.set_epoch(0)
    assert [b.keys for b in first] == [b.keys for b in run_a]


@pytest.mark.parametrize("options", [{"workers": 0}, {"workers": 2}, {"resident": True}])
def test_resuming_mid_epoch_gives_exactly_the_rest_of_the_epoch(folder, options):
    loader = loader_for(folder, batch_size=2, steps_per_epoch=7, shuffle_buffer=6, **options)
    loader.set_epoch(2)
    whole = list(loader)
    loader.set_epoch(2, start_batch=3)
    assert len(loader) == 4
    rest = list(loader)
    assert [b.keys for b in rest] == [b.keys for b in whole[3:]]
    assert all(torch.equal(a.frames, b.frames) for a, b in zip(rest, whole[3:]))
    assert len(list(loader)) == 7  # the resume point applies to one iteration only


def damaged_split(root) -> list[str]:
    """val shards with one broken sample of every kind, a missing shard and a truncated one; good keys."""
    good = [Sample(f"ok{i}", i % 3, 10) for i in range(4)]
    bad = [Sample("corrupt", 0, 10), Sample("gap", 1, 10), Sample("nojson", 2, 10), Sample("badjson", 0, 10)]
    write_shard(root / "val-000000.tar", good[:2] + bad,
                broken={**{f"corrupt.{t:06d}.jpg": b"not a jpeg" for t in range(10)},
                        "badjson.json": b'{"key": "badjson", "label": 0, "num_frames": "ten"}'},
                drop={"gap.000005.jpg", "nojson.json"})
    write_shard(root / "val-000002.tar", good[2:])
    whole = root / "val-000002.tar"
    whole.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2 + 700])  # ends inside ok3's frames
    infos = [ShardInfo(f"val-00000{i}.tar", n, 10 * n, 1) for i, n in ((0, 6), (1, 3), (2, 2))]
    write_manifest(Manifest("synth", "val", ["a", "b", "c"], infos), root / "val.json")  # 000001 is missing
    return ["ok0", "ok1", "ok2"]


def test_bad_samples_and_shards_are_survived_and_counted(tmp_path):
    good = damaged_split(tmp_path)
    loader = loader_for(tmp_path, "val", retry_delay=0)
    with pytest.warns(BadDataWarning) as caught:
        keys = keys_of(loader)
    assert keys == good
    assert loader.stats == {"samples": 3, "bad_samples": 3, "missing_frames": 1, "shard_retries": 2,
                            "failed_shards": 1, "broken_shards": 1}
    messages = " ".join(str(w.message) for w in caught)
    for expected in ("corrupt", "gap", "nojson", "badjson", "val-000001.tar", "val-000002.tar"):
        assert expected in messages


def test_a_broken_shard_is_counted_once_however_many_workers_read_it(tmp_path):
    damaged_split(tmp_path)
    loader = loader_for(tmp_path / "val-000002.tar", "val", workers=2, retry_delay=0)  # each reads half of it
    assert keys_of(loader) == ["ok2"] and loader.stats["broken_shards"] == 1
    assert keys_of(loader) == ["ok2"] and loader.stats["broken_shards"] == 1  # and once over passes


def test_a_shard_cut_between_two_samples_is_reported_as_truncated(tmp_path):
    write_split(tmp_path, "val", shards=1, per_shard=4, num_frames=10)
    shard = tmp_path / "val-000000.tar"
    with tarfile.open(shard) as tar:
        third = next(m for m in tar.getmembers() if m.name == "val0x2.json").offset
    shard.write_bytes(shard.read_bytes()[:third])  # reads like a whole archive of two samples
    loader = loader_for(tmp_path, "val", retry_delay=0)
    with pytest.warns(BadDataWarning, match=f"stopped reading shard {shard} after 2 samples: {shard} is truncated: "
                                            f"it ends at byte {third} without tar's end-of-archive blocks"):
        assert keys_of(loader) == ["val0x0", "val0x1"]
    assert loader.stats["broken_shards"] == 1 and loader.shard_reads() == [(str(shard), 4, 2)]


def test_training_survives_bad_data_and_keeps_its_step_count(tmp_path):
    damaged_split(tmp_path)
    loader = loader_for(tmp_path, "val", training=True, steps_per_epoch=4, batch_size=2, workers=2,
                        retry_delay=0)
    batches = list(loader)  # the workers' warnings go to their stderr
    assert [len(b.keys) for b in batches] == [2] * 4
    assert set(key for b in batches for key in b.keys) <= {"ok0", "ok1", "ok2"}
    assert loader.stats["failed_shards"] >= 1 and loader.stats["bad_samples"] >= 1


def test_training_on_unreadable_shards_stops_instead_of_spinning(tmp_path):
    write_split(tmp_path, "train", shards=2, per_shard=2, num_frames=4)
    for name in ("train-000000.tar", "train-000001.tar"):
        os.remove(tmp_path / name)
    with pytest.warns(BadDataWarning), pytest.raises(RuntimeError, match="no usable sample in the last 10 shards"):
        list(loader_for(tmp_path, retry_delay=0, shard_retries=0))


def test_the_caller_says_which_stream_it_wants_whatever_the_split_is_called(tmp_path):
    """No stream is inferred from a split's name: evaluating the train split was once a resampled training
    stream because of such a default."""
    samples = write_split(tmp_path, "train", shards=2, per_shard=3, num_frames=8)
    with pytest.raises(TypeError, match="training"):
        build_loader(tmp_path, ClipSettings(8, SIZE), split="train")
    evaluation = loader_for(tmp_path, "train", training=False)
    assert sorted(key for batch in evaluation for key in batch.keys) == sorted(sample.key for sample in samples)


def test_a_wrong_source_fails_when_the_loader_is_built(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_loader(tmp_path / "nowhere", ClipSettings(8, 32), training=True)


@pytest.mark.parametrize("options, message", [
    ({"clips": 2}, "clips and crops are evaluation views"),
    ({"split": "val", "crops": 2}, "crops: 1"),
    ({"rank": 2, "world_size": 2}, "rank 2 is outside a world of 2"),
    ({"sampling": "sparse"}, "sampling: 'sparse' is not one of uniform, dense"),
    ({"decoder": "opencv"}, "decoder: 'opencv' is not one of auto, libjpeg"),
    ({"split": "val", "start_batch": 1}, "start_batch resumes a training epoch"),
    ({"start_batch": 99}, "start_batch must be within 0..3"),
])
def test_invalid_options_are_refused(folder, options, message):
    options = {"split": "train", **options}
    with pytest.raises(ValueError, match=message):
        loader_for(folder, **options)


def test_training_without_a_manifest_needs_steps_per_epoch(tmp_path):
    write_split(tmp_path, "train", shards=1, per_shard=2, num_frames=4, manifest=False)
    with pytest.raises(ValueError, match="pass steps_per_epoch"):
        loader_for(tmp_path)
    assert len(list(loader_for(tmp_path, steps_per_epoch=2, batch_size=1))) == 2


def test_rank_and_world_size_come_from_the_environment(folder, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    loader = loader_for(folder, batch_size=2)
    assert (loader.config.rank, loader.config.world_size, loader.steps_per_epoch) == (1, 3, 2)


def batch_frames(folder, split: str, decoder: str) -> list[torch.Tensor]:
    return [batch.frames.int() for batch in loader_for(folder, split, decoder=decoder, steps_per_epoch=3)]


@pytest.mark.parametrize("split", ["train", "val"])
def test_pillow_and_simplejpeg_decode_alike(folder, split):
    """Training too: simplejpeg decodes the clips it flips as BGR and mirrors them by reversing bytes,
    Pillow decodes RGB and mirrors pixels; the same seed gives the same crops and flips."""
    pairs = zip(batch_frames(folder, split, "pillow"), batch_frames(folder, split, "simplejpeg"), strict=True)
    assert all((a - b).abs().max() <= 2 for a, b in pairs)


@needs_region_decoder
@pytest.mark.parametrize("split", ["train", "val"])
def test_libjpeg_decoding_only_the_crops_gives_the_batches_of_whole_frame_decoding(folder, split):
    pairs = zip(batch_frames(folder, split, "libjpeg"), batch_frames(folder, split, "simplejpeg"), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


@pytest.mark.parametrize("decoder", [LIBJPEG, "simplejpeg", "pillow"])
def test_large_stored_frames_decode_in_draft_mode_to_the_same_picture(tmp_path, decoder):
    write_shard(tmp_path / "val-000000.tar", [Sample("big", 0, 3, width=320, height=240)])
    frames = next(iter(loader_for(tmp_path / "val-000000.tar", "val", num_frames=3, decoder=decoder))).frames
    with tarfile.open(tmp_path / "val-000000.tar") as tar:
        jpeg = tar.extractfile("big.000001.jpg").read()
    full = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    reference = torch.from_numpy(np.array(Image.fromarray(full).resize((43, SIZE), Image.BILINEAR)))
    centre = reference[:, 5:5 + SIZE].permute(2, 0, 1).int()
    assert (frames[0, 0, 1].int() - centre).abs().float().mean() < 3
    decoded = JpegDecoder(decoder).decode_many([jpeg], draft_short_side=SIZE)[0]
    assert decoded.shape == (60, 80, 3)  # 1/4: short side >= 32


def test_shards_stream_over_http_like_local_files(folder):
    local = list(loader_for(folder, "val"))
    with serve_folder(folder) as url:
        remote = list(loader_for(f"{url}/val.json", "val", workers=2))
    assert Counter(keys_of(remote)) == Counter(keys_of(local))
    by_key = {key: clip for batch in local for key, clip in zip(batch.keys, batch.frames)}
    assert all(torch.equal(clip, by_key[key]) for batch in remote for key, clip in zip(batch.keys, batch.frames))


def test_shards_stream_from_s3(folder, monkeypatch):
    s3fs = pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            monkeypatch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        bucket = s3fs.S3FileSystem()
        bucket.mkdir("shards")
        for name in ["few.json", "few-000000.tar", "few-000001.tar"]:
            bucket.put(str(folder / name), f"shards/data/{name}")
        remote = keys_of(loader_for("s3://shards/data", "few", workers=2))
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
    assert Counter(remote) == Counter(keys_of(loader_for(folder, "few")))


def test_round_trip_synth_shard_loader_super_image(tmp_path):
    """sifar-tools synth -> shard -> loader -> to_super_image gives the video's frames back in time order."""
    runner = CliRunner()
    videos, shards = tmp_path / "videos", tmp_path / "shards"
    for args in (["synth", "--output", str(videos), "--videos", "2", "--classes", "2", "--frames", "12",
                  "--size", "64x48", "--val-fraction", "0", "--workers", "1", "--no-progress"],
                 ["shard", "--dataset", "csv", "--src", str(videos), "--output", str(shards), "--short-side", "0",
                  "--workers", "1", "--no-progress"]):
        result = runner.invoke(sifar_tools, args)
        assert result.exit_code == 0, result.output
    loader = loader_for(shards, training=False, frame_size=48, batch_size=2)
    batch = next(iter(loader))
    rows, cols = grid_shape(8)
    super_images = to_super_image(batch.frames[:, 0], rows, cols)  # (B, C, 3 * 48, 3 * 64 // 48 * 48)
    frames_of = stored_frames(shards)
    for key, image in zip(batch.keys, super_images):
        stored = frames_of[key]  # every frame of the video as the shard holds it, centre-cropped
        expected = eval_indices(len(stored), 8)[0]
        for cell in range(8):
            r, c = divmod(cell, cols)
            shown = image[:, r * 48:(r + 1) * 48, c * 48:(c + 1) * 48].float()
            distances = [float((shown - frame).abs().mean()) for frame in stored]
            assert int(np.argmin(distances)) == expected[cell]
        assert float(image[:, 2 * 48:, 2 * 48:].abs().max()) == 0  # the ninth cell is padding


def stored_frames(shards) -> dict[str, list[torch.Tensor]]:
    """key -> frames (C, 48, 48) decoded with Pillow straight from the shard: the answer to compare to."""
    frames: dict[str, list[torch.Tensor]] = {}
    for shard in sorted(shards.glob("train-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".jpg"):
                    key = member.name.split(".")[0]
                    picture = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                    array = torch.from_numpy(np.array(picture)).permute(2, 0, 1).float()
                    frames.setdefault(key, []).append(array[:, :, 8:56])  # 64x48: centre 48x48 crop
    return frames


def test_a_stream_that_breaks_off_is_read_on_from_where_it_broke(folder):
    local = keys_of(loader_for(folder, "val"))
    with serve_folder(folder, break_once={"val-000001.tar", "val-000003.tar"}) as url:
        loader = loader_for(f"{url}/val.json", "val", retry_delay=0)
        remote = keys_of(loader)
    assert remote == local
    assert loader.stats["shard_retries"] == 2 and loader.stats["broken_shards"] == 0


@pytest.mark.timeout(60)
def test_a_stalled_download_is_retried_then_counted_as_a_broken_shard(folder, monkeypatch):
    """The server sends half of val-000001.tar once and of val-000003.tar every time, then nothing: each
    stall ends after the read timeout, the shard is re-opened from the sample where it stalled, and the
    one that always stalls keeps what was read and is counted."""
    monkeypatch.setenv("SIFAR_READ_TIMEOUT", "0.5")
    local = keys_of(loader_for(folder, "val"))
    with serve_folder(folder, stall={"val-000001.tar": 1, "val-000003.tar": None}) as url:
        loader = loader_for(f"{url}/val.json", "val", retry_delay=0)
        with pytest.warns(BadDataWarning, match=r"stopped reading shard .*/val-000003.tar after 1 samples: .*"):
            remote = keys_of(loader)
    assert remote == [key for key in local if key not in ("val3x1", "val3x2")]
    assert loader.stats["shard_retries"] == 1 + 2 and loader.stats["broken_shards"] == 1


def test_batch_memory_hands_a_buffer_out_again_only_once_it_is_marked_free():
    free = multiprocessing.RawArray("b", [1, 1])
    memory = BatchMemory(free, 0, 2, shared=True)
    (first, slot_a), (_, slot_b), (extra, slot_c) = (memory.take((2, 3)) for _ in range(3))
    assert (slot_a, slot_b, slot_c) == (0, 1, -1) and list(free) == [0, 0]
    assert first.is_shared() and extra.is_shared()  # shared memory reaches the main process without a copy
    free[0] = 1
    again, slot = memory.take((1, 3))  # a short last batch takes the front of the same buffer
    assert slot == 0 and again.data_ptr() == first.data_ptr() and free[0] == 0


def test_a_buffer_released_unshipped_is_handed_out_again():
    free = multiprocessing.RawArray("b", [1])
    memory = BatchMemory(free, 0, 1, shared=False)
    (first, slot), (_, none) = memory.take((2, 3)), memory.take((2, 3))
    assert (slot, none, free[0]) == (0, -1, 0)
    memory.release(none)  # fresh memory: nothing to give back
    memory.release(slot)
    again, slot_again = memory.take((2, 3))
    assert free[0] == 0 and slot_again == 0 and again.data_ptr() == first.data_ptr()


@pytest.mark.parametrize("decoder", [LIBJPEG, "simplejpeg"])
def test_good_data_loads_without_a_warning(folder, decoder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a deprecation warned by a library on every decoded clip
        assert len(list(loader_for(folder, decoder=decoder))) == 3


def test_a_buffer_is_marked_free_once_the_last_view_of_its_batch_is_dropped():
    free = multiprocessing.RawArray("b", [0])
    (batch,) = free_when_dropped([Shipment(torch.zeros(2, 3, dtype=torch.uint8), [4, 7], ["a", "b"], 0)], free)
    assert isinstance(batch, Batch) and torch.equal(batch.labels, torch.tensor([4, 7]))  # a list in flight
    view = batch.frames[1:]
    del batch
    assert free[0] == 0
    del view
    assert free[0] == 1


@pytest.mark.parametrize("split, steps", [("train", 10), ("val", None)])
def test_batches_the_consumer_holds_keep_their_frames_while_workers_reuse_memory(tmp_path, split, steps):
    for shard in range(2):  # samples of different lengths: no two evaluation batches hold the same frames
        write_shard(tmp_path / f"{split}-{shard:06d}.tar",
                    [Sample(f"s{shard}x{i}", 0, 8 + 8 * shard + i) for i in range(8)])
    options = {"workers": 2, "batch_size": 2, "prefetch_factor": 1, "steps_per_epoch": steps}
    held = list(loader_for(tmp_path, split, **options))  # every batch kept: workers must not refill any
    copied = [batch.frames.clone() for batch in loader_for(tmp_path, split, **options)]  # each let go at once
    unpooled = list(loader_for(tmp_path, split, reuse_memory=False, **options))
    assert len(held) == len(copied) == len(unpooled) > 2 * (1 + 2)  # more batches than the workers' buffers
    for kept, copy, fresh in zip(held, copied, unpooled):
        assert torch.equal(kept.frames, copy) and torch.equal(kept.frames, fresh.frames)
