"""The one place where frames become a super image (and back).

A clip of T frames is laid out row-major, in time order, on a ``rows x cols`` grid; cells past the
last frame are zero ("empty images are padded at the end", SIFAR Sec. 3).
"""

from __future__ import annotations

import math
import re

import torch
from einops import rearrange

Layout = tuple[int, int]


def grid_shape(num_frames: int) -> Layout:
    """The paper's layout rule: m = ceil(sqrt(n)); (m-1) x m when n <= (m-1)*m, else m x m.

    The paper prints ``n < (m-1)*m``; with the strict form 12 frames would give 4x4, contradicting its
    own example (12 -> 3x4), so the rule here uses ``<=``. One frame is a 1x1 grid.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    m = math.ceil(math.sqrt(num_frames))
    if num_frames <= (m - 1) * m:
        return (m - 1, m)
    return (m, m)


def parse_layout(layout: str | Layout | None, num_frames: int) -> Layout:
    """Resolve a layout given as None (the paper's rule), ``"3x3"`` or ``(rows, cols)``; checks it fits."""
    if layout is None or layout == "auto":
        return grid_shape(num_frames)
    if isinstance(layout, str):
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", layout)
        if not match:
            raise ValueError(f"layout must look like '3x3' (rows x cols), got {layout!r}")
        rows, cols = int(match.group(1)), int(match.group(2))
    else:
        rows, cols = (int(v) for v in layout)
    if rows < 1 or cols < 1:
        raise ValueError(f"layout needs at least one row and one column, got {rows}x{cols}")
    if rows * cols < num_frames:
        raise ValueError(f"layout {rows}x{cols} has {rows * cols} cells, too few for {num_frames} frames")
    return (rows, cols)


def pad_frames(x: torch.Tensor, cells: int, dim: int = 1) -> torch.Tensor:
    """Append zero frames along ``dim`` until there are ``cells`` frames."""
    missing = cells - x.shape[dim]
    if missing < 0:
        raise ValueError(f"{x.shape[dim]} frames do not fit in {cells} grid cells")
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def to_super_image(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, C, rows*H, cols*W): frames row-major in time order, zero cells at the end."""
    if x.ndim != 5:
        raise ValueError(f"expected frames shaped (B, T, C, H, W), got {tuple(x.shape)}")
    x = pad_frames(x, rows * cols, dim=1)
    return rearrange(x, "b (sh sw) c h w -> b c (sh h) (sw w)", sh=rows, sw=cols)


def from_super_image(x: torch.Tensor, rows: int, cols: int, num_frames: int | None = None) -> torch.Tensor:
    """(B, C, rows*H, cols*W) -> (B, T, C, H, W); the inverse of :func:`to_super_image`.

    ``num_frames`` drops the padding cells; by default all ``rows * cols`` cells are returned.
    """
    if x.ndim != 4:
        raise ValueError(f"expected a super image shaped (B, C, H, W), got {tuple(x.shape)}")
    if x.shape[-2] % rows or x.shape[-1] % cols:
        raise ValueError(f"super image {tuple(x.shape[-2:])} does not split into a {rows}x{cols} grid")
    frames = rearrange(x, "b c (sh h) (sw w) -> b (sh sw) c h w", sh=rows, sw=cols)
    return frames if num_frames is None else frames[:, :num_frames]


def frame_cell_map(rows: int, cols: int, height: int, width: int) -> torch.Tensor:
    """(height, width) long tensor giving, for each position of a super-image grid, the frame index there.

    Used to add a per-frame embedding to feature maps (each cell is ``height/rows x width/cols``).
    """
    if height % rows or width % cols:
        raise ValueError(f"a {height}x{width} map does not split into a {rows}x{cols} grid")
    cells = torch.arange(rows * cols).view(rows, cols)
    return cells.repeat_interleave(height // rows, 0).repeat_interleave(width // cols, 1)
