from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from sifar.data.jpeg import JpegError, is_complete_jpeg, jpeg_size, split_jpeg_stream


def jpeg(width: int, height: int, seed: int, **save_options) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", **save_options)
    return buffer.getvalue()


def test_split_a_concatenated_stream_back_into_images():
    # Noise makes 0xFF bytes in the entropy-coded data (stuffed as FF 00); restart markers and an EXIF
    # segment check the parser skips what is not an end marker.
    images = [jpeg(33, 17, 0), jpeg(8, 8, 1, quality=100), jpeg(40, 30, 2, exif=b"Exif\x00\x00" + b"\xff\xd9" * 4),
              jpeg(16, 16, 3, progressive=True)]
    assert split_jpeg_stream(b"".join(images)) == images
    assert [jpeg_size(i) for i in images] == [(33, 17), (8, 8), (40, 30), (16, 16)]
    assert split_jpeg_stream(b"") == []


def test_incomplete_or_foreign_data_is_rejected():
    image = jpeg(20, 10, 0)
    assert is_complete_jpeg(image)
    assert not is_complete_jpeg(image[:-10])
    assert not is_complete_jpeg(image + b"x")
    with pytest.raises(JpegError):
        split_jpeg_stream(image + image[:50])
    with pytest.raises(JpegError, match="no JPEG start marker"):
        split_jpeg_stream(b"PNG...")
    with pytest.raises(JpegError, match="not a JPEG"):
        jpeg_size(b"\x89PNG")
