import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sifar.data.sampling import (dense_indices, dense_start_range, eval_indices, train_indices,
                                 uniform_indices)

lengths = st.integers(min_value=1, max_value=400)
segments = st.integers(min_value=1, max_value=32)
strides = st.integers(min_value=1, max_value=8)
seeds = st.integers(min_value=0, max_value=2**32)


def test_uniform_eval_takes_each_segments_centre():
    assert uniform_indices(80, 8) == [5, 15, 25, 35, 45, 55, 65, 75]
    assert eval_indices(80, 8) == [[5, 15, 25, 35, 45, 55, 65, 75]]


def test_segments_never_share_a_frame():
    # 4 frames in 3 segments: fractional bounds let two segments both pick frame 2
    for seed in range(50):
        assert len(set(train_indices(4, 3, random.Random(seed)))) == 3


def test_uniform_eval_clips_spread_within_segments():
    assert eval_indices(40, 4, clips=2) == [[2, 12, 22, 32], [7, 17, 27, 37]]


def test_short_videos_repeat_frames_in_time_order():
    assert uniform_indices(3, 8) == [0, 0, 0, 1, 1, 1, 2, 2]
    assert train_indices(1, 8, random.Random(0)) == [0] * 8
    assert eval_indices(5, 8, clips=3)[0] == sorted(eval_indices(5, 8, clips=3)[0])


def test_dense_takes_frames_at_the_stride():
    assert dense_indices(100, 4, stride=4, start=10) == [10, 14, 18, 22]
    assert eval_indices(100, 4, mode="dense", stride=4) == [[44, 48, 52, 56]]  # start centred in 0..87


def test_dense_clip_longer_than_the_video_wraps_round():
    assert dense_start_range(10, 8, 4) == 0
    assert train_indices(10, 8, random.Random(1), mode="dense", stride=4) == [0, 4, 8, 2, 6, 0, 4, 8]


def test_dense_eval_clips_spread_over_the_video():
    clips = eval_indices(100, 4, clips=3, mode="dense", stride=2)
    assert [clip[0] for clip in clips] == [16, 46, 78]  # last start 93, at 1/6, 3/6, 5/6 (rounded half-even)
    assert all(b - a == 2 for clip in clips for a, b in zip(clip, clip[1:]))


@pytest.mark.parametrize("call, message", [
    (lambda: uniform_indices(0, 8), "at least one frame"),
    (lambda: uniform_indices(10, 0), "a clip needs at least one frame"),
    (lambda: dense_indices(10, 4, stride=0, start=0), "stride >= 1"),
    (lambda: train_indices(10, 4, random.Random(0), mode="sparse"), "unknown sampling mode 'sparse'"),
    (lambda: eval_indices(10, 4, clips=0), "clips must be >= 1"),
    (lambda: eval_indices(10, 4, mode="sparse"), "unknown sampling mode"),
])
def test_invalid_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=200, deadline=None)
@given(lengths, segments, seeds)
def test_uniform_training_takes_one_frame_from_each_segment(n, t, seed):
    indices = train_indices(n, t, random.Random(seed))
    assert len(indices) == t
    for i, index in enumerate(indices):
        assert i * n // t <= index < max(i * n // t + 1, -(-(i + 1) * n // t))
    assert indices == sorted(indices)
    if n >= t:
        assert len(set(indices)) == t  # no frame twice when the video is long enough


@settings(max_examples=200, deadline=None)
@given(lengths, segments, st.integers(min_value=1, max_value=5), st.sampled_from(["uniform", "dense"]), strides)
def test_eval_views_are_deterministic_and_in_range(n, t, clips, mode, stride):
    views = eval_indices(n, t, clips, mode, stride)
    assert views == eval_indices(n, t, clips, mode, stride)
    assert len(views) == clips and all(len(v) == t and all(0 <= i < n for i in v) for v in views)


@settings(max_examples=200, deadline=None)
@given(lengths, segments, strides, seeds)
def test_dense_training_clips_fit_when_they_can(n, t, stride, seed):
    indices = train_indices(n, t, random.Random(seed), mode="dense", stride=stride)
    assert all(0 <= i < n for i in indices)
    if (t - 1) * stride < n:
        assert all(b - a == stride for a, b in zip(indices, indices[1:]))


@settings(max_examples=100, deadline=None)
@given(lengths, segments, seeds)
def test_training_sampling_depends_only_on_the_generator(n, t, seed):
    assert train_indices(n, t, random.Random(seed)) == train_indices(n, t, random.Random(seed))
