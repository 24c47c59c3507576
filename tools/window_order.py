"""Swin blocks that run their body in window order: an exact reordering of timm's block (issue 30, a candidate
measured by ``tools/bench_train``'s ``-winorder`` variants; no command uses it yet).

timm's block normalises its input in image order, rolls and partitions the normalised tokens into windows,
attends, merges the windows and rolls them back, adds the residual in image order and normalises again for the
MLP. LayerNorm, the residual adds, drop path (one draw a sample) and the MLP act on each token alone, so they
give the same result in any token order. This block rolls and partitions its input once, runs norm1, the
attention, the residual add, norm2, the MLP and its residual add on the windows, and merges and rolls back its
output once.

Why: compiled, each of timm's LayerNorm passes reduces over tokens in one order and writes them in another
(image order in, window order out), and Inductor gave most of them two kernels, a reduction and a pointwise pass
that reads its input again. A SIFAR-B-12 inference step on an H100 spent 18.0 ms in them, about 1.8 times what
their bytes take at the card's bandwidth (``tools/profile_kinds.py``; docs/PERFORMANCE.md, "Session 26"). Here
every LayerNorm reads and writes in the same (window) order; the two reorderings left, into windows at the
block's start and back at its end, are gathers the neighbouring kernels can absorb.
"""

from __future__ import annotations

import torch
from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse
from torch import nn


class WindowOrderSwinBlock(SwinTransformerBlock):
    """timm's ``SwinTransformerBlock`` (same parameters, same checkpoints, the same function) computing in window
    order (see the module docstring). Feature maps that need padding to whole windows, and dynamic masks, take
    timm's own path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        window_h, window_w = self.window_size
        if height % window_h or width % window_w or getattr(self, "dynamic_mask", False):
            return super().forward(x)
        shift = tuple(self.shift_size)
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        # (batch, windows * tokens, C): drop path draws one value a sample, as timm's does
        tokens = window_partition(x, self.window_size).reshape(batch, -1, channels)
        windows = self.norm1(tokens).view(-1, self.window_area, channels)
        tokens = tokens + self.drop_path1(self.attn(windows, mask=self.attn_mask).view(batch, -1, channels))
        tokens = tokens + self.drop_path2(self.mlp(self.norm2(tokens)))
        x = window_reverse(tokens.view(-1, window_h, window_w, channels), self.window_size, height, width)
        return torch.roll(x, shifts=shift, dims=(1, 2)) if any(shift) else x


def use_window_order(model: nn.Module) -> int:
    """Make every timm Swin block of ``model`` a :class:`WindowOrderSwinBlock`, in place (the class only: the
    subclass holds no state of its own, so the parameters, buffers and checkpoint keys stay the same objects);
    the number of blocks. ValueError for a model without Swin blocks (a CNN)."""
    blocks = [m for m in model.modules() if type(m) in (SwinTransformerBlock, WindowOrderSwinBlock)]
    if not blocks:
        raise ValueError(f"{getattr(model, 'name', type(model).__name__)} has no Swin block to run in window order")
    for block in blocks:
        block.__class__ = WindowOrderSwinBlock
    return len(blocks)
