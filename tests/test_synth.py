from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sifar.cli.data_commands import synth
from sifar.data.ffmpeg import DecodeSettings, decode_video
from sifar.data.formats import ReadRequest, read_split
from sifar.data.synth import (
    CLASSES, MOTIONS, SynthConfig, make_dataset, plan_object, plan_videos, render_clip, split_videos,
)

TWINS = [(a, b) for a, (motion, backwards) in CLASSES.items() if not backwards
         for b, (other, other_backwards) in CLASSES.items() if other == motion and other_backwards]


def test_every_class_has_a_time_reversed_twin():
    assert len(TWINS) == 5 and {c for pair in TWINS for c in pair} == set(CLASSES)


@pytest.mark.parametrize("forward, backward", TWINS)
def test_twins_differ_only_in_frame_order(forward, backward):
    for seed in range(3):
        ahead = render_clip(forward, np.random.default_rng(seed), 8, 40, 48)
        behind = render_clip(backward, np.random.default_rng(seed), 8, 40, 48)
        assert ahead.shape == (8, 40, 48, 3) and ahead.dtype == np.uint8
        np.testing.assert_array_equal(ahead, behind[::-1])
        assert not np.array_equal(ahead[0], ahead[-1])      # something happens over the clip


@pytest.mark.parametrize("motion", MOTIONS)
def test_only_the_named_attribute_changes_and_it_grows(motion):
    obj = plan_object(motion, np.random.default_rng(3), 10, 64, 80, np.zeros(3, np.float32))
    attributes = {"x": obj.x, "y": obj.y, "radius": obj.radius, "angle": obj.angle, "alpha": obj.alpha}
    changing = MOTIONS[motion].attribute
    for name, values in attributes.items():
        if name == changing:
            assert np.all(np.diff(values) >= 0) and values[-1] > values[0]
        else:
            assert np.ptp(values) == 0
    # The object's centre stays inside the frame.
    assert obj.x.min() > 0 and obj.x.max() < 80 and obj.y.min() > 0 and obj.y.max() < 64


def test_videos_vary_in_look():
    clips = [render_clip("move_right", np.random.default_rng(seed), 2, 32, 32) for seed in range(6)]
    backgrounds = {tuple(c[0, 0, 0]) for c in clips}
    assert len(backgrounds) == 6


def test_plan_is_balanced_and_split_keeps_every_class():
    config = SynthConfig(out=Path("unused"), videos=40, classes=("grow", "shrink", "appear", "disappear"))
    videos = plan_videos(config)
    assert [v.class_name for v in videos[:5]] == ["grow", "shrink", "appear", "disappear", "grow"]
    train, val = split_videos(videos, 0.2, seed=0)
    assert len(train) == 32 and len(val) == 8
    assert {v.class_name for v in val} == {v.class_name for v in train} == set(config.classes)
    assert split_videos(videos, 0.2, seed=0) == (train, val)


def test_make_dataset_writes_decodable_videos_and_csv_lists(tmp_path):
    config = SynthConfig(out=tmp_path, videos=20, frames=6, width=32, height=24, workers=2)
    train_list, val_list = make_dataset(config, progress=False)
    lines = train_list.read_text().splitlines() + val_list.read_text().splitlines()
    assert len(lines) == 20 and len(val_list.read_text().splitlines()) == 10   # 1 of 2 per class in val
    path, label = lines[0].split(",")
    assert path.startswith(f"videos/{label}/") and path.endswith(".mp4")
    decoded = decode_video(tmp_path / path, DecodeSettings(short_side=0))
    assert (len(decoded.frames), decoded.width, decoded.height, decoded.fps) == (6, 32, 24, 12.0)
    assert not list(tmp_path.rglob("*.tmp"))
    index = read_split("csv", ReadRequest(tmp_path, "train"))
    assert index.classes == sorted(CLASSES) and all(r.path is not None for r in index.records)


def test_synth_command(tmp_path):
    result = CliRunner().invoke(synth, ["--out", str(tmp_path), "--videos", "4", "--classes", "2", "--frames", "3",
                                       "--size", "32x24", "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "shard --dataset csv" in result.output
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["move_left", "move_right"]
    odd = CliRunner().invoke(synth, ["--out", str(tmp_path), "--size", "33", "--no-progress"])
    assert odd.exit_code == 1 and "even" in odd.output
    unknown = CliRunner().invoke(synth, ["--out", str(tmp_path), "--classes", "grow,jump"])
    assert unknown.exit_code == 2 and "unknown jump" in unknown.output


@pytest.mark.parametrize("kwargs, message", [
    ({"classes": ("fly",)}, "unknown synthetic classes"),
    ({"videos": 3}, "at least one video per class"),
    ({"frames": 1}, "at least 2 frames"),
    ({"width": 31}, "even"),
    ({"val_fraction": 1.0}, "val_fraction"),
])
def test_config_is_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SynthConfig(out=Path("unused"), **kwargs)
