"""CNN SIFAR (paper Table 7): timm's ResNet over a super image, optionally with large-kernel blocks.

The paper widens the receptive field across frames by appending one or two residual bottleneck blocks
whose middle convolution has a large kernel (suffixes C7, C11, C21, and C21-11 for two blocks).
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from sifar.layout import Layout
from sifar.models.registry import ModelConfig, register_config, register_family


class LargeKernelBottleneck(nn.Module):
    """A residual bottleneck (1x1 reduce, kxk, 1x1 expand) whose middle convolution has a large kernel."""

    def __init__(self, channels: int, kernel_size: int, reduction: int = 4) -> None:
        super().__init__()
        mid = channels // reduction
        self.conv1 = nn.Conv2d(channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn3.weight)  # start as identity so pretrained ResNet features pass unchanged
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(out + x)


@register_family("resnet")
def build_resnet(config: ModelConfig, num_classes: int, grid: Layout, frame_size: int, **overrides: Any) -> nn.Module:
    """timm's ResNet with the config's large-kernel blocks appended to its last stage."""
    arch = dict(config.arch)
    kernels = overrides.pop("large_kernels", arch.pop("large_kernels"))
    arch.update(overrides)
    model = timm.create_model(arch.pop("timm_name"), pretrained=False, num_classes=num_classes, **arch)
    width = model.num_features
    model.layer4.extend(LargeKernelBottleneck(width, k) for k in kernels)
    model.new_module_prefixes = tuple(f"layer4.{len(model.layer4) - len(kernels) + i}." for i in range(len(kernels)))
    return model


def _resnet(depth: int, kernels: tuple[int, ...]) -> None:
    suffix = "".join(f"_c{k}" if i == 0 else f"_{k}" for i, k in enumerate(kernels))
    alias = "-".join([f"SIFAR-R{depth}", *([f"C{'-'.join(map(str, kernels))}"] if kernels else [])])
    register_config(ModelConfig(
        name=f"sifar_resnet{depth}{suffix}", family="resnet", num_frames=8, frame_size=224, aliases=(alias,),
        arch=dict(timm_name=f"resnet{depth}", large_kernels=kernels),
        description=f"ResNet-{depth}" + (f" + large-kernel blocks {kernels}" if kernels else ""),
    ))


for _depth, _kernels in [(50, ()), (101, ()), (50, (7,)), (50, (11,)), (50, (21,)), (50, (21, 11)),
                         (101, (21,)), (101, (21, 11)), (18, ()), (18, (7,))]:
    _resnet(_depth, _kernels)
