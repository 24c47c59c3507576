import io
import random

import numpy as np
import pytest
import simplejpeg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sifar.data import decoders
from sifar.data.decoders import JpegDecoder, region_decoding_available
from sifar.data.transforms import CropJitter, copy_crop, draw_crop_jitter, jitter_box

NOT_BUILT = "the libjpeg region decoder is not built (no C compiler or libjpeg-turbo headers at install)"
needs_region_decoder = pytest.mark.skipif(not region_decoding_available(), reason=NOT_BUILT)
LIBJPEG = pytest.param("libjpeg", marks=needs_region_decoder)
WHOLE_FRAME_DECODERS = [LIBJPEG, "simplejpeg", "pillow"]
SUBSAMPLINGS = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def jpeg_bytes(width: int, height: int, mode: str = "RGB") -> bytes:
    image = Image.new(mode, (width, height), 90 if mode == "L" else (200, 90, 30))
    data = io.BytesIO()
    image.save(data, "JPEG", quality=95)
    return data.getvalue()


def textured_jpeg(width: int, height: int, seed: int, subsampling: str = "4:2:0", gray: bool = False,
                  progressive: bool = False) -> bytes:
    """A JPEG with edges and colour everywhere, so that chroma upsampling at a region's edges matters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([(x * 7 + y * 3) % 256, (x * x + y * 11) % 256, (y * 5) % 256], axis=-1)
    pixels = np.clip(smooth + rng.integers(-40, 40, smooth.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).convert("L") if gray else Image.fromarray(pixels)
    data = io.BytesIO()
    image.save(data, "JPEG", quality=90, progressive=progressive,
               **({} if gray else {"subsampling": SUBSAMPLINGS[subsampling]}))
    return data.getvalue()


# ---- every backend, whole frames -------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", WHOLE_FRAME_DECODERS)
def test_decoder_gives_a_clip_tensor_with_each_distinct_frame_decoded_once(decoder):
    jpegs = {3: jpeg_bytes(40, 30), 7: jpeg_bytes(40, 30, "L")}  # grayscale JPEGs come out as RGB
    frames = JpegDecoder(decoder).frames(jpegs, [3, 3, 7, 7, 7])
    assert frames.shape == (5, 30, 40, 3) and frames.dtype == torch.uint8
    assert torch.equal(frames[0], frames[1]) and torch.equal(frames[2], frames[4])
    assert abs(int(frames[0, 5, 5, 0]) - 200) <= 3 and frames[2, 5, 5].tolist() == [90, 90, 90]


@pytest.mark.parametrize("decoder", WHOLE_FRAME_DECODERS)
def test_decoder_gives_bgr_frames_as_the_rgb_ones_with_channels_reversed(decoder):
    jpegs = {0: jpeg_bytes(40, 30), 1: jpeg_bytes(40, 30, "L")}
    rgb = JpegDecoder(decoder).frames(jpegs, [0, 1])
    assert torch.equal(JpegDecoder(decoder).frames(jpegs, [0, 1], channels="BGR"), rgb.flip(-1))
    assert torch.equal(JpegDecoder(decoder).decode_many([jpegs[0]], channels="BGR")[0], rgb[0].flip(-1))
    with pytest.raises(ValueError, match="one of RGB, BGR"):
        JpegDecoder(decoder).decode_many([jpegs[0]], channels="YCbCr")


@pytest.mark.parametrize("decoder", [LIBJPEG, "simplejpeg"])
def test_a_decoder_reusing_memory_decodes_each_clip_into_the_same_memory_grown_as_needed(decoder):
    decoder, fresh = JpegDecoder(decoder, reuse_memory=True), JpegDecoder(decoder)
    small, large = [jpeg_bytes(40, 30), jpeg_bytes(40, 30, "L")], [jpeg_bytes(80, 60)] * 3
    first = decoder.decode_many(small)
    assert torch.equal(first, fresh.decode_many(small))
    grown = decoder.decode_many(large)
    assert torch.equal(grown, fresh.decode_many(large))
    again = decoder.decode_many(small)
    assert again.data_ptr() == grown.data_ptr() and torch.equal(again, fresh.decode_many(small))
    assert decoder.decode_many([small[0]], draft_short_side=15)[0].shape == (15, 20, 3)  # scaled into the same memory


@pytest.mark.parametrize("decoder", WHOLE_FRAME_DECODERS)
@pytest.mark.parametrize("jpegs, message", [
    ([jpeg_bytes(40, 30), jpeg_bytes(40, 20)], "differ in size|the 40x20 frame does not hold"),
    ([jpeg_bytes(40, 20), jpeg_bytes(40, 30)], "differ in size"),
    ([jpeg_bytes(40, 30), jpeg_bytes(40, 30)[:300]], None),  # truncated
    ([b"not a jpeg"], None),
    ([], "at least one frame"),
])
def test_decoder_refuses_bad_clips_with_a_value_error(decoder, jpegs, message):
    with pytest.raises(ValueError, match=message):
        JpegDecoder(decoder).decode_many(jpegs)


def test_decoder_refuses_an_unknown_backend():
    with pytest.raises(ValueError, match="unknown decoder 'opencv'"):
        JpegDecoder("opencv")


def test_without_the_region_decoder_auto_takes_simplejpeg_and_libjpeg_is_refused(monkeypatch):
    monkeypatch.setattr(decoders, "_jpeg_region", None)
    assert JpegDecoder().backend == "simplejpeg"
    with pytest.raises(ValueError, match="libjpeg decoder is not built"):
        JpegDecoder("libjpeg")


@needs_region_decoder
def test_auto_takes_the_region_decoder_where_it_is_built():
    assert JpegDecoder().backend == "libjpeg"


@needs_region_decoder
@pytest.mark.parametrize("subsampling", [*SUBSAMPLINGS, "gray"])
def test_libjpeg_decodes_whole_frames_as_simplejpeg_does(subsampling):
    jpeg = textured_jpeg(67, 45, 0, "4:2:0" if subsampling == "gray" else subsampling, gray=subsampling == "gray")
    expected = torch.from_numpy(simplejpeg.decode_jpeg(jpeg))
    assert torch.equal(JpegDecoder("libjpeg").decode_many([jpeg])[0], expected)
    halved = torch.from_numpy(simplejpeg.decode_jpeg(jpeg, min_height=20, min_width=20, min_factor=2))
    assert torch.equal(JpegDecoder("libjpeg").decode_many([jpeg], draft_short_side=20)[0], halved)


# ---- training crops ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", [LIBJPEG, "simplejpeg", "pillow"])
@pytest.mark.parametrize("seed", range(4))
def test_crops_are_the_jitter_box_of_each_frame_flipped_as_drawn(decoder, seed):
    jpegs = {i: textured_jpeg(96, 64, seed * 10 + i) for i in range(3)}
    jitter = draw_crop_jitter(random.Random(seed), flip=True)
    indices = [0, 0, 1, 2, 2]  # a short video repeats frames
    whole = JpegDecoder("simplejpeg").frames(jpegs, indices)
    left, top, width, height = jitter_box(jitter, 96, 64)
    expected = copy_crop(whole[:, top:top + height, left:left + width], jitter.flip)
    crops = JpegDecoder(decoder, reuse_memory=True).crops(jpegs, indices, jitter)
    assert crops.shape == expected.shape and crops.is_contiguous()
    tolerance = 3 if decoder == "pillow" else 0  # Pillow's libjpeg-turbo build rounds a little differently
    assert (crops.int() - expected.int()).abs().max() <= tolerance


@needs_region_decoder
def test_crops_of_large_frames_come_from_the_scaled_decode():
    jpegs = {0: textured_jpeg(320, 240, 1), 1: textured_jpeg(320, 240, 2)}
    jitter = CropJitter(0.75, 0.66, 0.3, 0.9, flip=True)
    needed = 45  # 1/4 keeps a short side of 60 >= 45, 1/8 would not
    expected = JpegDecoder("simplejpeg").crops(jpegs, [0, 1], jitter, needed, stored_short_side=240)
    crops = JpegDecoder("libjpeg").crops(jpegs, [0, 1], jitter, needed, stored_short_side=240)
    assert crops.shape == (2, 40, 45, 3) == expected.shape and torch.equal(crops, expected)


# ---- the compiled region decoder itself --------------------------------------------------------------------


@needs_region_decoder
@settings(max_examples=60, deadline=None)
@given(data=st.data(), width=st.integers(1, 90), height=st.integers(1, 70),
       kind=st.sampled_from([*SUBSAMPLINGS, "gray"]), progressive=st.booleans(), scale=st.sampled_from([1, 2, 4, 8]),
       mirror=st.booleans(), bgr=st.booleans())
def test_a_region_has_the_pixels_of_the_whole_frame_decode(data, width, height, kind, progressive, scale, mirror,
                                                           bgr):
    from sifar.data._jpeg_region import decode_region

    jpeg = textured_jpeg(width, height, width * height, "4:2:0" if kind == "gray" else kind, kind == "gray",
                         progressive)
    whole = np.empty((-(-height // scale), -(-width // scale), 3), np.uint8)
    assert decode_region(jpeg, whole, 0, 0, whole.shape[1], whole.shape[0], scale) == (whole.shape[1], whole.shape[0])
    left = data.draw(st.integers(0, whole.shape[1] - 1))
    top = data.draw(st.integers(0, whole.shape[0] - 1))
    crop_w = data.draw(st.integers(1, whole.shape[1] - left))
    crop_h = data.draw(st.integers(1, whole.shape[0] - top))
    region = np.empty((crop_h, crop_w, 3), np.uint8)
    decode_region(jpeg, region, left, top, crop_w, crop_h, scale, mirror, bgr)
    expected = whole[top:top + crop_h, left:left + crop_w]
    expected = expected[:, ::-1] if mirror else expected
    np.testing.assert_array_equal(region, expected[..., ::-1] if bgr else expected)


@needs_region_decoder
@pytest.mark.parametrize("data, box, message", [
    (b"not a jpeg", (0, 0, 4, 4), "does not decode: Not a JPEG file"),
    ("truncated", (0, 0, 67, 45), "does not decode"),
    ("jpeg", (60, 0, 8, 4), "the 67x45 frame does not hold the 8x4 region at \\(60, 0\\)"),
    ("jpeg", (0, 40, 4, 6), "does not hold"),
    ("jpeg", (-1, 0, 4, 4), "left, top >= 0"),
    ("jpeg", (0, 0, 0, 4), "width, height >= 1"),
])
def test_the_region_decoder_refuses_bad_input_with_a_value_error(data, box, message):
    from sifar.data._jpeg_region import decode_region

    jpeg = textured_jpeg(67, 45, 5)
    data = {"jpeg": jpeg, "truncated": jpeg[:len(jpeg) // 2]}.get(data, data)
    with pytest.raises(ValueError, match=message):
        decode_region(data, np.empty((max(box[3], 1), max(box[2], 1), 3), np.uint8), *box)


@needs_region_decoder
def test_the_region_decoder_refuses_a_scale_it_cannot_decode_at_and_too_little_or_read_only_memory():
    from sifar.data._jpeg_region import decode_region, image_size

    jpeg = textured_jpeg(67, 45, 5)
    with pytest.raises(ValueError, match="scale_denom must be 1, 2, 4 or 8"):
        decode_region(jpeg, np.empty((4, 4, 3), np.uint8), 0, 0, 4, 4, 3)
    with pytest.raises(ValueError, match="at least width \\* height \\* 3 bytes"):
        decode_region(jpeg, np.empty((4, 4, 3), np.uint8), 0, 0, 5, 4)
    with pytest.raises(TypeError):
        decode_region(jpeg, bytes(48), 0, 0, 4, 4)
    assert image_size(jpeg) == (67, 45)
    with pytest.raises(ValueError, match="does not decode"):
        image_size(b"\xff\xd8 no header")


@needs_region_decoder
def test_damage_below_the_crop_goes_unseen_and_in_it_is_an_error():
    """Decoding stops after the crop's last row, so the bytes after it are never read."""
    from sifar.data._jpeg_region import decode_region

    jpeg = textured_jpeg(64, 240, 9)
    truncated = jpeg[:len(jpeg) * 3 // 4]
    top_rows = np.empty((32, 32, 3), np.uint8)
    decode_region(truncated, top_rows, 0, 0, 32, 32)
    expected = np.empty_like(top_rows)
    decode_region(jpeg, expected, 0, 0, 32, 32)
    np.testing.assert_array_equal(top_rows, expected)
    with pytest.raises(ValueError, match="does not decode"):
        decode_region(truncated, np.empty((32, 32, 3), np.uint8), 0, 200, 32, 32)
