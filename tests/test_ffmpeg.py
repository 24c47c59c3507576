import os
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from video_files import counter_value, jpeg_pixels, make_video, require_encoder, run_ffmpeg

from sifar.data import ffmpeg as ffmpeg_module
from sifar.data.ffmpeg import (
    DecodeError, DecodeSettings, FrameRange, decode_video, ffmpeg_exe, first_problem, has_encoder,
    parse_stream_info, reencode_jpegs,
)

KEEP = DecodeSettings(short_side=0)


def counters(decoded) -> list[int]:
    return [counter_value(f) for f in decoded.frames]


def test_ffmpeg_comes_from_path_before_the_bundled_binary(tmp_path, monkeypatch):
    bundled = ffmpeg_exe()
    assert os.access(bundled, os.X_OK)
    (tmp_path / "ffmpeg").symlink_to(bundled)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    ffmpeg_module.ffmpeg_exe.cache_clear()
    try:
        assert ffmpeg_exe() == str(tmp_path / "ffmpeg")
    finally:
        ffmpeg_module.ffmpeg_exe.cache_clear()


def test_has_encoder_reads_the_builds_encoder_list():
    assert has_encoder("mjpeg")
    assert not has_encoder("no-such-encoder")


def test_every_frame_decoded_once_in_order_with_metadata(tmp_path):
    video = make_video(tmp_path / "v.mp4", frames=12, content="counter")
    decoded = decode_video(video, KEEP)
    assert counters(decoded) == list(range(12))
    assert (decoded.width, decoded.height, decoded.orig_width, decoded.orig_height) == (64, 48, 64, 48)
    assert decoded.fps == 10
    assert all(Image.open(BytesIO(f)).format == "JPEG" for f in decoded.frames)


@pytest.mark.parametrize("size, short_side, expected", [
    ((64, 48), 24, (32, 24)),     # landscape
    ((48, 64), 24, (24, 32)),     # portrait
    ((63, 47), 0, (63, 47)),      # odd size kept
    ((63, 47), 20, (27, 20)),     # odd size scaled by its aspect ratio
])
def test_short_side_scaling(tmp_path, size, short_side, expected):
    pix_fmt = "yuv444p" if size[0] % 2 else "yuv420p"   # 4:2:0 H.264 needs even sizes
    video = make_video(tmp_path / "v.mkv", frames=3, size=size, pix_fmt=pix_fmt)
    decoded = decode_video(video, DecodeSettings(short_side=short_side))
    assert (decoded.width, decoded.height) == expected
    assert jpeg_pixels(decoded.frames[0]).shape == (expected[1], expected[0], 3)
    assert (decoded.orig_width, decoded.orig_height) == size


def test_fps_resampling_and_max_frames(tmp_path):
    video = make_video(tmp_path / "v.mp4", frames=20, fps=10, content="counter")
    resampled = decode_video(video, DecodeSettings(short_side=0, fps=5))
    assert resampled.fps == 5 and len(resampled.frames) == 10
    assert counters(resampled) == sorted(counters(resampled))
    limited = decode_video(video, DecodeSettings(short_side=0, max_frames=4))
    assert counters(limited) == [0, 1, 2, 3]


def test_trimming_by_frame_number_end_exclusive(tmp_path):
    video = make_video(tmp_path / "v.mp4", frames=15, content="counter")
    assert counters(decode_video(video, KEEP, FrameRange(3, 8))) == [3, 4, 5, 6, 7]
    assert counters(decode_video(video, KEEP, FrameRange(10))) == [10, 11, 12, 13, 14]
    assert counters(decode_video(video, DecodeSettings(short_side=0, max_frames=2), FrameRange(5, 9))) == [5, 6]


def test_rotation_metadata_gives_upright_frames(tmp_path):
    plain = tmp_path / "mark.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "color=gray:size=64x48:rate=10", "-vf",
               "drawbox=x=0:y=0:w=16:h=12:color=red:t=fill", "-frames:v", "3", "-c:v", "libx264",
               "-pix_fmt", "yuv420p", str(plain))
    rotated = tmp_path / "rotated.mp4"
    run_ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated))
    decoded = decode_video(rotated, KEEP)
    assert (decoded.width, decoded.height, decoded.orig_width, decoded.orig_height) == (48, 64, 48, 64)
    pixels = jpeg_pixels(decoded.frames[0]).astype(int)
    # Turned 90 degrees anticlockwise for display: the red top-left corner is now bottom-left.
    assert pixels[-3, 2, 0] > 200 and pixels[-3, 2, 1] < 60
    assert abs(pixels[2, 2] - 128).max() < 20


def test_grayscale_input_gives_three_channel_jpegs(tmp_path):
    video = make_video(tmp_path / "gray.mkv", frames=4, codec="ffv1", pix_fmt="gray")
    decoded = decode_video(video, DecodeSettings(short_side=24))
    assert len(decoded.frames) == 4
    assert Image.open(BytesIO(decoded.frames[0])).mode == "RGB"


def test_variable_frame_rate_keeps_every_frame_once(tmp_path):
    video = tmp_path / "vfr.mkv"
    run_ffmpeg("-f", "lavfi", "-i", "color=black:size=64x48:rate=10", "-vf",
               "format=rgb24,geq=r='8*N':g=128:b=128,setpts='(N/10+if(gte(N,6),0.5,0))/TB'",
               "-fps_mode", "vfr", "-frames:v", "12", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video))
    decoded = decode_video(video, KEEP)
    assert counters(decoded) == list(range(12))
    constant = decode_video(video, DecodeSettings(short_side=0, fps=10))
    assert len(constant.frames) > 12     # the half-second gap is filled at a constant rate
    assert counters(constant) == sorted(counters(constant))


@pytest.mark.parametrize("name, codec, pix_fmt", [
    ("v.webm", "libvpx-vp9", "yuv420p"),
    ("v.mkv", "libx264", "yuv420p"),
    ("v.avi", "mjpeg", "yuvj420p"),
])
def test_containers_and_codecs(tmp_path, name, codec, pix_fmt):
    require_encoder(codec)
    video = make_video(tmp_path / name, frames=8, codec=codec, pix_fmt=pix_fmt, content="counter")
    decoded = decode_video(video, KEEP)
    assert counters(decoded) == list(range(8))
    assert decoded.fps == 10


def truncated(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


@pytest.mark.parametrize("make_input, reason", [
    (lambda d: _write(d / "zero.mp4", b""), "empty file"),
    (lambda d: _write(d / "junk.mp4", np.random.default_rng(0).bytes(4000)), "moov atom not found|Invalid data"),
    (lambda d: garbled(make_video(d / "garbled.mp4", frames=30, output_args=["-movflags", "+faststart"])),
     "Invalid|corrupt|rror"),
    (lambda d: truncated(make_video(d / "cut.mp4", frames=30), 0.5), "moov atom not found"),
    (lambda d: truncated(make_video(d / "cut.mp4", frames=60, output_args=["-movflags", "+faststart"]), 0.6),
     "corrupt|partial file|Invalid"),
    (lambda d: truncated(make_video(d / "cut.webm", frames=60, codec="libvpx-vp9"), 0.6), "ended prematurely"),
    (lambda d: truncated(make_video(d / "cut.avi", frames=60, codec="mjpeg", pix_fmt="yuvj420p"), 0.6),
     "corrupt"),
    (lambda d: _audio_only(d / "audio.m4a"), "no video stream"),
    (lambda d: _mkdir(d / "folder.mp4"), "Is a directory"),
    (lambda d: d / "missing.mp4", "No such file"),
], ids=["zero-byte", "not-a-video", "corrupt", "truncated-mp4", "truncated-faststart-mp4", "truncated-webm",
        "truncated-avi", "audio-only", "directory", "missing"])
def test_bad_inputs_raise_with_a_reason(tmp_path, make_input, reason):
    path = make_input(tmp_path)
    with pytest.raises(DecodeError, match=reason) as error:
        decode_video(path, DecodeSettings(short_side=32))
    assert str(error.value)


def garbled(path: Path) -> Path:
    """Random bytes over the middle of the file (the header stays intact)."""
    data = bytearray(path.read_bytes())
    start, end = len(data) // 3, 2 * len(data) // 3
    data[start:end] = np.random.default_rng(1).bytes(end - start)
    path.write_bytes(bytes(data))
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _audio_only(path: Path) -> Path:
    run_ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(path))
    return path


def test_reencoding_shipped_jpeg_frames(tmp_path):
    video = make_video(tmp_path / "v.mp4", frames=10, content="counter")
    jpegs = decode_video(video, KEEP).frames
    resized = reencode_jpegs(jpegs, 12.0, DecodeSettings(short_side=24), FrameRange(2, 6))
    assert counters(resized) == [2, 3, 4, 5]
    assert (resized.width, resized.height, resized.fps) == (32, 24, 12.0)
    assert (resized.orig_width, resized.orig_height) == (64, 48)
    with pytest.raises(DecodeError, match="frame rate is unknown"):
        reencode_jpegs(jpegs, None, DecodeSettings(short_side=0, fps=5))


def test_stream_info_from_older_ffmpeg_rotate_metadata():
    log = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'phone.mp4':
  Duration: 00:00:01.00, start: 0.000000, bitrate: 1000 kb/s
    Stream #0:0(eng): Video: h264 (avc1 / 0x31637661), yuv420p, 1920x1080, 900 kb/s, 29.97 fps, 29.97 tbr, 90k tbn
    Metadata:
      rotate          : 90
    Stream #0:1(eng): Audio: aac (mp4a / 0x6134706D), 48000 Hz, stereo, fltp, 96 kb/s
Stream mapping:
"""
    info = parse_stream_info(log)
    assert (info.width, info.height, info.fps, info.rotation) == (1080, 1920, 29.97, 90)


def test_cover_art_is_not_taken_for_the_video():
    log = """Input #0, mp3, from 'song.mp3':
  Stream #0:0: Audio: mp3, 44100 Hz, stereo, fltp, 128 kb/s
  Stream #0:1: Video: mjpeg (Baseline), yuvj420p(pc), 300x300 [SAR 1:1 DAR 1:1], 90k tbr, 90k tbn (attached pic)
"""
    with pytest.raises(DecodeError, match="no video stream"):
        parse_stream_info(log)


def test_first_problem_counts_errors_and_corrupt_packet_warnings():
    assert first_problem("[info] fine\n[warning] deprecated pixel format used\n") is None
    assert first_problem("[avi @ 0x1] [warning] Packet corrupt (stream = 0)\n") == "Packet corrupt (stream = 0)"
    assert first_problem("[in#0 @ 0x2] [error] moov atom not found\n") == "moov atom not found"


@pytest.mark.parametrize("kwargs", [{"short_side": -1}, {"fps": 0}, {"quality": 1}, {"max_frames": 0}])
def test_decode_settings_are_checked(kwargs):
    with pytest.raises(ValueError):
        DecodeSettings(**kwargs)
