"""tools/cam_study.py: boxes carried into sifar-eval's centre view, and the pointing-game study on real shards
of `sifar-tools synth` data with a tiny checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from shard_files import write_split

from sifar.checkpoint import load_trained, save_checkpoint
from sifar.cli.tools import main as sifar_tools
from sifar.data import ClipSettings, LoaderSettings, build_loader
from sifar.data.manifest import read_manifest
from sifar.data.synth import mask_box
from sifar.data.transforms import resize_short_side, spatial_crops
from sifar.models.settings import ModelSettings, build_model, resolve_clip
from tools.cam_study import GAP, LABEL_HEIGHT, centre_view_box, held_out_clips
from tools.cam_study import main as cam_study

FRAME = 32  # the tiny model's frame side


@pytest.mark.parametrize("height, width, size", [(40, 48, 32), (48, 40, 32), (64, 64, 64), (96, 128, 32)])
def test_boxes_follow_the_resize_and_the_centre_crop(height, width, size):
    """A box drawn into a stored frame, put through sifar-eval's resize and centre crop, lands where the
    box mapping says: the mapped box holds the drawn one's pixels and is at most a pixel wider per side."""
    boxes = [(10, 8, 30, 20), (0, 0, width, height), (width - 9, height - 7, width, height), (3, 5, 9, 25)]
    for box in boxes:
        frame = torch.zeros(1, height, width, 3, dtype=torch.uint8)
        frame[0, box[1]:box[3], box[0]:box[2]] = 255
        resized = resize_short_side(frame, size)
        view = spatial_crops(resized, size, 1)[0, 0]
        mapped = centre_view_box(box, (height, width), tuple(resized.shape[-2:]), size)
        drawn = mask_box((view[0] > 127).numpy())
        if drawn is None:  # cropped away, or thinner than a pixel of the view
            assert mapped is None or min(mapped[2] - mapped[0], mapped[3] - mapped[1]) <= 1, (box, mapped)
            continue
        assert mapped is not None, box
        assert mapped[0] <= drawn[0] <= mapped[0] + 1 and mapped[1] <= drawn[1] <= mapped[1] + 1, (box, mapped, drawn)
        assert mapped[2] - 1 <= drawn[2] <= mapped[2] and mapped[3] - 1 <= drawn[3] <= mapped[3], (box, mapped, drawn)


def test_box_mapping_is_exact_clipped_and_none_outside_the_crop():
    # 40x48 -> 32x38 (x scale 38/48, y scale 32/40), then columns 3..35: x 10 -> 7.9 -> 7 - 3, 20 -> 15.8 -> 16 - 3
    assert centre_view_box([10, 10, 20, 20], (40, 48), (32, 38), 32) == [4, 8, 13, 16]
    assert centre_view_box([0, 0, 48, 40], (40, 48), (32, 38), 32) == [0, 0, 32, 32]  # clipped to the view
    assert centre_view_box([0, 0, 3, 10], (40, 48), (32, 38), 32) is None  # left of the crop
    assert centre_view_box([45, 0, 48, 10], (40, 48), (32, 38), 32) is None  # right of the crop
    assert centre_view_box(None, (40, 48), (32, 38), 32) is None  # the object is invisible
    assert centre_view_box([1, 2, 3, 4], (64, 64), (64, 64), 64) == [1, 2, 3, 4]  # no resize, no crop


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """The val split (6 videos of 3 classes, 12 frames of 48x40, boxes in each sample's JSON) of a
    `sifar-tools synth` dataset, sharded as the README says."""
    root = tmp_path_factory.mktemp("synth")
    runner = CliRunner()
    for args in (["synth", "--output", root / "videos", "--videos", "12", "--classes", "3", "--frames", "12",
                  "--size", "48x40", "--val-fraction", "0.5", "--workers", "1", "--no-progress"],
                 ["shard", "--dataset", "csv", "--src", root / "videos", "--output", root / "shards", "--split", "val",
                  "--short-side", "0", "--workers", "1", "--no-progress"]):
        result = runner.invoke(sifar_tools, [str(arg) for arg in args])
        assert result.exit_code == 0, result.output
    return root / "shards"


def write_checkpoint(path: Path, classes: list[str]) -> Path:
    """A checkpoint as training writes it (the parts that rebuild the model) of a SIFAR-N-6 on 32px frames."""
    torch.manual_seed(0)
    settings = ModelSettings("SIFAR-N-6")
    clip = resolve_clip(settings, ClipSettings(frame_size=FRAME))
    model = build_model(settings, clip, len(classes), load_weights=False)
    save_checkpoint({"model": model.state_dict(), "model_settings": asdict(settings), "clip": asdict(clip),
                     "classes": classes}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(shards, tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("run") / "last.pt", read_manifest(shards / "val.json").classes)


def test_the_clips_are_the_centre_views_sifar_eval_sees(shards, checkpoint):
    trained = load_trained(checkpoint)
    loader = build_loader(shards, trained.clip, LoaderSettings(batch_size=6, workers=0), training=False, split="val",
                          clips=1, crops=1)
    evaluated = {key: (frames[0], int(label)) for batch in loader
                 for frames, label, key in zip(batch.frames, batch.labels, batch.keys)}
    clips = list(held_out_clips(trained, str(shards), 4))
    assert len(clips) == 4 and len(evaluated) == 6
    for clip in clips:
        assert torch.equal(clip.frames, evaluated[clip.key][0]) and clip.label == evaluated[clip.key][1]
        assert len(clip.boxes) == 8 and all(box is None or 0 <= box[0] < box[2] <= FRAME for box in clip.boxes)


def test_the_study_writes_its_scores_and_strips(shards, checkpoint, tmp_path):
    out = tmp_path / "cam"
    result = CliRunner().invoke(cam_study, ["--checkpoint", str(checkpoint), "--shards", str(shards), "--clips", "5",
                                            "--batch-size", "2", "--device", "cpu", "--output", str(out),
                                            "--stages", "1,-1,3"])
    assert result.exit_code == 0, result.output
    assert "stage 1 (4x4 positions a frame), ablation: pointing" in result.output
    assert "stage 3 (1x1 positions a frame), gradcam: pointing" in result.output
    results = json.loads((out / "cam_results.json").read_text())
    classes = read_manifest(shards / "val.json").classes
    assert (results["model"], results["layout"], results["checkpoint"]) == ("SIFAR-N-6", "3x3", str(checkpoint))
    assert results["clips"] == 5 and 0 <= results["top1"] <= 100 and results["split"] == "val"
    assert results["head_pools_positions"] is True and "--stages 1,3" in results["command"]
    assert list(results["stages"]) == ["1", "3"]  # -1 is the last, stage 3: counted once
    assert [results["stages"][s]["positions_per_frame"] for s in ("1", "3")] == ["4x4", "1x1"]
    for found in results["stages"].values():
        assert list(found["methods"]) == ["ablation", "gradcam"]
        for scores in found["methods"].values():
            assert scores["clips"] == 5 and 0 < scores["frames_counted"] <= 5 * 8
            assert 0 <= scores["pointing_accuracy"] <= 100 and 0 < scores["random_baseline"] < 100
            assert set(scores["per_class"]) <= set(classes)
            assert sum(c["frames_counted"] for c in scores["per_class"].values()) == scores["frames_counted"]
            assert sum(c["clips"] for c in scores["per_class"].values()) == 5
    last, finer = (results["stages"][s]["methods"]["gradcam"] for s in ("3", "1"))
    assert last["random_baseline"] == finer["random_baseline"]  # the same frames and boxes
    rows = results["strips"]["clips"]
    assert (results["strips"]["method"], results["strips"]["stage"]) == ("ablation", 1)
    assert set(rows) == set(results["stages"]["1"]["methods"]["ablation"]["per_class"])
    with Image.open(out / "cam_strips.png") as strips:  # 32px frames upscaled 3x to 96px
        assert strips.size == (8 * (96 + GAP) - GAP, len(rows) * (LABEL_HEIGHT + 96 + GAP) - GAP)


def study(checkpoint: Path, shards: Path, *args: str):
    return CliRunner().invoke(cam_study, ["--checkpoint", str(checkpoint), "--shards", str(shards), "--device", "cpu",
                                          *args])


def test_the_study_refuses_unknown_methods_other_classes_and_shards_without_boxes(shards, checkpoint, tmp_path):
    out = ["--output", str(tmp_path / "out")]
    unknown = study(checkpoint, shards, "--methods", "ablation,lime", *out)
    assert unknown.exit_code == 2 and "ablation, gradcam" in unknown.output and "'ablation,lime'" in unknown.output
    for stages in ("a,1", ","):
        bad = study(checkpoint, shards, "--stages", stages, *out)
        assert bad.exit_code == 2 and "comma-separated stage numbers" in bad.output and repr(stages) in bad.output
    missing = study(checkpoint, shards, "--stages", "0,4", *out)
    assert missing.exit_code == 1 and "has 4 stages (0 to 3, or -1 for the last), got 4" in missing.output
    write_split(tmp_path / "plain", "val", shards=1, per_shard=2, classes=3)  # class0..class2, no boxes
    other = study(checkpoint, tmp_path / "plain", *out)
    assert other.exit_code == 1 and "the class lists differ" in other.output
    plain_checkpoint = write_checkpoint(tmp_path / "plain.pt", ["class0", "class1", "class2"])
    no_boxes = study(plain_checkpoint, tmp_path / "plain", *out)
    assert no_boxes.exit_code == 1 and "sample val0x0 carries no object boxes" in no_boxes.output
    assert not (tmp_path / "out").exists()
