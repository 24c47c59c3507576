"""The reference classifier that learns nothing: every synthetic class is decidable from its frames in order."""

import numpy as np
import pytest
from click.testing import CliRunner

from sifar.cli.tools import main as sifar_tools
from sifar.data.sampling import eval_indices
from sifar.data.synth import CLASSES, SynthConfig, make_dataset, render_clip
from sifar.data.synth_reference import classify_clip, evaluate_split, twin


def test_twins_pair_every_class_with_its_reversal():
    assert {name: twin(name) for name in ("move_right", "shrink", "rotate_cw", "appear")} == {
        "move_right": "move_left", "shrink": "grow", "rotate_cw": "rotate_ccw", "appear": "disappear"}
    assert all(twin(twin(name)) == name and twin(name) != name for name in CLASSES)


@pytest.mark.parametrize("size", [32, 64, 112])
@pytest.mark.parametrize("class_name", CLASSES)
def test_names_every_class_of_clear_clips_and_the_twin_when_reversed(class_name, size):
    for seed in range(6):
        clip = render_clip(class_name, np.random.default_rng((size, seed)), 16, size, size)
        frames = clip.frames[eval_indices(16, 8)[0]]
        assert classify_clip(frames, clip.background) == class_name, seed
        assert classify_clip(frames[::-1], clip.background) == twin(class_name), seed


def test_refuses_frames_that_do_not_fit_the_background():
    clip = render_clip("grow", np.random.default_rng(0), 4, 32, 32)
    with pytest.raises(ValueError, match="background"):
        classify_clip(clip.frames[:, :16], clip.background)
    with pytest.raises(ValueError, match="T >= 2"):
        classify_clip(clip.frames[:1], clip.background)


def test_names_the_videos_of_a_made_split_as_sharding_decodes_them(tmp_path):
    """Real H.264 videos, decoded to JPEG frames as sharding stores them; the CLI reports the same."""
    make_dataset(SynthConfig(out=tmp_path, videos=40, frames=16, width=64, height=64, val_fraction=0.5, workers=2),
                 progress=False)
    report = evaluate_split(tmp_path, "val", num_frames=8)
    assert sum(report.total.values()) == 20 and set(report.total) == set(CLASSES)
    assert report.accuracy == 100.0 and report.reversed_twin_rate == 100.0
    result = CliRunner().invoke(sifar_tools, ["synth-reference", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "on 20 val videos" in result.output and "top-1 100.0%" in result.output
    assert "rotate_ccw" in result.output


def test_command_names_a_folder_that_synth_did_not_make(tmp_path):
    result = CliRunner().invoke(sifar_tools, ["synth-reference", str(tmp_path)])
    assert result.exit_code == 1 and "synth.json not found" in result.output
