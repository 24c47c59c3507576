"""SIFAR on timm's Swin Transformer: enlarged windows, a global last stage, an optional per-frame embedding.

The configs are those of the paper's Table 1 and the official release (names and aliases alike). Only
what Swin lacks is added here: the frame position embedding ("APE" in the paper's Table 8b, one learned
vector per frame added to every token of that frame) and window sizes derived from the super image.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from sifar.layout import Layout, frame_cell_map
from sifar.models.fused_norm import FUSED_NORM_MODES, FusedNorm, add_window_tables, run_stages
from sifar.models.mlp import set_gelu_epilogue
from sifar.models.registry import ModelConfig, register_config, register_family
from sifar.models.window_attention import AttentionImpl, set_attention
from sifar.precision import compute_dtype

PATCH_SIZE = 4
STAGE_STRIDE = 32  # patch 4, then three 2x merges

WIDTHS: dict[str, dict[str, Any]] = {
    "nano": dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
    "micro": dict(embed_dim=64, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16)),
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "large": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}


class SifarSwin(SwinTransformer):
    """timm's Swin over a super image, with an optional learned embedding per frame cell of the grid. Its stages run
    half-precision inference on CUDA through :mod:`sifar.models.fused_norm` (``fused_norm`` "inference", as built),
    training too with "training", neither with "off" (:func:`set_fused_norm`)."""

    fused_norm: FusedNorm = "inference"

    def __init__(self, grid: Layout, frame_embed: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.grid = grid
        self.frame_pos_embed: nn.Parameter | None = None
        if frame_embed:
            rows, cols = grid
            self.frame_pos_embed = nn.Parameter(torch.zeros(1, rows * cols, self.embed_dim))
            trunc_normal_(self.frame_pos_embed, std=0.02)
            height, width = self.patch_embed.grid_size
            self.register_buffer("frame_index", frame_cell_map(rows, cols, height, width), persistent=False)
        if self.fused_norm != "off":
            add_window_tables(self.layers)

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"frame_pos_embed"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = embed_patches(self.patch_embed, x)  # (B, H, W, C)
        if self.frame_pos_embed is not None:
            x = x + self.frame_pos_embed[0, self.frame_index]
        return self.norm(run_stages(self.layers, _in_autocast_dtype(x), self.fused_norm))


def set_fused_norm(model: nn.Module, mode: FusedNorm = "inference") -> int:
    """Set where every SifarSwin in ``model`` takes the fused residual adds and LayerNorms ("off", "inference", or
    "training": both); turned on, each block gets its window table (:func:`add_window_tables`, once). The number of
    SifarSwins."""
    if mode not in FUSED_NORM_MODES:
        raise ValueError(f"fused norm mode {mode!r}: expected one of {', '.join(FUSED_NORM_MODES)}")
    swins = [m for m in model.modules() if isinstance(m, SifarSwin)]
    for swin in swins:
        swin.fused_norm = mode
        if mode != "off":
            add_window_tables(swin.layers)
    return len(swins)


def embed_patches(embed: PatchEmbed, x: torch.Tensor) -> torch.Tensor:
    """timm's PatchEmbed (a convolution whose kernel is its stride, NHWC out, then its norm) as one matrix
    product over the non-overlapping patches: the same weights and arithmetic.

    Compiled, a rearrange feeds a GEMM. As a convolution inside the compiled training step, cuDNN first
    converted the super image to NHWC and took a convolution kernel of its own for the weight gradient: a
    SIFAR-B-12 training step on an H100 ran at 313.7 clips/s that way, 320.3 this way (same run;
    docs/PERFORMANCE.md).
    """
    if tuple(x.shape[-2:]) != tuple(embed.img_size):
        raise ValueError(f"expected a {embed.img_size[0]}x{embed.img_size[1]} super image, got "
                         f"{tuple(x.shape[-2:])}")
    height, width = embed.patch_size
    patches = rearrange(x, "b c (h ph) (w pw) -> b h w (c ph pw)", ph=height, pw=width)
    return embed.norm(F.linear(patches, embed.proj.weight.flatten(1), embed.proj.bias))


def _in_autocast_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` in autocast's dtype when autocast is on.

    PatchEmbed ends in a LayerNorm, which autocast runs (and returns) in fp32, so stage 1 would carry its
    residual stream in fp32, while stages 2-4 carry it in the autocast dtype (PatchMerging ends in a
    linear layer). Stage 1 is the largest feature map: in bf16 a SIFAR-B-12 training step on an H100 ran
    2% faster with 0.6 GiB less memory (docs/PERFORMANCE.md).
    """
    return x.to(compute_dtype(x))


def stage_window_sizes(windows: Sequence[int], super_size: tuple[int, int], global_last: bool
                       ) -> tuple[tuple[int, int], ...]:
    """Per-stage (h, w) windows; with ``global_last`` the last stage's window is its whole feature map."""
    sizes = [(w, w) for w in windows]
    if global_last:
        sizes[-1] = (super_size[0] // STAGE_STRIDE, super_size[1] // STAGE_STRIDE)
    return tuple(sizes)


@register_family("swin")
def build_swin(config: ModelConfig, num_classes: int, grid: Layout, frame_size: int,
               frame_embed: bool | None = None, attention: AttentionImpl = "auto", **overrides: Any) -> SifarSwin:
    """A SifarSwin for ``config`` at the given grid and frame size; ``overrides`` reach timm's Swin."""
    arch = dict(config.arch)
    windows = overrides.pop("window_size", arch.pop("window_size"))
    global_last = overrides.pop("global_last", arch.pop("global_last"))
    frame_embed = arch.pop("frame_embed", False) if frame_embed is None else frame_embed
    arch.update(overrides)
    super_size = (grid[0] * frame_size, grid[1] * frame_size)
    model = SifarSwin(
        grid=grid,
        frame_embed=frame_embed,
        img_size=super_size,
        patch_size=PATCH_SIZE,
        num_classes=num_classes,
        window_size=stage_window_sizes(windows, super_size, global_last),
        **arch,
    )
    set_attention(model, attention)
    set_gelu_epilogue(model)
    return model


def _swin(name: str, width: str, frames: int, size: int, windows: tuple[int, ...], alias: str,
          global_last: bool = True, description: str = "") -> None:
    register_config(ModelConfig(
        name=name, family="swin", num_frames=frames, frame_size=size, aliases=(alias,),
        arch=dict(WIDTHS[width], window_size=windows, global_last=global_last), description=description,
    ))


# The paper's Table 1 (and the official release's names).
_swin("sifar_base_patch4_window7_224", "base", 8, 224, (7, 7, 7, 7), "SIFAR-B-7", global_last=False,
      description="Swin-B as released, 3x3 super image")
_swin("sifar_base_patch4_window12_192_3x3", "base", 8, 192, (12, 12, 12, 18), "SIFAR-B-12")
_swin("sifar_base_patch4_window14_224_3x3", "base", 8, 224, (14, 14, 14, 21), "SIFAR-B-14")
_swin("sifar_base_patch4_window12_192_4x4", "base", 16, 192, (12, 12, 12, 24), "SIFAR-B-12-16f")
_swin("sifar_base_patch4_window14_224_4x4", "base", 16, 224, (14, 14, 14, 28), "SIFAR-B-14-16f")
_swin("sifar_base_patch4_window12_384", "base", 8, 384, (12, 12, 12, 36), "SIFAR-B-12-384")
_swin("sifar_large_patch4_window12_192_3x3", "large", 8, 192, (12, 12, 12, 18), "SIFAR-L-12")
_swin("sifar_large_patch4_window14_224_3x3", "large", 8, 224, (14, 14, 14, 21), "SIFAR-L-14")
_swin("sifar_large_patch4_window14_224_4x4", "large", 16, 224, (14, 14, 14, 28), "SIFAR-L-14-16f")
_swin("sifar_large_patch4_window12_384", "large", 8, 384, (12, 12, 12, 36), "SIFAR-L-12-384")
# Smaller widths: Swin-T/S for modest GPUs, and a nano model that trains on a CPU in seconds.
_swin("sifar_tiny_patch4_window14_224_3x3", "tiny", 8, 224, (14, 14, 14, 21), "SIFAR-T-14")
_swin("sifar_small_patch4_window14_224_3x3", "small", 8, 224, (14, 14, 14, 21), "SIFAR-S-14")
_swin("sifar_tiny_patch4_window6_96_3x3", "tiny", 8, 96, (6, 6, 6, 9), "SIFAR-T-6-96",
      description="Swin-T widths on 96px frames: quick experiments on one GPU")
_swin("sifar_nano_patch4_window6_64_3x3", "nano", 8, 64, (6, 6, 6, 6), "SIFAR-N-6",
      description="tiny widths on 64px frames: tests and the CPU demo")
# Micro widths on 64px frames, for the temporal study (tools/temporal_study.py) on one GPU. SIFAR-M-12 has
# SIFAR-B-12's windows, which on 64px frames straddle frames in every stage (the paper's point: a larger
# window lets attention compare frames). SIFAR-M-8's windows 8, 8, 4 fit inside one frame (16, 8, 4 tokens a
# side) and divide every layout of 8 frames without padding; frames meet only at shifted-window borders and
# in the global last stage.
_swin("sifar_micro_patch4_window12_64_3x3", "micro", 8, 64, (12, 12, 12, 18), "SIFAR-M-12",
      description="micro widths, SIFAR-B-12's windows, 64px frames: the temporal study on one GPU")
_swin("sifar_micro_patch4_window8_64_3x3", "micro", 8, 64, (8, 8, 4, 6), "SIFAR-M-8",
      description="micro widths, windows inside one 64px frame")
