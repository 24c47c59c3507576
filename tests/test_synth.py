from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sifar.cli.data_commands import synth
from sifar.data.ffmpeg import DecodeSettings, decode_video
from sifar.data.formats import ReadRequest, read_split
from sifar.data.formats.csv_list import read_entries
from sifar.data.synth import (
    CLASSES, MOTIONS, SHAPE_CENTROIDS, SHAPES, TURNING_SHAPES, SynthConfig, make_dataset, plan_object, plan_videos,
    read_config, render_clip, split_videos,
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
        assert ahead.frames.shape == (8, 40, 48, 3) and ahead.frames.dtype == np.uint8
        np.testing.assert_array_equal(ahead.frames, behind.frames[::-1])
        assert ahead.boxes == behind.boxes[::-1]
        assert not np.array_equal(ahead.frames[0], ahead.frames[-1])      # something happens over the clip


@pytest.mark.parametrize("motion", MOTIONS)
def test_only_the_named_attribute_changes_and_it_grows(motion):
    obj = plan_object(motion, np.random.default_rng(3), 10, 64, 80, np.zeros((2, 3), np.float32))
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
    clips = [render_clip("move_right", np.random.default_rng(seed), 2, 32, 32).frames for seed in range(6)]
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


def test_make_dataset_writes_decodable_videos_lists_with_boxes_and_its_settings(tmp_path):
    config = SynthConfig(out=tmp_path, videos=20, frames=6, width=32, height=24, workers=2)
    train_list, val_list = make_dataset(config, progress=False)
    assert train_list.read_text().splitlines()[0] == "path,label,boxes"
    train, val = read_entries(train_list), read_entries(val_list)
    assert len(train) + len(val) == 20 and len(val) == 10   # 1 of 2 per class in val
    entry = train[0]
    assert entry.video.startswith(f"videos/{entry.label}/") and entry.video.endswith(".mp4")
    decoded = decode_video(tmp_path / entry.video, DecodeSettings(short_side=0))
    assert (len(decoded.frames), decoded.width, decoded.height, decoded.fps) == (6, 32, 24, 12.0)
    assert len(entry.boxes) == 6
    assert not list(tmp_path.rglob("*.tmp"))
    index = read_split("csv", ReadRequest(tmp_path, "train"))
    assert index.classes == sorted(CLASSES) and all(r.path is not None and r.boxes for r in index.records)
    assert read_config(tmp_path) == replace(config, workers=read_config(tmp_path).workers)


def test_read_config_names_a_folder_synth_did_not_make(tmp_path):
    with pytest.raises(FileNotFoundError, match="synth.json not found"):
        read_config(tmp_path)
    (tmp_path / "synth.json").write_text('{"videos": 3, "colour": 1}')
    with pytest.raises(ValueError, match="not a synth settings file"):
        read_config(tmp_path)


@pytest.mark.parametrize("shape", TURNING_SHAPES)
def test_turning_shapes_look_different_at_every_angle(shape):
    """No rotational symmetry: the shape turned by any angle from 10 to 350 degrees overlaps itself by
    less than 90% (intersection over union), so a turn and the opposite turn never look alike."""
    v, u = np.mgrid[-1.5:1.5:201j, -1.5:1.5:201j]
    centre_u, centre_v = SHAPE_CENTROIDS[shape]
    still = SHAPES[shape](u + centre_u, v + centre_v)
    for degrees in range(10, 351, 5):
        a = np.radians(degrees)
        turned = SHAPES[shape](np.cos(a) * u + np.sin(a) * v + centre_u, -np.sin(a) * u + np.cos(a) * v + centre_v)
        assert (still & turned).sum() / (still | turned).sum() < 0.9, degrees


@pytest.mark.parametrize("class_name", CLASSES)
def test_boxes_hold_every_object_pixel_of_every_frame(class_name):
    fading = CLASSES[class_name][0] == "opacity"
    for seed in range(4):
        clip = render_clip(class_name, np.random.default_rng(seed), 12, 48, 64)
        changed = clip.frames != np.clip(clip.background + 0.5, 0, 255).astype(np.uint8)
        for frame, box in zip(changed.any(axis=-1), clip.boxes):
            if box is None:   # fully transparent: the frame is the background
                assert not frame.any()
                continue
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 48
            rows, cols = np.nonzero(frame)
            if not fading:   # an opaque object changes every pixel it covers: the box is tight
                assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == box
            assert x0 <= cols.min(initial=x0) and cols.max(initial=x0) < x1
            assert y0 <= rows.min(initial=y0) and rows.max(initial=y0) < y1


def test_synth_command(tmp_path):
    result = CliRunner().invoke(synth, ["--output", str(tmp_path), "--videos", "4", "--classes", "2", "--frames", "3",
                                       "--size", "32x24", "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "shard --dataset csv" in result.output
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["move_left", "move_right"]
    odd = CliRunner().invoke(synth, ["--output", str(tmp_path), "--size", "33", "--no-progress"])
    assert odd.exit_code == 1 and "even" in odd.output
    unknown = CliRunner().invoke(synth, ["--output", str(tmp_path), "--classes", "grow,jump"])
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
