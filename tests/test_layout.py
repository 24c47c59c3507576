import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sifar.layout import (
    frame_cell_map, from_super_image, grid_shape, pad_frames, parse_layout, to_super_image,
)


@pytest.mark.parametrize("n", range(1, 65))
def test_grid_shape_follows_the_papers_rule(n):
    m = math.ceil(math.sqrt(n))
    expected = (m - 1, m) if n <= (m - 1) * m else (m, m)
    assert grid_shape(n) == expected
    rows, cols = grid_shape(n)
    assert rows * cols >= n


@pytest.mark.parametrize("n, grid", [(8, (3, 3)), (12, (3, 4)), (14, (4, 4)), (16, (4, 4)), (1, (1, 1))])
def test_grid_shape_examples_from_the_paper(n, grid):
    assert grid_shape(n) == grid


def test_grid_shape_rejects_no_frames():
    with pytest.raises(ValueError, match="num_frames"):
        grid_shape(0)


@pytest.mark.parametrize("text, expected", [("3x3", (3, 3)), ("1x8", (1, 8)), ("2X4", (2, 4)), (None, (3, 3)),
                                            ((2, 4), (2, 4)), ("auto", (3, 3))])
def test_parse_layout(text, expected):
    assert parse_layout(text, 8) == expected


@pytest.mark.parametrize("bad, message", [("3by3", "look like"), ("2x3", "too few"), ((0, 9), "at least one")])
def test_parse_layout_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_layout(bad, 8)


def test_super_image_places_frames_row_major_in_time_order():
    frames = torch.arange(8).view(1, 8, 1, 1, 1).expand(1, 8, 1, 2, 2).to(torch.uint8)
    image = to_super_image(frames, 3, 3)
    assert image.shape == (1, 1, 6, 6)
    cells = image[0, 0, ::2, ::2]
    assert cells.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 0]]
    assert image[0, 0, 4:, 4:].eq(0).all()  # the padded ninth cell is zero


def test_super_image_of_a_strip_layout():
    frames = torch.arange(8.0).view(1, 8, 1, 1, 1)
    assert to_super_image(frames, 1, 8).flatten().tolist() == list(range(8))
    assert to_super_image(frames, 2, 4)[0, 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 3), frames=st.integers(1, 17), channels=st.integers(1, 3),
       height=st.integers(1, 5), width=st.integers(1, 5), extra=st.integers(0, 3), data=st.data())
def test_round_trip_for_any_layout_that_fits(batch, frames, channels, height, width, extra, data):
    rows = data.draw(st.integers(1, frames + extra))
    cols = math.ceil((frames + extra) / rows)
    x = torch.randint(0, 255, (batch, frames, channels, height, width), dtype=torch.uint8)
    image = to_super_image(x, rows, cols)
    assert image.shape == (batch, channels, rows * height, cols * width)
    assert torch.equal(from_super_image(image, rows, cols, frames), x)
    assert from_super_image(image, rows, cols)[:, frames:].eq(0).all()


def test_super_image_keeps_dtype_and_works_on_float():
    x = torch.randn(2, 8, 3, 4, 4)
    image = to_super_image(x, 3, 3)
    assert image.dtype == torch.float32
    assert torch.equal(from_super_image(image, 3, 3, 8), x)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="B, T, C, H, W"):
        to_super_image(torch.zeros(8, 3, 4, 4), 3, 3)
    with pytest.raises(ValueError, match="do not fit"):
        to_super_image(torch.zeros(1, 10, 3, 4, 4), 3, 3)
    with pytest.raises(ValueError, match="does not split"):
        from_super_image(torch.zeros(1, 3, 10, 9), 3, 3)


def test_pad_frames_appends_zeros():
    x = torch.ones(1, 2, 1)
    assert pad_frames(x, 4).tolist() == [[[1.0], [1.0], [0.0], [0.0]]]


def test_frame_cell_map_matches_the_super_image():
    frames = torch.arange(9.0).view(1, 9, 1, 1, 1).expand(1, 9, 1, 4, 4)
    image = to_super_image(frames, 3, 3)[0, 0]
    assert torch.equal(frame_cell_map(3, 3, 12, 12).float(), image)
