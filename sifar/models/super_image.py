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

    def stages(self) -> list[nn.Module]:
        """The backbone's stages in the order its ``forward_features`` runs them, one after the other: Swin's
        ``layers``, the VGG's ``stages``, ResNet's ``layer1`` to ``layer4``; none for a backbone without such
        parts (its whole ``forward_features``, without a final norm, is then its one stage)."""
        for name in ("layers", "stages"):
            if isinstance(getattr(self.backbone, name, None), nn.Sequential):
                return list(getattr(self.backbone, name))
        resnet_stages = [getattr(self.backbone, f"layer{i}", None) for i in range(1, 5)]
        return resnet_stages if all(resnet_stages) else []

    def stage_index(self, stage: int) -> int:
        """``stage`` counted from 0 (negative: from the last, -1 the last), checked against the backbone."""
        count = max(len(self.stages()), 1)
        if not -count <= stage < count:
            raise ValueError(f"{self.name} has {count} stages (0 to {count - 1}, or -1 for the last), got {stage}")
        return stage % count

    def feature_map(self, frames: torch.Tensor, stage: int = -1) -> torch.Tensor:
        """The output of stage ``stage`` (default the last, before any final norm), (B, C, h, w) for every
        backbone: what CAMs weigh."""
        stages, index = self.stages(), self.stage_index(stage)
        if not stages:
            return self.backbone.forward_features(self.super_image(frames))
        captured: list[torch.Tensor] = []
        hook = stages[index].register_forward_hook(lambda _module, _args, output: captured.append(output))
        try:
            self.backbone.forward_features(self.super_image(frames))
        finally:
            hook.remove()
        return self._channels_first(captured[0])

    def later_stages(self, features: torch.Tensor, stage: int) -> torch.Tensor:
        """The last stage's (B, C, h, w) output from the (B, C, h, w) output of stage ``stage``: the stages after it."""
        x = features.permute(0, 2, 3, 1) if self._stages_channels_last() else features
        for later in self.stages()[self.stage_index(stage) + 1:]:
            x = later(x)
        return self._channels_first(x)

    def _stages_channels_last(self) -> bool:
        """Swin's stages pass NHWC maps and end with a final norm; the CNNs' pass NCHW maps and have none."""
        return self._final_norm() is not None

    def _channels_first(self, stage_output: torch.Tensor) -> torch.Tensor:
        return stage_output.permute(0, 3, 1, 2) if self._stages_channels_last() else stage_output

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
