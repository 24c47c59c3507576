"""Mixup and CutMix for video batches on the device, through timm's ``Mixup``.

A (B, T, C, H, W) batch is viewed as (B, T*C, H, W) images, so timm's CutMix cuts one box through
all frames of a clip and mixup blends whole clips; the targets come back as soft labels (label
smoothing included). Randomness is timm's: it draws from NumPy's global generator.
"""

from __future__ import annotations

import torch
from timm.data import Mixup


class VideoMixup:
    """``mixed_frames, soft_targets = VideoMixup(num_classes)(frames, labels)`` on float (B, T, C, H, W)."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 label_smoothing: float = 0.1, prob: float = 1.0, switch_prob: float = 0.5,
                 mode: str = "batch"):
        self.num_classes = num_classes
        self.mixup = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob,
                            switch_prob=switch_prob, mode=mode, label_smoothing=label_smoothing,
                            num_classes=num_classes)

    def __call__(self, frames: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if frames.ndim != 5:
            raise ValueError(f"expected frames shaped (B, T, C, H, W), got {tuple(frames.shape)}")
        batch, time, channels, height, width = frames.shape
        if batch % 2:
            raise ValueError(f"mixup pairs each clip with another: the batch size must be even, got {batch}")
        images = frames.reshape(batch, time * channels, height, width)
        mixed, targets = self.mixup(images, labels)
        return mixed.view(batch, time, channels, height, width), targets
