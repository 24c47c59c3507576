"""The frame-averaging baseline (TSN-style): every frame classified alone by the image backbone, scores averaged.

It is the super-image path with a 1x1 grid per frame: the same backbone sees one frame at a time, and the T
frames' logits are averaged (TSN's "average consensus"). An average is blind to the order of the frames, so
on data whose classes differ only in frame order (the synthetic dataset's direction pairs) it can do no better
than chance within each pair: the control that shows what a super image adds.
"""

from __future__ import annotations

import torch

from sifar.layout import Layout, parse_layout
from sifar.models.super_image import SuperImageClassifier

SINGLE_FRAME: Layout = (1, 1)


def frame_average_grid(layout: str | Layout | None, frame_embed: bool | None) -> Layout:
    """The 1x1 grid each frame is classified on; any other layout, or a frame embedding, is an error."""
    if layout not in (None, "auto") and parse_layout(layout, 1) != SINGLE_FRAME:
        raise ValueError(f"frame averaging classifies each frame alone (a 1x1 grid); layout {layout!r} does not apply")
    if frame_embed:
        raise ValueError("frame averaging classifies each frame alone; the per-frame position embedding does not apply")
    return SINGLE_FRAME


class FrameAverageClassifier(SuperImageClassifier):
    """Frames (B, T, C, H, W) -> T images (B*T, C, H, W) -> backbone -> logits averaged over T -> (B, classes)."""

    def __init__(self, backbone: torch.nn.Module, num_frames: int, grid: Layout, frame_size: int,
                 name: str = "", mean: tuple[float, ...] = (), std: tuple[float, ...] = ()) -> None:
        if tuple(grid) != SINGLE_FRAME:
            raise ValueError(f"{name}: a frame-averaging classifier works on a 1x1 grid, got {grid}")
        super().__init__(backbone, num_frames, grid, frame_size, name=name, mean=mean, std=std)

    def super_image(self, frames: torch.Tensor) -> torch.Tensor:
        """Each frame is its own 1x1 super image: (B, T, C, H, W) -> (B*T, C, H, W), after the shape checks."""
        if frames.ndim != 5:
            raise ValueError(f"{self.name}: expected frames (B, T, C, H, W), got shape {tuple(frames.shape)}")
        _, t, _, h, w = frames.shape
        if t != self.num_frames or (h, w) != (self.frame_size, self.frame_size):
            raise ValueError(f"{self.name} (frame average) expects {self.num_frames} frames of "
                             f"{self.frame_size}x{self.frame_size}, got {t} frames of {h}x{w}")
        return frames.flatten(0, 1)

    def forward_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame features, (B, T, ...)."""
        return self.backbone.forward_features(self.super_image(frames)).unflatten(0, (frames.shape[0], -1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        logits = self.backbone(self.super_image(frames))
        return logits.unflatten(0, (frames.shape[0], -1)).mean(1)
