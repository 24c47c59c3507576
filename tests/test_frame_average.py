"""The frame-averaging baseline: one frame at a time through the backbone, logits averaged, order-blind."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from shard_files import write_split

from sifar.checkpoint import load_checkpoint, load_trained
from sifar.cli.evaluate import main as eval_main
from sifar.cli.train import main as train_main
from sifar.models import SuperImageClassifier, create_model
from sifar.models.frame_average import FrameAverageClassifier


def clip(model: SuperImageClassifier, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, model.num_frames, 3, model.frame_size, model.frame_size)


@pytest.mark.parametrize("name, kwargs", [("SIFAR-N-6", {}), ("SIFAR-R18", {"frame_size": 32})])
def test_one_frame_at_a_time_through_a_backbone_sized_for_one_frame(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, frame_average=True, **kwargs).eval()
    assert isinstance(model, FrameAverageClassifier) and model.grid == (1, 1)
    frames = clip(model)
    with torch.no_grad():
        logits = model(frames)
        per_frame = torch.stack([model.backbone(frames[:, t]) for t in range(model.num_frames)], 1)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(logits, per_frame.mean(1))


def test_swin_is_built_for_a_single_frame():
    model = create_model("SIFAR-N-6", num_classes=5, frame_average=True)
    assert model.backbone.patch_embed.img_size == (64, 64)
    assert model.backbone.layers[-1].blocks[0].window_size == (2, 2)  # the global last stage: one frame's map
    features = model.forward_features(clip(model))
    assert features.shape[:2] == (2, 8)


def test_permuting_the_frames_changes_nothing_but_it_changes_a_super_image():
    torch.manual_seed(0)
    average = create_model("SIFAR-N-6", num_classes=5, frame_average=True).eval()
    torch.manual_seed(0)
    sifar = create_model("SIFAR-N-6", num_classes=5).eval()
    frames = clip(average)
    order = torch.tensor([7, 2, 5, 0, 3, 6, 1, 4])
    with torch.no_grad():
        torch.testing.assert_close(average(frames[:, order]), average(frames), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(average(frames.flip(1)), average(frames), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(sifar(frames[:, order]), sifar(frames), atol=1e-4)


def test_trains_and_gets_gradients():
    model = create_model("SIFAR-N-6", num_classes=3, frame_average=True, frame_size=32)
    model(clip(model)).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("kwargs, message", [
    ({"layout": "3x3"}, "1x1 grid"),
    ({"frame_embed": True}, "position embedding"),
])
def test_options_that_do_not_apply_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model("SIFAR-N-6", num_classes=3, frame_average=True, **kwargs)


def test_a_1x1_layout_is_accepted():
    assert create_model("SIFAR-N-6", num_classes=3, frame_average=True, layout="1x1").grid == (1, 1)


def test_wrong_clip_shape_names_the_expected_one():
    model = create_model("SIFAR-N-6", num_classes=3, frame_average=True)
    with pytest.raises(ValueError, match="expects 8 frames of 64x64, got 4 frames of 64x64"):
        model(torch.zeros(1, 4, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expected frames \(B, T, C, H, W\)"):
        model(torch.zeros(8, 3, 64, 64))


def test_trainer_checkpoint_and_evaluator_keep_the_baseline(tmp_path):
    shards = tmp_path / "shards"
    write_split(shards, "train", shards=1, per_shard=8, classes=3)
    write_split(shards, "val", shards=1, per_shard=3, classes=3)
    out = tmp_path / "run"
    args = ["--shards", str(shards), "--output", str(out), "--model", "SIFAR-N-6", "--frame-size", "32",
            "--batch-size", "4", "--workers", "0", "--epochs", "1", "--warmup-epochs", "0", "--frame-average"]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "last.pt")["model_settings"]["frame_average"] is True
    trained = load_trained(out / "last.pt")
    model, classes = trained.model, trained.classes
    assert isinstance(model, FrameAverageClassifier) and len(classes) == 3
    evaluated = CliRunner().invoke(eval_main, ["--shards", str(shards), "--checkpoint", str(out / "last.pt"),
                                               "--crops", "1", "--workers", "0", "--reverse-frames"])
    assert evaluated.exit_code == 0, evaluated.output
    resumed = CliRunner().invoke(train_main, [a for a in args if a != "--frame-average"])
    assert resumed.exit_code != 0 and "frame_average: True -> False" in resumed.output
