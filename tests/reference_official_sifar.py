"""An independent re-implementation of the official SIFAR forward pass (Microsoft Swin layout), for tests.

It follows the published architecture: patch embedding with norm, a per-frame embedding added to every
token of its frame, Swin stages whose patch merging sits at the END of each stage, shifted windows with
the (0 / -100) mask, mean pooling and a linear head; input is frames stacked on channels (B, T*3, H, W),
zero-padded to fill the grid. Its state-dict keys are those of the official release, buffers included,
so a test can write an "official" checkpoint and check this project's model gives the same logits.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


def _partition(x, w):
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def _reverse(windows, w, h, wd):
    c = windows.shape[-1]
    x = windows.view(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, wd, c)


class Attention(nn.Module):
    def __init__(self, dim, heads, window):
        super().__init__()
        self.heads, self.window = heads, window
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.5)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(b // nw, nw, self.heads, n, n) + mask[None, :, None]).view(b, self.heads, n, n)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, resolution, heads, window, shift):
        super().__init__()
        if min(resolution) <= window:
            window, shift = min(resolution), 0
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads, window)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim)
        self.register_buffer("attn_mask", self._mask() if shift else None)

    def _mask(self):
        h, w = self.resolution
        img = torch.zeros(1, h, w, 1)
        spans = (slice(0, -self.window), slice(-self.window, -self.shift), slice(-self.shift, None))
        for i, (hs, ws) in enumerate((a, b) for a in spans for b in spans):
            img[:, hs, ws, :] = i
        win = _partition(img, self.window).squeeze(-1)
        diff = win[:, None, :] - win[:, :, None]
        return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)

    def forward(self, x):
        h, w = self.resolution
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = _reverse(self.attn(_partition(y, self.window), self.attn_mask), self.window, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class Merge(nn.Module):
    def __init__(self, dim, resolution):
        super().__init__()
        self.resolution = resolution
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        h, w = self.resolution
        x = x.view(x.shape[0], h, w, -1)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.flatten(1, 2)))


class Stage(nn.Module):
    def __init__(self, dim, resolution, depth, heads, window, last):
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2) for i in range(depth))
        self.downsample = None if last else Merge(dim, resolution)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class OfficialSifar(nn.Module):
    def __init__(self, num_frames, rows, frame_size, embed_dim, depths, heads, windows, num_classes, ape=True):
        super().__init__()
        self.duration = num_frames + (-num_frames) % rows
        self.num_frames, self.rows, self.cols = num_frames, rows, self.duration // rows
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, 4, 4)
        self.patch_embed.norm = nn.LayerNorm(embed_dim)
        self.res = (rows * frame_size // 4, self.cols * frame_size // 4)
        self.frame_pos_embed = nn.Parameter(torch.randn(1, self.duration, embed_dim) * 0.5) if ape else None
        self.layers = nn.ModuleList(
            Stage(embed_dim * 2 ** i, (self.res[0] >> i, self.res[1] >> i), d, h, w, i == len(depths) - 1)
            for i, (d, h, w) in enumerate(zip(depths, heads, windows)))
        self.norm = nn.LayerNorm(embed_dim * 2 ** (len(depths) - 1))
        self.head = nn.Linear(embed_dim * 2 ** (len(depths) - 1), num_classes)

    def forward(self, x):  # (B, T*3, H, W)
        pad = x.new_zeros(x.shape[0], 3 * (self.duration - self.num_frames), *x.shape[2:])
        x = rearrange(torch.cat([x, pad], 1), "b (th tw c) h w -> b c (th h) (tw w)", th=self.rows, c=3)
        x = self.patch_embed.norm(self.patch_embed.proj(x).flatten(2).transpose(1, 2))
        if self.frame_pos_embed is not None:
            fh, fw = self.res[0] // self.rows, self.res[1] // self.cols
            cell = torch.arange(self.duration).view(self.rows, self.cols)
            cell = cell.repeat_interleave(fh, 0).repeat_interleave(fw, 1).flatten()
            x = x + self.frame_pos_embed[0, cell]
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean(1))
