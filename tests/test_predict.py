"""Predictor: video files decoded only at their sampled frames, frames in memory, batches, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_train import data, trained  # noqa: F401  (module fixtures: a small synthetic dataset, a trained model)
from shard_files import serve_folder
from video_files import COUNTER_STEP, make_video

from sifar.data.ffmpeg import DecodeError
from sifar.data.video_frames import FrameIndex, index_frames, read_frames
from sifar.predict import PredictSettings, Predictor


def frame_numbers(frames: dict[int, torch.Tensor]) -> list[int]:
    """The source frame number each decoded ``counter`` frame shows, in key order."""
    return [round(float(frames[key][..., 0].float().mean()) / COUNTER_STEP) for key in sorted(frames)]


@pytest.mark.parametrize("name, output_args", [
    ("counter.mp4", ()),                                  # seeking: the packets carry presentation times
    ("b_frames_short_gop.mp4", ("-bf", "3", "-g", "7")),  # seeking into GOPs of 7 with B-frames
    ("no_times.h264", ("-bf", "2")),                      # raw H.264: no times, one selecting pass instead
])
def test_only_the_sampled_frames_are_decoded_and_they_are_the_right_ones(tmp_path, name, output_args):
    video = make_video(tmp_path / name, frames=30, size=(64, 48), content="counter", output_args=output_args)
    index = index_frames(video)
    assert index.count == 30 and (index.times is None) == name.endswith(".h264")
    wanted = [17, 3, 29, 17, 0, 1, 2, 4, 5, 6, 7, 8]   # more than one seeking run's worth
    frames = read_frames(video, wanted, short_side=24)
    assert sorted(frames) == sorted(set(wanted))   # each frame once, however often it is sampled
    assert all(tuple(f.shape) == (24, 32, 3) and f.dtype == torch.uint8 for f in frames.values())
    assert frame_numbers(frames) == sorted(set(wanted))
    selected = read_frames(video, wanted, short_side=24, index=FrameIndex(30, None))   # the one-pass way
    assert all(torch.equal(selected[key], frames[key]) for key in frames)   # the same pixels


def test_frames_beyond_the_video_and_unreadable_files_are_errors(tmp_path):
    video = make_video(tmp_path / "short.mp4", frames=5)
    with pytest.raises(DecodeError, match="frame 9 asked of a video of 5 frames"):
        read_frames(video, [4, 9], short_side=24)
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(DecodeError):
        index_frames(tmp_path / "text.mp4")
    with pytest.raises(DecodeError):
        index_frames(tmp_path / "missing.mp4")


def decoded_frames(video, short_side: int = 32) -> np.ndarray:
    """Every frame of a video as (T, H, W, 3) uint8, its shorter side ``short_side`` (the model's frame size)."""
    everything = list(range(index_frames(video).count))
    return torch.stack(list(read_frames(video, everything, short_side).values())).numpy()


def test_frames_in_memory_classify_as_the_file_they_came_from(data, trained):  # noqa: F811
    predictor = Predictor.from_checkpoint(trained, "cpu", PredictSettings(topk=3))
    video = next(data["videos"].rglob("*.mp4"))
    frames = decoded_frames(video)
    from_file, from_array = predictor.predict(video), predictor.predict(frames)
    from_images = predictor.predict([Image.fromarray(frame) for frame in frames])
    from_tensor = predictor.predict(torch.from_numpy(frames))
    assert from_file.classes == from_array.classes == from_images.classes == from_tensor.classes
    assert from_array.probabilities == pytest.approx(from_file.probabilities, abs=1e-6)
    assert from_images.probabilities == from_array.probabilities == from_tensor.probabilities
    assert from_file.video == str(video) and from_array.video == f"{len(frames)} frames in memory"


def test_a_video_url_classifies_as_the_file(data, trained):  # noqa: F811
    """ffmpeg reads the URL itself (a loopback HTTP server here), the sampled frames only."""
    predictor = Predictor.from_checkpoint(trained, "cpu")
    video = next(data["videos"].rglob("*.mp4"))
    with serve_folder(video.parent) as base:
        from_url = predictor.predict(f"{base}/{video.name}")
    assert from_url.probabilities == predictor.predict(video).probabilities


def test_a_batch_gives_what_one_at_a_time_gives(data, trained):  # noqa: F811
    predictor = Predictor.from_checkpoint(trained, "cpu")
    videos = sorted(data["videos"].rglob("*.mp4"))[:3]
    inputs = [videos[0], decoded_frames(videos[1]), videos[2]]
    batched = predictor.predict_batch(inputs, batch_size=2)
    for one, clip_input in zip(batched, inputs):
        alone = predictor.predict(clip_input)
        assert one.classes == alone.classes and one.probabilities == pytest.approx(alone.probabilities, abs=1e-5)
    assert len(batched[0].classes) == 5   # the settings' top-k, at most the class count


@pytest.mark.parametrize("frames, message", [
    (np.zeros((8, 32, 32, 3), dtype=np.float32), "uint8"),
    (np.zeros((8, 32, 32), dtype=np.uint8), r"\(8, 32, 32\)"),
    (np.zeros((0, 32, 32, 3), dtype=np.uint8), "uint8 \\(T, H, W, 3\\)"),
    ([], "no frames given"),
])
def test_frames_that_are_not_a_clip_are_refused(trained, frames, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        Predictor.from_checkpoint(trained, "cpu").predict(frames)


def test_the_predictor_is_at_the_top_of_the_package():
    import sifar

    assert sifar.Predictor is Predictor and sifar.PredictSettings is PredictSettings


def test_a_bad_device_is_refused(trained):  # noqa: F811
    with pytest.raises(ValueError, match="device: expected auto, cpu, cuda or cuda:N, got 'gpu'"):
        Predictor.from_checkpoint(trained, "gpu")
