"""Class activation maps (sifar.cam) and ``sifar-predict --cam``, on tiny real models and generated videos."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn
from video_files import make_video

from sifar.cam import (
    head_pools_positions,
    UnknownClassError,
    ablation_weights,
    box_share,
    class_activation_map,
    class_activation_maps,
    class_index,
    denormalized,
    frame_cells,
    frame_heatmaps,
    frame_mask,
    gradcam_weights,
    pointing_hits,
    upsampled_heatmap,
    weighted_map,
    write_cam,
)
from sifar.checkpoint import save_checkpoint
from sifar.cli.predict import main as predict_main
from sifar.data.transforms import normalize
from sifar.layout import to_super_image
from sifar.models import SuperImageClassifier, create_model

PATCH = 8  # the colour model's feature stride
FRAME = 16  # its frame side: 2x2 features per frame
RED_FRAME, BLUE_FRAME = 4, 1  # cells (1, 1) and (0, 1) of its 2x3 grid


class ColourPatches(nn.Module):
    """A tiny backbone with hand-set weights: per 8x8 patch, channel 0 is the mean red, 1 the mean blue,
    2 the mean green; class "red" scores red minus blue, class "blue" the opposite, green counts for nothing."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, 3, kernel_size=PATCH, stride=PATCH, bias=False)
        self.fc = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.patches.weight.zero_()
            for channel, colour in enumerate((0, 2, 1)):
                self.patches.weight[channel, colour] = 1 / PATCH**2
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.patches(x).relu()

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def colour_model() -> SuperImageClassifier:
    """5 frames of 16px on a 2x3 grid (one padding cell); pixels enter as x / 255 (mean 0, std 1)."""
    return SuperImageClassifier(ColourPatches(), num_frames=5, grid=(2, 3), frame_size=FRAME, name="colour",
                                mean=(0.0,) * 3, std=(1.0,) * 3).eval()


def evidence_clip() -> torch.Tensor:
    """(1, 5, 3, 16, 16) uint8 on dim green: a red 16x8 patch in frame 4, a smaller blue 8x8 one in frame 1."""
    frames = torch.zeros(1, 5, 3, FRAME, FRAME, dtype=torch.uint8)
    frames[:, :, 1] = 40
    frames[0, RED_FRAME, 0, 8:16, 0:16] = 255  # the bottom half of frame 4
    frames[0, BLUE_FRAME, 2, 0:8, 8:16] = 255  # the top-right quarter of frame 1
    return frames


def hottest_cell(heatmap: torch.Tensor, rows: int, cols: int) -> int:
    """Row-major index of the grid cell with the most heat."""
    cells = heatmap.view(rows, heatmap.shape[0] // rows, cols, heatmap.shape[1] // cols).mean((1, 3))
    return int(cells.flatten().argmax())


@pytest.mark.parametrize("method", ["ablation", "gradcam"])
def test_map_peaks_where_the_evidence_is(method):
    model, frames = colour_model(), evidence_clip()
    inputs = normalize(frames, model.mean, model.std)
    top = class_activation_map(model, inputs, ["red", "blue"], method=method, chunk=2)
    assert (top.class_name, top.method) == ("red", method)  # twice the red area: red is the top class
    assert top.heatmap.shape == (2 * FRAME, 3 * FRAME) and top.heatmap.max() == 1 and top.heatmap.min() == 0
    assert hottest_cell(top.heatmap, 2, 3) == RED_FRAME
    y, x = divmod(int(top.heatmap.argmax()), top.heatmap.shape[1])
    assert (FRAME + 8 <= y < 2 * FRAME) and (FRAME <= x < 2 * FRAME)  # inside the red patch
    # "blue" has a negative score here; its map must still show the blue evidence, not the red
    blue = class_activation_map(model, inputs, ["red", "blue"], target=1, method=method)
    assert blue.class_name == "blue" and hottest_cell(blue.heatmap, 2, 3) == BLUE_FRAME
    y, x = divmod(int(blue.heatmap.argmax()), blue.heatmap.shape[1])
    assert y < 8 and FRAME + 8 <= x < 2 * FRAME


def test_the_image_is_the_super_image_the_model_saw():
    model = create_model("SIFAR-N-6", 3, frame_size=32)
    frames = torch.randint(0, 256, (1, 8, 3, 32, 32), dtype=torch.uint8)
    image = denormalized(model.super_image(normalize(frames, model.mean, model.std))[0], model.mean, model.std)
    assert torch.equal(image[:, :64], to_super_image(frames, 3, 3)[0, :, :64])  # the rows of real frames
    padding = image[:, 64:, 64:]  # the 9th cell: normalized zeros, i.e. the mean colour
    expected = torch.tensor([round(m * 255) for m in model.mean], dtype=torch.uint8)
    assert torch.equal(padding, expected.view(3, 1, 1).expand_as(padding))


def test_per_frame_images_are_the_grid_cells_in_time_order(tmp_path):
    model = colour_model()
    frames = torch.zeros(1, 5, 3, FRAME, FRAME, dtype=torch.uint8)
    for t in range(5):
        frames[0, t, 0] = 50 * t + 10  # a distinct red level per frame
    cam = class_activation_map(model, normalize(frames, model.mean, model.std), ["red", "blue"])
    cells = frame_cells(cam.image, cam.grid, cam.num_frames)
    assert [int(cell[0].float().mean()) for cell in cells] == [10, 60, 110, 160, 210]
    written = write_cam(cam, tmp_path / "cam.png", tmp_path / "frames")
    overlaid = np.asarray(Image.open(tmp_path / "cam.png"))
    frame_files = sorted((tmp_path / "frames").iterdir())
    assert written == [tmp_path / "cam.png", *frame_files] and len(frame_files) == 5  # no file for the padding
    for t, path in enumerate(frame_files):
        row, col = divmod(t, 3)
        cell = overlaid[row * FRAME:(row + 1) * FRAME, col * FRAME:(col + 1) * FRAME]
        assert np.array_equal(np.asarray(Image.open(path)), cell), path.name


def test_unknown_class_names_are_a_clear_error():
    assert class_index(["move_left", "move_right"], "move_right") == 1
    with pytest.raises(UnknownClassError, match="'move_rihgt'.*did you mean move_right"):
        class_index(["move_left", "move_right"], "move_rihgt")
    with pytest.raises(UnknownClassError, match="'zzz' among the model's 7 classes.*include a, b, c, d, e$"):
        class_index(list("abcdefg"), "zzz")


def test_batched_ablation_equals_one_channel_at_a_time():
    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", 5, frame_size=32).eval()  # Swin: final LayerNorm in the head
    with torch.no_grad():
        features = model.feature_map(torch.randn(1, 8, 3, 32, 32))
    head = model.head_from_feature_map
    single = ablation_weights(head, features, target=2, chunk=1)
    assert single.shape == (features.shape[1],)
    for chunk in (7, 100, features.shape[1]):
        assert torch.allclose(ablation_weights(head, features, 2, chunk), single, atol=1e-5), chunk
    with torch.no_grad():  # the definition, by hand, for one channel
        ablated = features.clone()
        ablated[:, 9] = 0
        score, drop = head(features)[0, 2], head(ablated)[0, 2]
    assert single[9].item() == pytest.approx(((score - drop) / score.abs()).item(), rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="at least one channel"):
        ablation_weights(head, features, 2, chunk=0)


@pytest.mark.parametrize("name, pools", [("SIFAR-N-6", True), ("SIFAR-R18", True), ("SIFAR-VGG-T", False)])
def test_a_head_with_weights_per_position_is_found_and_its_maps_warned_about(name, pools):
    """Channel-weighted maps assume a head that pools positions (Swin, ResNet); SIFAR-VGG-T's fully connected
    head weighs each position (docs/CAM.md: its maps point no better than chance)."""
    torch.manual_seed(0)
    model = create_model(name, 4).eval()
    frames = torch.randn(1, 8, 3, model.frame_size, model.frame_size)
    with torch.no_grad():
        assert head_pools_positions(model, model.feature_map(frames)) is pools
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        class_activation_map(model, frames, list("abcd"), method="gradcam")
    assert [str(w.message).split(":")[0] for w in caught] == ([] if pools else [
        f"{model.name}'s head weighs each position of the feature map separately (it does not pool them)"])


@pytest.mark.parametrize("name", ["SIFAR-N-6", "SIFAR-R18"])
def test_swin_and_resnet_configs(name):
    torch.manual_seed(0)
    model = create_model(name, 4, frame_size=32).eval()
    frames = torch.randn(1, 8, 3, 32, 32)
    with torch.no_grad():
        features = model.feature_map(frames)
        assert features.shape[-2:] == (3, 3)  # (B, C, h, w) whatever the backbone's layout
        assert torch.allclose(model.head_from_feature_map(features), model(frames), atol=1e-5)
    for method in ("ablation", "gradcam"):
        cam = class_activation_map(model, frames, list("abcd"), target=3, method=method, chunk=64)
        assert cam.heatmap.shape == (96, 96) and cam.image.shape == (3, 96, 96) and cam.class_name == "d"
        assert torch.isfinite(cam.heatmap).all() and 0 <= cam.heatmap.min() <= cam.heatmap.max() <= 1
        assert not cam.heatmap[64:, 64:].any()  # the 9th cell holds no frame


def test_padding_cells_are_masked_out_of_the_map_and_its_scaling():
    """One feature per cell of a 2x3 grid of 5 frames, the largest by far in the padding cell: the padding is
    0, the frames still reach 1, and the padding's heat does not bleed into the frame beside it."""
    raw = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    frames = frame_mask((2, 3), 5, (32, 48))
    assert frames.sum() == 5 * 16 * 16 and not frames[16:, 32:].any()
    heat = upsampled_heatmap(raw, frames)
    assert not heat[16:, 32:].any()
    assert heat.max() == 1 and heat[frames].min() == 0
    y, x = divmod(int(heat.argmax()), 48)
    assert 16 <= y < 32 and 16 <= x < 28  # in frame 4 (cell (1, 1)), not at its edge beside the padding
    assert heat[24, 31] < heat[24, 24]  # frame 4's heat falls towards the padding instead of rising
    flat = upsampled_heatmap(torch.zeros(2, 3), frames)
    assert not flat.any()  # no heat stays no heat
    whole = upsampled_heatmap(raw, torch.ones(32, 48, dtype=torch.bool))  # a grid without padding: as before
    assert whole.max() == 1 and whole.min() == 0 and hottest_cell(whole, 2, 3) == 5


class PaddingDetector(ColourPatches):
    """The colour model plus a channel that fires on patches without green, which only padding patches are
    (the frames are on dim green), and that class "red" weighs 100 times more than red."""

    def __init__(self) -> None:
        super().__init__()
        colours = self.patches.weight.detach()
        self.patches = nn.Conv2d(3, 4, kernel_size=PATCH, stride=PATCH)
        self.fc = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.patches.weight.zero_()
            self.patches.bias.zero_()
            self.patches.weight[:3] = colours
            self.patches.weight[3, 1] = -1 / PATCH**2  # 0.1 - mean green: 0.1 on padding, below 0 on frames
            self.patches.bias[3] = 0.1
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 100.0], [-1.0, 1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("method", ["ablation", "gradcam"])
def test_a_model_map_whose_raw_peak_is_in_the_padding_still_reaches_1_in_a_frame(method):
    model = SuperImageClassifier(PaddingDetector(), num_frames=5, grid=(2, 3), frame_size=FRAME, name="padding",
                                 mean=(0.0,) * 3, std=(1.0,) * 3).eval()
    inputs = normalize(evidence_clip(), model.mean, model.std)
    with torch.no_grad():
        features = model.feature_map(inputs)
    raw = weighted_map(features, gradcam_weights(model.head_from_feature_map, features, 0))
    y, x = divmod(int(raw.argmax()), raw.shape[1])
    assert y >= 2 and x >= 4  # features (4, 6): the padding cell is rows 2-3, columns 4-5
    cam = class_activation_map(model, inputs, ["red", "blue"], target=0, method=method)
    assert not cam.heatmap[FRAME:, 2 * FRAME:].any() and cam.heatmap.max() == 1
    assert cam.heatmap[frame_mask((2, 3), 5, (2 * FRAME, 3 * FRAME))].min() == 0
    assert hottest_cell(cam.heatmap, 2, 3) == RED_FRAME


@pytest.mark.parametrize("name", ["SIFAR-N-6", "SIFAR-R18"])
def test_a_map_of_an_earlier_stage_is_grad_cam_of_that_stage_by_its_definition(name):
    """Grad-CAM of stage 1 by hand, from the full model's own forward and backward (a hook keeps the stage's
    output), equals the map drawn through ``later_stages``; its positions are 4x finer than the last stage's."""
    torch.manual_seed(0)
    model = create_model(name, 3, frame_size=32).eval()
    frames = torch.randn(1, 8, 3, 32, 32)
    kept = []
    hook = model.stages()[1].register_forward_hook(lambda _m, _a, out: kept.append(out.retain_grad() or out))
    try:
        model(frames)[0, 2].backward()
    finally:
        hook.remove()
    (output,) = kept
    nchw = (lambda t: t.permute(0, 3, 1, 2)) if name.startswith("SIFAR-N") else (lambda t: t)  # Swin: NHWC
    features, grads = nchw(output).detach(), nchw(output.grad)
    raw = weighted_map(features, grads[0].mean((1, 2)))
    expected = upsampled_heatmap(raw, frame_mask(model.grid, 8, (96, 96)))
    cam = class_activation_map(model, frames, list("abc"), target=2, method="gradcam", stage=1)
    assert cam.stage == 1 and raw.shape == (12, 12)  # 4x4 positions a 32-px frame (the last stage: 1x1)
    torch.testing.assert_close(cam.heatmap, expected, atol=1e-4, rtol=1e-4)
    last = class_activation_map(model, frames, list("abc"), target=2, method="ablation", stage=-1)
    assert last.stage == len(model.stages()) - 1
    with pytest.raises(ValueError, match="got 7"):
        class_activation_map(model, frames, list("abc"), stage=7)


def test_a_batch_of_maps_equals_the_maps_one_clip_at_a_time():
    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", 3, frame_size=32).eval()
    frames = torch.randn(3, 8, 3, 32, 32)
    for method in ("ablation", "gradcam"):
        batch = class_activation_maps(model, frames, list("abc"), [2, None, 0], method)
        for i, cam in enumerate(batch):
            alone = class_activation_map(model, frames[i:i + 1], list("abc"), [2, None, 0][i], method)
            assert (cam.class_index, cam.method) == (alone.class_index, method)
            assert torch.allclose(cam.heatmap, alone.heatmap, atol=1e-4) and torch.equal(cam.image, alone.image)
            assert torch.allclose(cam.probabilities, alone.probabilities, atol=1e-5)
            assert cam.probability == pytest.approx(float(alone.probabilities[alone.class_index]), abs=1e-5)
    assert batch[1].class_index == int(batch[1].probabilities.argmax())  # None: the clip's top class
    with pytest.raises(ValueError, match="2 target classes for 3 clips"):
        class_activation_maps(model, frames, list("abc"), [0, 1])


def test_frame_heatmaps_are_the_cells_in_time_order():
    model = colour_model()
    cam = class_activation_map(model, normalize(evidence_clip(), model.mean, model.std), ["red", "blue"])
    cam.heatmap = torch.arange(6.0).view(2, 1, 3, 1).expand(2, FRAME, 3, FRAME).reshape(2 * FRAME, 3 * FRAME)
    heat = frame_heatmaps(cam)
    assert heat.shape == (5, FRAME, FRAME)
    assert [float(frame.mean()) for frame in heat] == [0, 1, 2, 3, 4] and (heat == heat[:, :1, :1]).all()


def peaks(*points: tuple[int, int] | None, side: int = 8) -> torch.Tensor:
    """(T, side, side) heat, each frame 0 but for a peak of 1 at (y, x) over a faint 0.1 (None: all zeros)."""
    heat = torch.zeros(len(points), side, side)
    for frame, point in zip(heat, points):
        if point is not None:
            frame += 0.1
            frame[point] = 1
    return heat


def test_pointing_hits_on_hand_made_maps():
    heat = peaks((2, 3), (5, 5), (4, 4), None, (7, 7), (0, 0))
    boxes = [[3, 2, 4, 3],  # a 1x1 box exactly at the peak: its top-left corner is inclusive
             [0, 0, 5, 5],  # the peak sits on the exclusive right and bottom edges: a miss
             None,  # the object is invisible: not counted
             [0, 0, 8, 8],  # no heat anywhere in the frame: it points nowhere, a miss
             [6, 6, 8, 8],  # a box at the frame's bottom-right edge, the peak in its last pixel
             [1, 0, 8, 8]]  # the peak one pixel left of the box
    assert pointing_hits(heat, boxes) == [True, False, None, False, True, False]
    tie = torch.ones(1, 8, 8)  # every pixel is the maximum: the first in row-major order, (0, 0), points
    assert pointing_hits(tie, [[0, 0, 1, 1]]) == [True] and pointing_hits(tie, [[1, 0, 8, 8]]) == [False]
    with pytest.raises(ValueError, match="2 boxes for 6 frames"):
        pointing_hits(heat, boxes[:2])


def test_box_share_is_what_a_random_point_scores():
    assert box_share([0, 0, 8, 8], 8, 8) == 1
    assert box_share([2, 4, 6, 6], 8, 8) == pytest.approx(8 / 64)
    assert box_share([1, 1, 1, 5], 8, 8) == 0  # empty
    assert box_share([0, 0, 16, 8], 32, 16) == pytest.approx(0.25)  # height 32, width 16


def test_bad_requests_are_refused():
    model = colour_model()
    clip = normalize(evidence_clip(), model.mean, model.std)
    with pytest.raises(ValueError, match="unknown CAM method 'lime'"):
        class_activation_map(model, clip, ["red", "blue"], method="lime")
    with pytest.raises(ValueError, match="class index 2 is out of range for 2 classes"):
        class_activation_map(model, clip, ["red", "blue"], target=2)
    with pytest.raises(ValueError, match="one clip, got a batch of 2"):
        class_activation_map(model, clip.repeat(2, 1, 1, 1, 1), ["red", "blue"])
    averaging = create_model("SIFAR-N-6", 2, frame_size=32, frame_average=True)
    with pytest.raises(ValueError, match="frame averaging"):
        class_activation_map(averaging, torch.randn(1, 8, 3, 32, 32), ["a", "b"])


# sifar-predict --cam ------------------------------------------------------------------------------------------

CLASSES = ["move_left", "move_right", "grow"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint as training writes it (the parts prediction reads) of a SIFAR-N-6 on 32px frames."""
    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", len(CLASSES), frame_size=32)
    path = tmp_path_factory.mktemp("run") / "best.pt"
    save_checkpoint({"model": model.state_dict(), "classes": CLASSES,
                     "model_info": {"name": model.name, "num_frames": model.num_frames, "grid": list(model.grid),
                                    "frame_size": model.frame_size, "frame_embed": False}}, path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("videos") / "clip.mp4", frames=16, size=(48, 40))


def predict_cli(*args) -> object:
    return CliRunner().invoke(predict_main, [str(a) for a in args])


def test_predict_writes_the_map_and_one_image_per_frame(checkpoint, video, tmp_path):
    result = predict_cli(video, "--checkpoint", checkpoint, "--cam", tmp_path / "cam.png", "--cam-frames",
                         tmp_path / "frames", "--class", "grow", "--cam-batch", 7, "--crops", 1)
    assert result.exit_code == 0, result.output
    assert "ablation map of grow" in result.output and str(tmp_path / "cam.png") in result.output
    overlaid = np.asarray(Image.open(tmp_path / "cam.png"))
    assert overlaid.shape == (96, 96, 3)  # 3x3 cells of 32px
    frame_files = sorted((tmp_path / "frames").iterdir())
    assert [p.name for p in frame_files] == [f"frame_{t:03d}.png" for t in range(8)]
    for t, path in enumerate(frame_files):
        row, col = divmod(t, 3)
        assert np.array_equal(np.asarray(Image.open(path)), overlaid[row * 32:(row + 1) * 32, col * 32:(col + 1) * 32])


def test_predict_json_names_the_map(checkpoint, video, tmp_path):
    result = predict_cli(video, "--checkpoint", checkpoint, "--cam", tmp_path / "cam.png", "--cam-method", "gradcam",
                         "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["cam"]["method"] == "gradcam" and record["cam"]["files"] == [str(tmp_path / "cam.png")]
    assert record["cam"]["stage"] == 3  # the last of SIFAR-N-6's four
    assert record["cam"]["class"] in CLASSES and (tmp_path / "cam.png").is_file()


def test_predict_refuses_bad_cam_requests(checkpoint, video, tmp_path):
    unknown = predict_cli(video, "--checkpoint", checkpoint, "--cam", tmp_path / "cam.png", "--class", "grwo")
    assert unknown.exit_code == 2 and "Invalid value for --class" in unknown.output
    assert "no class named 'grwo'" in unknown.output and "did you mean grow" in unknown.output
    assert not (tmp_path / "cam.png").exists()
    two = predict_cli(video, video, "--checkpoint", checkpoint, "--cam", tmp_path / "cam.png")
    assert two.exit_code == 2 and "one video at a time, got 2" in two.output
    alone = predict_cli(video, "--checkpoint", checkpoint, "--class", "grow")
    assert alone.exit_code == 2 and "use it with --cam" in alone.output
    batch = predict_cli(video, "--checkpoint", checkpoint, "--cam", tmp_path / "cam.png", "--cam-batch", 0)
    assert batch.exit_code == 2 and "--cam-batch" in batch.output
    stage = predict_cli(video, "--checkpoint", checkpoint, "--cam", tmp_path / "cam.png", "--cam-stage", 4)
    assert stage.exit_code == 2 and "Invalid value for --cam-stage" in stage.output
    assert "has 4 stages (0 to 3, or -1 for the last), got 4" in " ".join(stage.output.split())
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    unwritable = predict_cli(video, "--checkpoint", checkpoint, "--cam", blocker / "cam.png")
    assert unwritable.exit_code == 1 and f"could not write the class activation map to {blocker / 'cam.png'}" \
        in unwritable.output


def test_predict_refuses_a_map_for_a_frame_averaging_model(video, tmp_path):
    model = create_model("SIFAR-N-6", len(CLASSES), frame_size=32, frame_average=True)
    path = tmp_path / "average.pt"
    save_checkpoint({"model": model.state_dict(), "classes": CLASSES,
                     "model_info": {"name": model.name, "num_frames": model.num_frames, "grid": list(model.grid),
                                    "frame_size": model.frame_size, "frame_embed": False, "frame_average": True}},
                    path)
    result = predict_cli(video, "--checkpoint", path, "--cam", tmp_path / "cam.png")
    assert result.exit_code == 1 and f"no class activation map for {video}" in result.output
    assert "frame averaging" in result.output and not (tmp_path / "cam.png").exists()


def test_help_states_the_cost():
    result = CliRunner().invoke(predict_main, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "ceil(C/N) extra head passes" in text and "Swin-B's last stage: 1024 channels" in text
    assert "--cam-stage" in text and "centre view" in text
