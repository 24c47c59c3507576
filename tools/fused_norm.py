"""Swin stages whose residual adds and LayerNorms run as one Triton kernel a pass, with the rolls and window
partitions folded into the rows it reads and writes: half-precision inference only (issue 30, a candidate measured
by ``tools/bench_train``'s ``flex-bf16-compile-fusednorm`` variant; no command uses it yet).

Why by hand: a SIFAR-B-12 inference step spent 18.0 ms in Inductor's LayerNorm, residual, roll and window-copy
kernels, about 1.7 times what their bytes take at the H100's bandwidth. At stage 0, where one tensor is 510 MB,
the pointwise kernel that writes rolled windows took 0.67 ms and the one without a roll 0.34 ms for what their
names say are the same bytes (docs/PERFORMANCE.md, "Session 26"). Inductor computes the rolled and partitioned
index of every element, and splits a LayerNorm whose output is written in another order than it is reduced into a
reduction and a second pass. Here a program maps each of its rows once (a table of the window position of every
token of an image) and moves whole rows.

A block needs two passes over its (tokens, C) stream, each reading two bf16 tensors and writing two:

- ``stream, normed1 = add_layer_norm(stream, mlp_out_of_the_previous_block, norm1, out_rows=window_rows)``:
  the previous block's MLP residual, then norm1, written in the block's window order (roll and partition);
- ``stream, normed2 = add_layer_norm(stream, attention_out, norm2, in_rows=window_rows)``: the attention's
  output read back from window order (merge and roll back), its residual, then norm2.

16 bytes per element and block, where Inductor's kernels move about 18 at lower bandwidth. The MLP of the last
block is added by torch at the stage's end. Drop path is the identity in inference.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from timm.models.swin_transformer import SwinTransformerStage, window_partition
from torch import nn

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"
ELEMENTS_PER_PROGRAM = 4096  # rows a program: 32 of SIFAR-B's stage-0 128 channels, 4 of its 1,024 (not tuned)


@triton.jit
def _add_layer_norm_kernel(x_ptr, y_ptr, in_rows_ptr, weight_ptr, bias_ptr, sum_ptr, out_ptr, out_rows_ptr,
                           rows, tokens, channels, eps,
                           HAS_Y: tl.constexpr, IN_ROWS: tl.constexpr, OUT_ROWS: tl.constexpr,
                           BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Rows r of a program: s = x[r] + y[map(in_rows, r)] (rounded to x's dtype, as torch's add is), written to
    sum[r]; LayerNorm(s) to out[map(out_rows, r)]. ``map`` keeps the image (r // tokens) and looks the token
    (r % tokens) up in the (tokens,) table."""
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)  # offsets past 2**31 elements
    c = tl.arange(0, BLOCK_C)
    row_ok = r < rows
    mask = row_ok[:, None] & (c < channels)[None, :]
    image_start = (r // tokens) * tokens
    token = r % tokens
    s = tl.load(x_ptr + r[:, None] * channels + c[None, :], mask=mask, other=0.0)
    if HAS_Y:
        y_row = r
        if IN_ROWS:
            y_row = image_start + tl.load(in_rows_ptr + token, mask=row_ok, other=0)
        y = tl.load(y_ptr + y_row[:, None] * channels + c[None, :], mask=mask, other=0.0)
        s = (s.to(tl.float32) + y.to(tl.float32)).to(s.dtype)
        tl.store(sum_ptr + r[:, None] * channels + c[None, :], s, mask=mask)
    s = s.to(tl.float32)
    mean = tl.sum(s, axis=1) / channels
    centred = tl.where(mask, s - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / channels + eps)
    weight = tl.load(weight_ptr + c, mask=c < channels, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + c, mask=c < channels, other=0.0).to(tl.float32)
    normed = centred * rstd[:, None] * weight[None, :] + bias[None, :]
    out_row = r
    if OUT_ROWS:
        out_row = image_start + tl.load(out_rows_ptr + token, mask=row_ok, other=0)
    tl.store(out_ptr + out_row[:, None] * channels + c[None, :], normed.to(out_ptr.dtype.element_ty), mask=mask)


def launch_add_layer_norm(kernel, x: torch.Tensor, y: torch.Tensor | None, in_rows: torch.Tensor | None,
                          weight: torch.Tensor, bias: torch.Tensor, eps: float, out_rows: torch.Tensor | None,
                          out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``kernel`` (:func:`_add_layer_norm_kernel`, or it wrapped for torch.compile) over the (rows, C) ``x``:
    (x + y, or an empty tensor without ``y``; the normalised rows in ``out_dtype``). The tables ``in_rows`` and
    ``out_rows`` hold a row for each token of an image (:func:`window_rows`)."""
    x, y = x.contiguous(), y.contiguous() if y is not None else None  # rows of C, one after another
    rows, channels = x.shape
    total = torch.empty_like(x) if y is not None else x.new_empty(0)
    normed = torch.empty(rows, channels, device=x.device, dtype=out_dtype)
    block_c = triton.next_power_of_2(channels)
    block_r = max(1, ELEMENTS_PER_PROGRAM // block_c)
    kernel[(triton.cdiv(rows, block_r),)](
        x, y if y is not None else x, in_rows if in_rows is not None else x, weight, bias, total, normed,
        out_rows if out_rows is not None else x, rows, _tokens_per_image(in_rows, out_rows, rows), channels, eps,
        HAS_Y=y is not None, IN_ROWS=in_rows is not None, OUT_ROWS=out_rows is not None,
        BLOCK_R=block_r, BLOCK_C=block_c)
    return total, normed


def add_layer_norm_reference(x: torch.Tensor, y: torch.Tensor | None, in_rows: torch.Tensor | None,
                             weight: torch.Tensor, bias: torch.Tensor, eps: float, out_rows: torch.Tensor | None,
                             out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`launch_add_layer_norm`'s result in torch (the CPU's path, and the tests' reference)."""
    total = x if y is None else x + y[_mapped_rows(in_rows, x)]
    normed = nn.functional.layer_norm(total.float(), total.shape[-1:], weight.float(), bias.float(), eps)
    out = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    out[_mapped_rows(out_rows, x)] = normed.to(out_dtype)
    return (x.new_empty(0) if y is None else total), out


def _tokens_per_image(in_rows: torch.Tensor | None, out_rows: torch.Tensor | None, rows: int) -> int:
    table = in_rows if in_rows is not None else out_rows
    return rows if table is None else table.numel()


def _mapped_rows(table: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Every row's mapped row: its image's first row plus the table's entry for its token (identity without)."""
    index = torch.arange(x.shape[0], device=x.device)
    if table is None:
        return index
    tokens = table.numel()
    return index // tokens * tokens + table.long()[index % tokens]


@torch.library.triton_op("sifar_tools::add_layer_norm", mutates_args=())
def add_layer_norm(x: torch.Tensor, y: torch.Tensor | None, in_rows: torch.Tensor | None, weight: torch.Tensor,
                   bias: torch.Tensor, eps: float, out_rows: torch.Tensor | None,
                   out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + y with y's rows read through ``in_rows``, or an empty tensor without ``y``; the LayerNorm of that sum in
    ``out_dtype``, written through ``out_rows``): one Triton kernel on CUDA (inside a compiled graph too), torch
    elsewhere."""
    if not x.is_cuda:
        return add_layer_norm_reference(x, y, in_rows, weight, bias, eps, out_rows, out_dtype)
    return launch_add_layer_norm(torch.library.wrap_triton(_add_layer_norm_kernel), x, y, in_rows, weight, bias,
                                 eps, out_rows, out_dtype)


def window_rows(height: int, width: int, window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """(height * width,) int32: the row of each token of an image in the block's window order (its map rolled by
    -shift, then partitioned into windows as timm's ``window_partition`` does)."""
    tokens = torch.arange(height * width).view(1, height, width, 1)
    if any(shift):
        tokens = torch.roll(tokens, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    order = window_partition(tokens, window).flatten()  # order[p]: the token at window position p
    rows = torch.empty_like(order)
    rows[order] = torch.arange(order.numel())
    return rows.to(torch.int32)


def fused_stage_forward(stage: SwinTransformerStage, x: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """The stage's inference on the (B, H, W, C) ``x`` through :func:`add_layer_norm` (the module docstring); each
    block holds its :func:`window_rows` table (:func:`use_fused_norm`); ``out_dtype``: the normalised rows'."""
    x = stage.downsample(x)
    batch, height, width, channels = x.shape
    if any(block.fused_norm_rows.numel() != height * width for block in stage.blocks):
        return stage.blocks(x)  # a map of another size than the model was built for: timm's blocks
    stream, pending = x.reshape(-1, channels), None
    for block in stage.blocks:
        rows, norm1, norm2 = block.fused_norm_rows, block.norm1, block.norm2
        total, windows = add_layer_norm(stream, pending, None, norm1.weight, norm1.bias, norm1.eps, rows, out_dtype)
        stream = stream if pending is None else total
        attended = block.attn(windows.view(-1, block.window_area, channels), mask=block.attn_mask)
        stream, normed = add_layer_norm(stream, attended.reshape(-1, channels), rows, norm2.weight, norm2.bias,
                                        norm2.eps, None, out_dtype)
        pending = block.mlp(normed)
    if pending is not None:
        stream = stream + pending
    return stream.view(batch, height, width, channels)


class FusedNormSwinStage(SwinTransformerStage):
    """timm's ``SwinTransformerStage`` (same parameters, same checkpoints) whose half-precision inference on CUDA
    runs :func:`fused_stage_forward`; everything else takes timm's path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the stream's dtype: under autocast SIFAR's Swin carries it in the autocast dtype from the patch embedding on
        if self.training or torch.is_grad_enabled() or not x.is_cuda or x.dtype not in (torch.bfloat16, torch.float16):
            return super().forward(x)
        return fused_stage_forward(self, x, x.dtype)


def use_fused_norm(model: nn.Module) -> int:
    """Make every timm Swin stage of ``model`` a :class:`FusedNormSwinStage`, in place, and give each of its blocks
    its :func:`window_rows` table (a buffer outside the checkpoint; the classes hold no other state, so parameters
    and checkpoint keys stay the same objects); the number of stages. ValueError for a model without them (a CNN)
    or a block whose feature map needs padding to whole windows."""
    stages = [m for m in model.modules() if isinstance(m, SwinTransformerStage)]
    if not stages:
        raise ValueError(f"{getattr(model, 'name', type(model).__name__)} has no Swin stage to fuse")
    for stage in stages:
        for block in stage.blocks:
            height, width = block.input_resolution
            if height % block.window_size[0] or width % block.window_size[1]:
                raise ValueError(f"a {height}x{width} map needs padding to {tuple(block.window_size)} windows")
            table = window_rows(height, width, tuple(block.window_size), tuple(block.shift_size))
            block.register_buffer("fused_norm_rows", table.to(block.norm1.weight.device), persistent=False)
        stage.__class__ = FusedNormSwinStage
    return len(stages)
