import numpy as np
import pytest
import torch

from sifar.data.mixup import VideoMixup


def distinct_clips(batch: int = 4, frames: int = 3) -> torch.Tensor:
    """Every (clip, frame, channel) plane has its own constant value, so any mixing is visible."""
    values = torch.arange(batch * frames * 3, dtype=torch.float32).view(batch, frames, 3, 1, 1)
    return values.expand(batch, frames, 3, 16, 20).clone()


def test_cutmix_cuts_one_box_through_every_frame_of_a_clip():
    np.random.seed(0)
    frames = distinct_clips()
    mixed, targets = VideoMixup(5, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)(
        frames.clone(), torch.tensor([0, 1, 2, 3]))
    changed = mixed != frames  # (B, T, C, H, W)
    box = changed[0, 0, 0]
    assert box.any() and not box.all()
    assert torch.equal(changed, box.expand_as(changed))  # the same box in every clip, frame and channel
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    assert int(box.sum()) == len(rows) * len(cols)  # and it is a rectangle
    # the box holds the partner clip (the batch reversed), frame for frame
    torch.testing.assert_close(mixed[0][:, :, box], frames[3][:, :, box])
    area = len(rows) * len(cols) / (16 * 20)
    torch.testing.assert_close(targets[0, 0], torch.tensor(1 - area))
    torch.testing.assert_close(targets[0, 3], torch.tensor(area))


def test_mixup_blends_whole_clips_with_one_weight():
    np.random.seed(1)
    frames = distinct_clips()
    mixed, targets = VideoMixup(4, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0)(
        frames.clone(), torch.tensor([0, 1, 2, 3]))
    lam = float(targets[0, 0])
    torch.testing.assert_close(mixed, lam * frames + (1 - lam) * frames.flip(0))


def test_defaults_are_the_papers_and_targets_are_smoothed():
    mixup = VideoMixup(10)
    assert (mixup.mixup.mixup_alpha, mixup.mixup.cutmix_alpha, mixup.mixup.label_smoothing) == (0.8, 1.0, 0.1)
    unmixed = VideoMixup(10, prob=0.0)
    frames = distinct_clips(2)
    out, targets = unmixed(frames.clone(), torch.tensor([3, 7]))
    assert torch.equal(out, frames)
    assert targets.shape == (2, 10)
    torch.testing.assert_close(targets[0, 3], torch.tensor(0.9 + 0.01))
    torch.testing.assert_close(targets.sum(1), torch.ones(2))


def test_works_on_channels_last_views():
    frames = distinct_clips().permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    mixed, _ = VideoMixup(4)(frames, torch.tensor([0, 1, 2, 3]))
    assert mixed.shape == (4, 3, 3, 16, 20)


def test_odd_batches_and_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="batch size must be even"):
        VideoMixup(4)(distinct_clips(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        VideoMixup(4)(torch.zeros(2, 3, 16, 20), torch.tensor([0, 1]))
