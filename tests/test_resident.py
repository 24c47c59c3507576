"""The resident training split (``LoaderSettings(resident=True)``): the streaming loader's sampling and
augmentation, drawn from frames decoded once and held on the training device."""

import random

import pytest
import torch

from shard_files import Sample, frame_index, write_shard, write_split
from sifar.data import ClipSettings, LoaderSettings, build_loader
from sifar.data.decoders import JpegDecoder
from sifar.data.manifest import Manifest, ShardInfo, write_manifest
from sifar.data.resident import ResidentLoader
from sifar.data.sampling import train_indices
from sifar.data.shard_reader import read_shard
from sifar.data.transforms import draw_crop_jitter, train_transform
from sifar.train import train
from sifar.train_config import OptimSettings, TrainConfig
from sifar.models.settings import ModelSettings

SIZE = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("resident")
    write_split(root, "train", shards=2, per_shard=5, num_frames=12)
    return root


def resident(folder, flip="on", batch_size=4, steps=3, seed=0, **clip):
    clip = ClipSettings(**{"num_frames": 8, "frame_size": SIZE, "flip": flip, **clip})
    return build_loader(folder, clip, LoaderSettings(batch_size=batch_size, resident=True), training=True, seed=seed,
                        steps_per_epoch=steps, device=torch.device("cpu"))


def test_resident_batches_are_the_workers_clips_within_one_grey_level(folder):
    """Each clip is the stored frames the sampling draws, cropped, flipped and resized as the workers do
    (their uint8 resize against float-then-round here: at most one grey level apart)."""
    loader = resident(folder)
    assert isinstance(loader, ResidentLoader) and len(loader) == 3
    decoded = {s.key: JpegDecoder("pillow").decode_many(s.frames) for shard in sorted(folder.glob("train-*.tar"))
               for s in read_shard(shard)}
    rng = random.Random("0:0:0:resident")  # the loader's stream for seed 0, epoch 0, rank 0
    order = rng.sample(range(10), 10)
    batches = list(loader)
    assert [b.frames.shape for b in batches] == [(4, 8, 3, SIZE, SIZE)] * 3
    keys = [key for batch in batches for key in batch.keys]
    assert keys[:10] == [loader.split.keys[v] for v in order]  # one pass over the split, shuffled
    rng = random.Random("0:0:0:resident")
    rng.sample(range(10), 10)
    flips = 0
    for position in range(10):
        indices = train_indices(12, 8, rng)
        jitter = draw_crop_jitter(rng, True)
        flips += jitter.flip
        expected = train_transform(decoded[keys[position]][indices], jitter, SIZE)
        got = batches[position // 4].frames[position % 4]
        assert (got.int() - expected.int()).abs().max() <= 1
        assert [frame_index(f[2].float().mean()) for f in got] == indices
    assert 0 < flips < 10
    assert loader.stats == {"samples": 12, "resident_videos": 10}
    assert torch.equal(batches[0].labels, torch.tensor([loader.split.labels[v] for v in order[:4]]))


def test_resident_epochs_draw_different_batches(folder):
    """(Mid-epoch resume is tested for both loaders in tests/test_loader.py.)"""
    loader = resident(folder, steps=4)
    first = [b.keys for b in loader]
    loader.set_epoch(1)
    assert [b.keys for b in loader] != first


def test_resident_split_pads_short_videos_and_samples_within_each(tmp_path):
    samples = [Sample(f"v{i}", i % 2, num_frames) for i, num_frames in enumerate([12, 5, 9, 3])]
    frames = write_shard(tmp_path / "train-000000.tar", samples)
    write_manifest(Manifest("synth", "train", ["class0", "class1"],
                            [ShardInfo("train-000000.tar", 4, frames, 1)]), tmp_path / "train.json")
    loader = resident(tmp_path, flip="off", num_frames=4)
    assert loader.split.frames.shape[:2] == (4, 12) and loader.split.num_frames == [12, 5, 9, 3]
    for batch in loader:
        for key, clip in zip(batch.keys, batch.frames):
            stored = dict(zip(loader.split.keys, loader.split.num_frames))[key]
            assert all(0 <= frame_index(f[2].float().mean()) < stored for f in clip)


def test_resident_refuses_frames_of_two_sizes_and_evaluation(tmp_path, folder):
    samples = [Sample("a", 0, 4), Sample("b", 1, 4, width=48)]
    frames = write_shard(tmp_path / "train-000000.tar", samples)
    write_manifest(Manifest("synth", "train", ["class0", "class1"],
                            [ShardInfo("train-000000.tar", 2, frames, 1)]), tmp_path / "train.json")
    with pytest.raises(ValueError, match="frames of one size.*sample 1 has 48x48, the first 64x48"):
        resident(tmp_path)
    clip = ClipSettings(num_frames=8, frame_size=SIZE)
    evaluation = build_loader(folder, clip, LoaderSettings(resident=True), split="train", training=False)
    assert not isinstance(evaluation, ResidentLoader)  # evaluation streams whatever the setting


def test_training_on_a_resident_split_runs_and_resumes_like_streaming(tmp_path, folder):
    def config(output, max_steps=None):
        return TrainConfig(shards=str(folder), output=str(output), device="cpu", steps_per_epoch=3,
                           max_steps=max_steps, model=ModelSettings("SIFAR-N-6", drop_path=0.0),
                           clip=ClipSettings(num_frames=8, frame_size=SIZE, flip="off"),
                           loader=LoaderSettings(batch_size=2, workers=0, resident=True),
                           optim=OptimSettings(epochs=2, warmup_epochs=0, mixup=0, cutmix=0))

    whole = train(config(tmp_path / "whole"))
    assert whole["steps"] == 6 and whole["loader"]["resident_videos"] == 10
    train(config(tmp_path / "cut", max_steps=4))
    train(config(tmp_path / "cut"))
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
