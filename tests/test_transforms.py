import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from sifar.data.transforms import (MULTI_SCALES, CropJitter, copy_crop, default_flip, draw_crop_jitter,
                                   eval_transform, jitter_box, normalize, resize_short_side, spatial_crops,
                                   train_transform)


def ramp_clip(frames: int, height: int, width: int) -> torch.Tensor:
    """(T, H, W, 3): red = column, green = row (the same in every frame), blue = frame index."""
    x = torch.arange(width).view(1, 1, width).expand(frames, height, width)
    y = torch.arange(height).view(1, height, 1).expand(frames, height, width)
    t = torch.arange(frames).view(frames, 1, 1).expand(frames, height, width)
    return torch.stack([x, y, t], -1).to(torch.uint8)


def test_jitter_draws_sizes_from_the_scales_at_most_one_step_apart():
    rng = random.Random(0)
    for _ in range(200):
        jitter = draw_crop_jitter(rng, flip=True)
        i, j = MULTI_SCALES.index(jitter.scale_w), MULTI_SCALES.index(jitter.scale_h)
        assert abs(i - j) <= 1 and 0 <= jitter.x < 1 and 0 <= jitter.y < 1


def test_jitter_uses_the_same_draws_whether_or_not_it_may_flip():
    with_flip = [draw_crop_jitter(random.Random(s), flip=True) for s in range(50)]
    without = [draw_crop_jitter(random.Random(s), flip=False) for s in range(50)]
    assert not any(j.flip for j in without) and 10 < sum(j.flip for j in with_flip) < 40
    assert [(j.scale_w, j.x) for j in with_flip] == [(j.scale_w, j.x) for j in without]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MULTI_SCALES), st.sampled_from(MULTI_SCALES), st.floats(0, 0.999), st.floats(0, 0.999),
       st.integers(8, 500), st.integers(8, 500))
def test_jitter_box_lies_inside_the_frame(sw, sh, x, y, width, height):
    left, top, w, h = jitter_box(CropJitter(sw, sh, x, y, False), width, height)
    assert 0 <= left and left + w <= width and 0 <= top and top + h <= height
    assert w == min(width, round(min(width, height) * sw))


def test_train_transform_crops_resizes_and_flips_every_frame_alike():
    clip = ramp_clip(4, 48, 64)
    jitter = CropJitter(0.75, 0.75, 1.0 - 1e-9, 0.0, flip=False)  # 36x36 at the top right
    out = train_transform(list(clip), jitter, 36)
    assert out.shape == (4, 3, 36, 36) and out.dtype == torch.uint8
    assert torch.equal(out[:, 0, 0], torch.arange(28, 64).expand(4, 36).to(torch.uint8))  # columns 28..63
    assert torch.equal(out[:, 1, :, 0], torch.arange(0, 36).expand(4, 36).to(torch.uint8))  # rows 0..35
    assert torch.equal(out[:, 2, 0, 0], torch.arange(4).to(torch.uint8))  # frames stay in order
    flipped = train_transform(clip, CropJitter(0.75, 0.75, 1.0 - 1e-9, 0.0, flip=True), 36)
    assert torch.equal(flipped, out.flip(-1))


@pytest.mark.parametrize("width, size", [(64, 36), (60, 48), (48, 48), (37, 52), (240, 192), (158, 192)])
def test_flipping_before_the_resize_gives_the_bits_of_flipping_after_it(width, size):
    noise = torch.randint(0, 256, (2, 3, 40, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(width))
    frames = noise.contiguous(memory_format=torch.channels_last)  # the layout train_transform resizes in
    flipped = train_transform(list(frames.permute(0, 2, 3, 1)), CropJitter(1.0, 1.0, 0.0, 0.0, True), size)
    assert torch.equal(flipped, train_transform(frames.permute(0, 2, 3, 1), CropJitter(1.0, 1.0, 0, 0, False),
                                                size).flip(-1))


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.75])  # 48x48: no resize needed; 36x36: resized
def test_train_transform_writes_into_a_row_of_a_batch(flip, scale):
    clip, jitter = ramp_clip(3, 48, 64), CropJitter(scale, scale, 0.3, 0.6, flip)
    batch = torch.zeros(2, 3, 48, 48, 3, dtype=torch.uint8)  # (B, T, H, W, C), as the loader keeps them
    row = batch[1].movedim(-1, -3)
    written = train_transform(list(clip), jitter, 48, out=row)
    assert written.data_ptr() == row.data_ptr() and torch.equal(written, train_transform(clip, jitter, 48))
    assert not batch[0].any()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 30), st.integers(1, 30), st.integers(0, 5), st.integers(0, 5), st.booleans())
def test_a_bgr_crop_copies_to_the_rgb_crop_flipped_or_not(frames, height, width, left, top, flip):
    rgb = torch.randint(0, 256, (frames, height + top, width + left, 3), dtype=torch.uint8)
    bgr = rgb.flip(-1).contiguous()
    view = (slice(None), slice(top, None), slice(left, None))
    expected = rgb[view].flip(2) if flip else rgb[view]
    for channels, source in (("RGB", rgb), ("BGR", bgr)):
        copied = copy_crop(source[view], flip, channels)
        assert copied.is_contiguous() and torch.equal(copied, expected)


@pytest.mark.parametrize("flip", [False, True])
def test_train_transform_takes_bgr_frames_and_gives_the_rgb_result(flip):
    clip = torch.randint(0, 256, (3, 40, 60, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    jitter = CropJitter(0.875, 0.75, 0.4, 0.7, flip)
    expected = train_transform(clip, jitter, 32)
    assert torch.equal(train_transform(clip.flip(-1).contiguous(), jitter, 32, channels="BGR"), expected)


@pytest.mark.parametrize("channels, shape, message", [("RGBA", (1, 4, 4, 3), "one of RGB, BGR"),
                                                      ("BGR", (1, 4, 4, 4), "3 channels")])
def test_copy_crop_refuses_unknown_channel_orders(channels, shape, message):
    with pytest.raises(ValueError, match=message):
        copy_crop(torch.zeros(shape, dtype=torch.uint8), True, channels)


@pytest.mark.parametrize("size", [(24, 33), (72, 100)])  # down and up from 36x50
def test_eval_resize_is_torchs_antialiased_bilinear(size):
    frames = torch.randint(0, 256, (2, 36, 50, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    expected = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), size=size, mode="bilinear",
                                               antialias=True, align_corners=False)
    resized = resize_short_side(list(frames), min(size))
    assert resized.shape[-2:] == size and torch.equal(resized, expected)
    assert resized.permute(0, 2, 3, 1).is_contiguous()  # channels-last, as the batches are kept


def test_train_transform_resizes_to_the_frame_size():
    out = train_transform(ramp_clip(2, 48, 64), CropJitter(1.0, 0.875, 0.5, 0.5, True), 32)
    assert out.shape == (2, 3, 32, 32)
    assert torch.equal(out[0, :2], out[1, :2])  # same crop in both frames


@pytest.mark.parametrize("frames, message", [
    ([torch.zeros(48, 64, 3, dtype=torch.uint8), torch.zeros(40, 64, 3, dtype=torch.uint8)], "differ in size"),
    ([], "at least one frame"),
    (torch.zeros(0, 48, 64, 3, dtype=torch.uint8), "T >= 1"),
    (torch.zeros(2, 48, 64, 3), "expected uint8"),
    (torch.zeros(48, 64, 3, dtype=torch.uint8), r"shaped \(T, H, W, C\)"),
])
def test_bad_clips_are_refused(frames, message):
    with pytest.raises(ValueError, match=message):
        train_transform(frames, CropJitter(1, 1, 0, 0, False), 32)


@pytest.mark.parametrize("height, width, expected", [(48, 64, (24, 32)), (64, 48, (32, 24)), (30, 30, (16, 16))])
def test_resize_short_side_keeps_the_aspect(height, width, expected):
    assert resize_short_side(ramp_clip(3, height, width), 16 if height == 30 else 24).shape[-2:] == expected


def test_three_crops_are_top_left_centre_bottom_right():
    landscape = spatial_crops(ramp_clip(2, 24, 64).permute(0, 3, 1, 2), 24, 3)
    assert landscape.shape == (3, 2, 3, 24, 24)
    assert [int(view[0, 0, 0, 0]) for view in landscape] == [0, 20, 40]  # left edges of the crops
    portrait = spatial_crops(ramp_clip(1, 64, 24).permute(0, 3, 1, 2), 24, 3)
    assert [int(view[0, 1, 0, 0]) for view in portrait] == [0, 20, 40]  # top edges
    centre = spatial_crops(ramp_clip(1, 24, 64).permute(0, 3, 1, 2), 24, 1)
    assert centre.shape == (1, 1, 3, 24, 24) and int(centre[0, 0, 0, 0, 0]) == 20


def test_crop_arguments_are_checked():
    frames = ramp_clip(1, 24, 64).permute(0, 3, 1, 2)
    with pytest.raises(ValueError, match="crops: 1"):
        spatial_crops(frames, 24, 2)
    with pytest.raises(ValueError, match="smaller than the 32x32 crop"):
        spatial_crops(frames, 32, 1)


def test_eval_transform_gives_views_of_the_clip():
    views = eval_transform(ramp_clip(4, 48, 64), 24, crops=3)
    assert views.shape == (3, 4, 3, 24, 24) and views.dtype == torch.uint8
    assert torch.equal(views[1, :, 2, 0, 0], torch.arange(4).to(torch.uint8))


@pytest.mark.parametrize("shape", [(3, 4, 4), (2, 3, 4, 4), (2, 5, 3, 4, 4), (2, 3, 5, 3, 4, 4)])
def test_normalize_uses_imagenet_statistics_on_any_leading_shape(shape):
    frames = torch.randint(0, 256, shape, dtype=torch.uint8)
    out = normalize(frames)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    assert out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, (frames.float() / 255 - mean) / std)


def test_normalize_accepts_channels_last_views_and_custom_statistics():
    frames = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    out = normalize(frames, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert out.is_contiguous()
    torch.testing.assert_close(out, frames.float() / 127.5 - 1)


def test_normalize_checks_the_channel_dimension():
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 3, H, W\)"):
        normalize(torch.zeros(2, 4, 4, 3, dtype=torch.uint8))


@pytest.mark.parametrize("name, flip", [("ssv2", False), ("jester", False), ("SSV2", False),
                                        ("kinetics400", True), ("diving48", True), (None, True)])
def test_flip_is_off_where_left_and_right_are_the_label(name, flip):
    assert default_flip(name) is flip
