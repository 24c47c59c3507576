"""Window attention for SIFAR's Swin in three interchangeable implementations.

timm's fused path adds the relative-position bias and the shifted-window mask into one dense
(windows * batch, heads, N, N) tensor before ``scaled_dot_product_attention``; on a 3x3 super image at
batch 32 that is gigabytes of memory traffic per block (and as much again for the bias gradient). The
``flex`` implementation folds both into FlexAttention's ``score_mod`` instead: the kernel reads the bias from
one (heads, N, N) tensor shared by all windows and the shift mask from a per-window region id, so nothing of
size N x N per window is ever written.

- ``eager``: the explicit softmax(QK^T + B + M) V of the official code (the baseline of the benchmarks);
- ``sdpa``:  timm's fused path (``scaled_dot_product_attention`` with a dense additive mask);
- ``flex``:  FlexAttention with the bias and mask in ``score_mod`` (CUDA for training; compiled kernels);
- ``auto``:  ``flex`` on CUDA tensors, ``sdpa`` elsewhere (FlexAttention has no CPU backward).
All compute the same function; tests check they agree.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention
from torch import nn
from torch.nn.attention.flex_attention import flex_attention

from sifar.torch_compat import raise_recompile_limit, torch_at_least

AttentionImpl = Literal["auto", "eager", "sdpa", "flex"]
ATTENTION_IMPLS: tuple[str, ...] = get_args(AttentionImpl)
ATTENTION_HELP = ("Swin window attention: auto (flex on GPU, sdpa on CPU), flex (FlexAttention), sdpa (fused), "
                  "eager (as the official code).")
# FlexAttention tiles smaller than its defaults (128): a 144-token window (12x12) pads to 192 tokens in tiles
# of 64, not 256, and not at all in the backward's tiles of 16 along the query (dK/dV) and key (dQ) axes
# (H100, SIFAR-B-12 training: 276 clips/s with the defaults, 301-302 with tiles of 64/64/32/64/64/32, 305 with
# 64/64/16/64/64/16). The forward's keys in tiles of 32 (160 of a 144-token window, not 192): its kernels over
# all of SIFAR-B-12's blocks take 15.8 GPU ms an inference step against 17.2 with 64 (tools/bench_flex_tiles.py,
# session 22; tools/bench_train.py measures the whole step with both, docs/PERFORMANCE.md). The same tiles win at
# SIFAR-B-14-16f's 196-token windows (27.2 against 29.8 GPU ms with 64; session 23), so one set serves both.
FLEX_KERNEL_OPTIONS = {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_M1": 16, "BLOCK_N1": 64, "BLOCK_M2": 64, "BLOCK_N2": 16}
# The bias reaches FlexAttention in the scores' dtype (bf16 under autocast, as SDPA adds its mask): the kernels
# then read 2 bytes of it per score instead of 4 (H100, SIFAR-B-12 training: 329.5 -> 350.8 clips/s in one run,
# docs/PERFORMANCE.md). Its gradient is still summed in fp32 by FlexAttention and rounded to bf16 once, as every
# weight gradient is under autocast. torch 2.11 casts that fp32 sum back to the bias's dtype (pytorch#174251);
# earlier versions fail on a bf16 bias made inside a compiled model, so they keep the fp32 bias.
BIAS_IN_SCORE_DTYPE = torch_at_least(2, 11)
SHIFT_MASK_VALUE = -100.0  # the value timm and the official Swin put between tokens of different regions

# Compiled kernels kept per process: one per (stage, shifted or not, batch size) signature. Dynamo's default
# of 8 is spent by one Swin's training shapes alone; past it, FlexAttention silently falls back to its unfused
# path (evaluation's last, smaller batch and sifar-predict's views did, at a tenth of the speed).
FLEX_RECOMPILE_LIMIT = 64

_compiled_flex_attention = None


def compiled_flex_attention():
    """FlexAttention compiled once per process; uncompiled it would materialise the scores."""
    global _compiled_flex_attention
    if _compiled_flex_attention is None:
        raise_recompile_limit(FLEX_RECOMPILE_LIMIT)
        _compiled_flex_attention = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex_attention


@torch.library.custom_op("sifar::materialize", mutates_args=())
def materialize(x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` that ``torch.compile`` computes as a tensor of its own instead of inlining it.

    FlexAttention's captured tensors are otherwise fused into its kernel when no gradient is needed: the
    relative-position bias then becomes two dependent gathers (index, then table) for every score, and a
    compiled SIFAR-B-12 inferred in 2.4x the time of its own forward with gradients on (H100,
    docs/PERFORMANCE.md). A custom op is opaque to the compiler, so the (heads, N, N) bias is written once.
    Only needed inside a compiled graph: eagerly, the bias reaches the kernel as a tensor anyway.
    """
    return x.clone()


@materialize.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


materialize.register_autograd(lambda ctx, grad: grad)


def window_regions(mask: torch.Tensor) -> torch.Tensor:
    """(windows, N) region ids from timm's (windows, N, N) 0/-100 shift mask.

    Two tokens of a window may attend to each other iff they lie in the same region of the shifted
    image; labelling each token by the first token it may attend to gives one id per region.
    """
    return (mask == 0).to(torch.int32).argmax(-1).to(torch.int32)


def window_score_mod(bias: torch.Tensor, regions: torch.Tensor | None):
    """FlexAttention's ``score_mod`` adding the (heads, N, N) ``bias`` and, given the (windows, N) ``regions`` of
    a shifted block (:func:`window_regions`), the shift mask between tokens of different regions."""
    if regions is None:
        def score_mod(score, b, h, q_idx, kv_idx):
            return score + bias[h, q_idx, kv_idx]
        return score_mod
    num_windows = regions.shape[0]

    def shifted_score_mod(score, b, h, q_idx, kv_idx):
        window = b % num_windows  # windows are the fast axis of timm's (batch * windows) dimension
        same = regions[window, q_idx] == regions[window, kv_idx]
        return score + bias[h, q_idx, kv_idx] + torch.where(same, 0.0, SHIFT_MASK_VALUE)
    return shifted_score_mod


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W, H, N, D) views q, k, v of the (W, N, 3*H*D) qkv activations, as timm's WindowAttention splits them
    (views, never copies: a kernel may write gradients into them)."""
    windows_batch, tokens, channels = qkv.shape
    return qkv.view(windows_batch, tokens, 3, num_heads, channels // (3 * num_heads)).permute(2, 0, 3, 1, 4).unbind(0)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """The (W, N, H*D) tensor of a (W, H, N, D) one, as the output projection reads it."""
    windows_batch, _, tokens, _ = x.shape
    return x.transpose(1, 2).reshape(windows_batch, tokens, -1)


class SifarWindowAttention(WindowAttention):
    """timm's WindowAttention (same parameters, same checkpoints) with a choice of attention kernel."""

    impl: str = "sdpa"
    flex_kernel_options: dict | None = None
    shift_regions: torch.Tensor  # (windows, N) region ids of a shifted block (see :func:`window_regions`)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        impl = ("flex" if x.is_cuda else "sdpa") if self.impl == "auto" else self.impl
        if impl != "flex":
            return super().forward(x, mask)
        out = self._flex(*split_heads(self.qkv(x), self.num_heads), mask)
        return self.proj_drop(self.proj(merge_heads(out)))

    def score_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """The (heads, N, N) relative-position bias, gathered from the table outside any attention kernel (its
        gradient then lands on N*N*heads distinct addresses instead of being scattered by every score into the
        small table), in the scores' ``dtype`` (see BIAS_IN_SCORE_DTYPE)."""
        bias = self._get_rel_pos_bias()[0]
        return bias.to(dtype) if BIAS_IN_SCORE_DTYPE else bias

    def _flex(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bias = self.score_bias(q.dtype)
        if torch.compiler.is_compiling():
            bias = materialize(bias)
        score_mod = window_score_mod(bias, None if mask is None else self.shift_regions)
        attend = flex_attention
        if q.is_cuda and not torch.compiler.is_compiling():
            attend = compiled_flex_attention()
        return attend(q, k, v, score_mod=score_mod, scale=self.scale, kernel_options=self.flex_kernel_options)


def sifar_window_attention(attention: WindowAttention) -> SifarWindowAttention:
    """A :class:`SifarWindowAttention` holding ``attention``'s own parameters (the same tensors, on their
    device, meta included), in its training mode."""
    heads = attention.num_heads
    head_dim = attention.qkv.out_features // (3 * heads)
    with torch.device(attention.qkv.weight.device):
        replacement = SifarWindowAttention(attention.qkv.in_features, heads, head_dim=head_dim,
                                           window_size=attention.window_size, qkv_bias=attention.qkv.bias is not None,
                                           attn_drop=attention.attn_drop.p, proj_drop=attention.proj_drop.p)
    replacement.load_state_dict(attention.state_dict(), assign=True)
    return replacement.train(attention.training)


def set_attention(model: nn.Module, impl: AttentionImpl, flex_kernel_options: dict | None = None) -> None:
    """Switch every Swin window attention of ``model`` to ``impl`` (see the module docstring).

    ``flex_kernel_options`` reach FlexAttention's kernels (default: :data:`FLEX_KERNEL_OPTIONS`).
    """
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention implementation {impl!r}; choose one of {', '.join(ATTENTION_IMPLS)}")
    for block in model.modules():
        if isinstance(block, SwinTransformerBlock):
            if not isinstance(block.attn, SifarWindowAttention):
                block.attn = sifar_window_attention(block.attn)
            attention = block.attn
            attention.impl = impl
            attention.fused_attn = impl != "eager"
            attention.flex_kernel_options = FLEX_KERNEL_OPTIONS if flex_kernel_options is None else flex_kernel_options
            if block.attn_mask is not None:  # a buffer, so that compiled graphs see a fixed tensor
                attention.register_buffer("shift_regions", window_regions(block.attn_mask), persistent=False)
