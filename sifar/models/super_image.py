"""The super-image path that turns any image classifier into a video classifier (paper Sec. 3.2)."""

from __future__ import annotations

import torch
from torch import nn

from sifar.layout import Layout, to_super_image


class SuperImageClassifier(nn.Module):
    """Frames (B, T, C, H, W) -> one super image (B, C, rows*H, cols*W) -> any image classifier -> logits."""

    def __init__(self, backbone: nn.Module, num_frames: int, grid: Layout, frame_size: int,
                 name: str = "", mean: tuple[float, ...] = (), std: tuple[float, ...] = ()) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_frames = num_frames
        self.grid = tuple(grid)
        self.frame_size = frame_size
        self.name = name
        self.mean = mean
        self.std = std

    @property
    def num_classes(self) -> int:
        return self.backbone.num_classes

    def super_image(self, frames: torch.Tensor) -> torch.Tensor:
        """Check the clip's shape against the model and lay it out; the one line the paper talks about."""
        if frames.ndim != 5:
            raise ValueError(f"{self.name}: expected frames (B, T, C, H, W), got shape {tuple(frames.shape)}")
        _, t, _, h, w = frames.shape
        if t != self.num_frames or (h, w) != (self.frame_size, self.frame_size):
            raise ValueError(
                f"{self.name} expects {self.num_frames} frames of {self.frame_size}x{self.frame_size}, "
                f"got {t} frames of {h}x{w}"
            )
        return to_super_image(frames, *self.grid)

    def forward_features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(self.super_image(frames))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.super_image(frames))

    def _final_norm(self) -> nn.Module | None:
        """Swin ends its features with a LayerNorm over channels of an NHWC map; ResNet has none (NCHW)."""
        return getattr(self.backbone, "norm", None)

    def feature_map(self, frames: torch.Tensor) -> torch.Tensor:
        """The last feature map before any final norm, (B, C, h, w) for every backbone (what CAMs weigh)."""
        norm = self._final_norm()
        if norm is None:
            return self.backbone.forward_features(self.super_image(frames))
        captured: list[torch.Tensor] = []  # the final norm's input: timm's forward_features applies the norm
        hook = norm.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
        try:
            self.backbone.forward_features(self.super_image(frames))
        finally:
            hook.remove()
        return captured[0].permute(0, 3, 1, 2)

    def head_from_feature_map(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from a (B, C, h, w) :meth:`feature_map`: the final norm (if any), pooling and classifier."""
        norm = self._final_norm()
        if norm is None:
            return self.backbone.forward_head(features)
        return self.backbone.forward_head(norm(features.permute(0, 2, 3, 1)))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to this module) that get no weight decay besides norms and biases."""
        names = getattr(self.backbone, "no_weight_decay", lambda: set())()
        return {f"backbone.{n}" for n in names}

    def new_module_prefixes(self) -> tuple[str, ...]:
        """Modules that image checkpoints cannot hold (e.g. large-kernel blocks), so loading leaves them be."""
        return tuple(f"backbone.{p}" for p in getattr(self.backbone, "new_module_prefixes", ()))
