"""A tiny VGG-style CNN SIFAR that learns the synthetic dataset from scratch on a CPU in minutes (the demo's).

Stacked 3x3 convolutions in four stages (the first at full resolution, each other halving it), then one
large-kernel mixing layer and a fully connected head over the whole feature map:

- The **fully connected head** keeps where each feature sits on the super image, and so which frame it came
  from and where in that frame: the order of the frames is in the head's weights from the first step, as
  the paper's absolute position embedding gives it to a Swin. A ResNet's global average pooling throws the
  position away and must rebuild it from the zero padding; from scratch on the synthetic data that costs it
  hundreds of steps at chance (docs/RESULTS.md).
- The **large kernel** (the paper's Table 7 idea) sees the same place in neighbouring frames at once: at
  stride 8, a 7x7 kernel spans three frames of 24 px. It is depthwise followed by a 1x1 convolution (as in
  ConvNeXt): on the CPU it costs what one 3x3 layer of the last stage costs, where a full 7x7 convolution
  doubles the step. Telling which way an object turns needs it: without it, rotation stayed near chance
  for 1200 steps of 32 clips (sweep in docs/RESULTS.md).

timm has VGG, but its head is a 4096-wide 7x7 convolution sized for 224 px ImageNet images; this model is
small enough to train on two CPU cores, so it is written here.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import checkpoint_seq
from torch import nn

from sifar.layout import Layout
from sifar.models.registry import ModelConfig, register_config, register_family


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def large_kernel_mixer(channels: int, kernel_size: int) -> nn.Sequential:
    """Depthwise ``kernel_size`` x ``kernel_size`` convolution, then 1x1 across channels."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False),
        nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True))


class PositionalCNN(nn.Module):
    """VGG-style stages, a large-kernel mixer and a fully connected head for one fixed input size."""

    def __init__(self, num_classes: int, input_size: tuple[int, int], widths: tuple[int, ...] = (16, 32, 64, 128),
                 kernel_size: int = 7, hidden: int = 256, drop_rate: float = 0.0) -> None:
        super().__init__()
        stride = 2 ** (len(widths) - 1)
        if input_size[0] % stride or input_size[1] % stride:
            raise ValueError(f"a super image of {input_size[0]}x{input_size[1]} px does not divide into the "
                             f"model's stride {stride}: choose a frame size that a multiple of {stride} fits")
        stages, channels = [], 3
        for i, width in enumerate(widths):
            first_stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(*conv_bn_relu(channels, width, first_stride), *conv_bn_relu(width, width)))
            channels = width
        stages.append(large_kernel_mixer(channels, kernel_size))
        self.stages = nn.Sequential(*stages)
        self.num_classes = num_classes
        self.num_features = channels
        self.feature_size = (input_size[0] // stride, input_size[1] // stride)
        self.grad_checkpointing = False
        self.pre_logits = nn.Sequential(nn.Flatten(), nn.Dropout(drop_rate),
                                        nn.Linear(channels * self.feature_size[0] * self.feature_size[1], hidden),
                                        nn.ReLU(inplace=True), nn.Dropout(drop_rate))
        self.fc = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable


@register_family("positional_cnn")
def build_positional_cnn(config: ModelConfig, num_classes: int, grid: Layout, frame_size: int,
                         drop_path_rate: float = 0.0, **overrides: Any) -> PositionalCNN:
    """The config's :class:`PositionalCNN` for a super image of ``grid`` frames of ``frame_size`` px (its
    fully connected head already knows each frame's place: no frame embedding)."""
    if drop_path_rate:
        raise ValueError(f"{config.name} has no residual branches for stochastic depth: use drop path 0 "
                         f"(--drop-path 0), got {drop_path_rate}")
    return PositionalCNN(num_classes, (grid[0] * frame_size, grid[1] * frame_size), **{**config.arch, **overrides})


register_config(ModelConfig(
    name="sifar_vgg_tiny_24_3x3", family="positional_cnn", num_frames=8, frame_size=24, aliases=("SIFAR-VGG-T",),
    arch=dict(widths=(16, 32, 64, 128), kernel_size=7, hidden=256),
    description="tiny VGG-style CNN + depthwise 7x7 mixer + fully connected head (CPU demo)",
))
