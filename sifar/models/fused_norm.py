"""Swin stages whose residual adds and LayerNorms run as one Triton kernel a pass, with the rolls and window
partitions folded into the rows it reads and writes, for half-precision inference on CUDA: on as a SifarSwin is
built (its GPU tests, tests/test_gpu.py, passed in session 29), and for training too by
``sifar.models.swin.set_fused_norm(model, "training")`` (the op's gradient is a Triton kernel through the same
tables, drop path a factor for each image; a candidate, measured by ``bench_train``'s ``fusednorm-train``
variants). fp32 and the CPU always keep timm's blocks.

Why by hand: in a compiled SIFAR-B-12 inference step on an H100, Inductor's LayerNorm, residual, roll and
window-copy kernels took 18.1 GPU ms, about 1.9 times what their bytes take at the card's bandwidth. It computes
the rolled and partitioned index of every element, and splits a LayerNorm whose output is written in another
order than it is reduced into a reduction and a second pass (docs/PERFORMANCE.md, "Session 26"). No library
fuses a LayerNorm with a gather and a scatter of its rows. Here a program maps each of its rows once, through a
table of the window position of every token of an image, and moves whole rows: the same step's kernels of that
kind took 11.8 ms, the fused kernel 10.2 of them (92% of the bandwidth), and the step ran at 482.6 clips/s
against 441.7 (same run, session 27).

A block needs two passes over its (tokens, C) stream, each reading two tensors and writing two:

- ``stream, normed1 = add_layer_norm(stream, mlp_out_of_the_previous_block, norm1, out_rows=window_rows)``:
  the previous block's MLP residual, then norm1, written in the block's window order (roll and partition);
- ``stream, normed2 = add_layer_norm(stream, attention_out, norm2, in_rows=window_rows)``: the attention's
  output read back from window order (merge and roll back), its residual, then norm2.

The MLP of a stage's last block is added by torch at the stage's end. Drop path is the identity in inference.
The normalised rows are rounded to the stream's dtype once, where timm's LayerNorm under autocast returns fp32
that the next linear layer rounds to the same dtype.
"""

from __future__ import annotations

import importlib.util
from typing import Iterable, Literal, get_args

import torch
from timm.layers import DropPath, drop_path
from timm.models.swin_transformer import SwinTransformerBlock, SwinTransformerStage, window_partition
from torch import nn

from sifar.precision import HALF_DTYPES

FusedNorm = Literal["off", "inference", "training"]  # where a SifarSwin takes the fused path ("training": both)
FUSED_NORM_MODES: tuple[str, ...] = get_args(FusedNorm)

HAS_TRITON = importlib.util.find_spec("triton") is not None  # torch for Linux ships it; macOS and Windows do not


def add_layer_norm_reference(x: torch.Tensor, y: torch.Tensor | None, y_scale: torch.Tensor | None,
                             in_rows: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                             out_rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`add_layer_norm`'s result in torch (its path off CUDA, and the tests' reference)."""
    total = x if y is None else x + _scaled(y[_mapped_rows(in_rows, x)], y_scale)
    normed = nn.functional.layer_norm(total.float(), total.shape[-1:], weight.float(), bias.float(), eps)
    out = torch.empty_like(x)
    out[_mapped_rows(out_rows, x)] = normed.to(x.dtype)
    return (x.new_empty(0) if y is None else total), out


def add_layer_norm_backward_reference(s: torch.Tensor, grad_sum: torch.Tensor | None, grad_out: torch.Tensor,
                                      out_rows: torch.Tensor | None, weight: torch.Tensor, write_grad_y: bool,
                                      y_scale: torch.Tensor | None, in_rows: torch.Tensor | None,
                                      eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`add_layer_norm_backward`'s result in torch (its path off CUDA, and the tests' reference); the
    LayerNorm's gradient written out, as custom ops run below autograd."""
    rows = s.float()
    mean, variance = rows.mean(-1, keepdim=True), rows.var(-1, unbiased=False, keepdim=True)
    rstd = (variance + eps).rsqrt()
    xhat = (rows - mean) * rstd
    grad = grad_out[_mapped_rows(out_rows, s)].float()
    weighted = grad * weight.float()
    grad_rows = rstd * (weighted - xhat * (xhat * weighted).mean(-1, keepdim=True) - weighted.mean(-1, keepdim=True))
    grad_weight, grad_bias = (grad * xhat).sum(0), grad.sum(0)
    grad_x = (grad_rows if grad_sum is None else grad_rows + grad_sum.float()).to(s.dtype)
    grad_y = s.new_empty(0)
    if write_grad_y:
        grad_y = torch.empty_like(s)
        grad_y[_mapped_rows(in_rows, s)] = _scaled(grad_x, y_scale)
    return grad_x, grad_y, grad_weight.to(weight.dtype), grad_bias.to(weight.dtype)


def _scaled(rows: torch.Tensor, y_scale: torch.Tensor | None) -> torch.Tensor:
    """``rows`` times their image's factor (images of equal numbers of rows), in the rows' dtype."""
    if y_scale is None:
        return rows
    return (rows.view(y_scale.numel(), -1, rows.shape[-1]) * y_scale.view(-1, 1, 1)).view_as(rows)


def _mapped_rows(table: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Every row's mapped row: its image's first row plus the table's entry for its token (identity without)."""
    index = torch.arange(x.shape[0], device=x.device)
    if table is None:
        return index
    tokens = table.numel()
    return index // tokens * tokens + table.long()[index % tokens]


def _tokens_per_image(x: torch.Tensor, y_scale: torch.Tensor | None, in_rows: torch.Tensor | None,
                      out_rows: torch.Tensor | None) -> int:
    table = in_rows if in_rows is not None else out_rows
    if table is not None:
        return table.numel()
    return x.shape[0] // y_scale.numel() if y_scale is not None else x.shape[0]


@torch.library.triton_op("sifar::add_layer_norm", mutates_args=())
def add_layer_norm(x: torch.Tensor, y: torch.Tensor | None, y_scale: torch.Tensor | None,
                   in_rows: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                   out_rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + y_scale * y with y's rows read through ``in_rows``, or an empty tensor without ``y``; the LayerNorm of
    that sum in x's dtype, written through ``out_rows``) for (rows, C) ``x`` of whole images: one Triton kernel on
    CUDA (inside a compiled graph too), torch elsewhere. The tables hold a row for each token of an image
    (:func:`window_rows`); ``y_scale`` a factor for each image (drop path's, in training)."""
    if not x.is_cuda:
        return add_layer_norm_reference(x, y, y_scale, in_rows, weight, bias, eps, out_rows)
    from sifar.models.add_layer_norm_kernel import add_layer_norm_kernel, launch_add_layer_norm

    return launch_add_layer_norm(torch.library.wrap_triton(add_layer_norm_kernel), x, y, y_scale, in_rows, weight,
                                 bias, eps, out_rows, _tokens_per_image(x, y_scale, in_rows, out_rows))


@torch.library.triton_op("sifar::add_layer_norm_backward", mutates_args=())
def add_layer_norm_backward(s: torch.Tensor, grad_sum: torch.Tensor | None, grad_out: torch.Tensor,
                            out_rows: torch.Tensor | None, weight: torch.Tensor, write_grad_y: bool,
                            y_scale: torch.Tensor | None, in_rows: torch.Tensor | None,
                            eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`add_layer_norm`'s gradients from those of its two outputs (``grad_sum``: None without ``y``), given
    the sum ``s`` it normalised: (x's; y's, in y's row order and times ``y_scale``, or an empty tensor unless
    ``write_grad_y``; the weight's; the bias's). One Triton kernel on CUDA, torch elsewhere."""
    if not s.is_cuda:
        return add_layer_norm_backward_reference(s, grad_sum, grad_out, out_rows, weight, write_grad_y, y_scale,
                                                 in_rows, eps)
    from sifar.models.add_layer_norm_kernel import add_layer_norm_backward_kernel, launch_add_layer_norm_backward

    return launch_add_layer_norm_backward(torch.library.wrap_triton(add_layer_norm_backward_kernel), s, grad_sum,
                                          grad_out, out_rows, weight, write_grad_y, y_scale, in_rows, eps,
                                          _tokens_per_image(s, y_scale, in_rows, out_rows))


def _save_for_backward(ctx, inputs: tuple, output: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y, y_scale, in_rows, weight, _, eps, out_rows = inputs
    ctx.save_for_backward(x if y is None else output[0], y_scale, in_rows, weight, out_rows)
    ctx.eps, ctx.has_y = eps, y is not None


def _gradients(ctx, grad_sum: torch.Tensor | None, grad_out: torch.Tensor) -> tuple:
    s, y_scale, in_rows, weight, out_rows = ctx.saved_tensors
    y_moves = y_scale is not None or in_rows is not None  # else y's gradient is x's
    grad_x, grad_y, grad_weight, grad_bias = add_layer_norm_backward(
        s, grad_sum if ctx.has_y else None, grad_out, out_rows, weight, ctx.has_y and y_moves, y_scale, in_rows,
        ctx.eps)
    if ctx.has_y and not y_moves:
        grad_y = grad_x
    return grad_x, grad_y if ctx.has_y else None, None, None, grad_weight, grad_bias, None, None


add_layer_norm.register_autograd(_gradients, setup_context=_save_for_backward)


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


def add_window_tables(stages: Iterable[SwinTransformerStage]) -> None:
    """Give each block of every stage whose maps divide into whole windows its :func:`window_rows` table (a buffer
    ``window_rows`` outside the checkpoint), unless it has one. A stage whose map needs padding has none and keeps
    timm's path."""
    for stage in stages:
        blocks = list(stage.blocks)
        if not all(_whole_windows(block) for block in blocks):
            continue
        for block in blocks:
            if not hasattr(block, "window_rows"):
                table = window_rows(*block.input_resolution, tuple(block.window_size), tuple(block.shift_size))
                block.register_buffer("window_rows", table.to(block.norm1.weight.device), persistent=False)


def _whole_windows(block: SwinTransformerBlock) -> bool:
    height, width = block.input_resolution
    return height % block.window_size[0] == 0 and width % block.window_size[1] == 0


def fused_norm_applies(stage: SwinTransformerStage, x: torch.Tensor, training: bool = False) -> bool:
    """Whether ``stage`` runs :func:`fused_stage_forward` on its (B, H, W, C) input ``x``: a half-precision stream on
    CUDA with Triton, a table on every block, and inference without gradients (or, with ``training``, training
    without gradient checkpointing)."""
    wanted = training or (not stage.training and not torch.is_grad_enabled())  # first: cheap in timm's training
    return (wanted and x.is_cuda and x.dtype in HALF_DTYPES and HAS_TRITON and not stage.grad_checkpointing
            and all(hasattr(block, "window_rows") for block in stage.blocks))


def drop_path_scale(module: nn.Module, batch: int, like: torch.Tensor) -> torch.Tensor | None:
    """timm's ``DropPath`` as a (batch,) factor for each image in ``like``'s dtype: timm's ``drop_path`` of ones, so
    the draw is timm's own (the same seed keeps the same paths); None where it is the identity (inference, or no
    drop)."""
    if not isinstance(module, DropPath) or not module.training or module.drop_prob == 0.0:
        return None
    return drop_path(like.new_ones(batch), module.drop_prob, module.training, module.scale_by_keep)


def fused_stage_forward(stage: SwinTransformerStage, x: torch.Tensor) -> torch.Tensor:
    """The stage on the (B, H, W, C) ``x`` through :func:`add_layer_norm` (the module docstring), drop path included;
    each block holds its :func:`window_rows` table (:func:`add_window_tables`)."""
    x = stage.downsample(x)
    batch, height, width, channels = x.shape
    if any(block.window_rows.numel() != height * width for block in stage.blocks):
        return stage.blocks(x)  # a map of another size than the tables were made for: timm's blocks
    stream, pending, pending_scale = x.reshape(-1, channels), None, None
    for block in stage.blocks:
        rows, norm1, norm2 = block.window_rows, block.norm1, block.norm2
        total, windows = add_layer_norm(stream, pending, pending_scale, None, norm1.weight, norm1.bias, norm1.eps,
                                        rows)
        stream = stream if pending is None else total
        attended = block.attn(windows.view(-1, block.window_area, channels), mask=block.attn_mask)
        attended_scale = drop_path_scale(block.drop_path1, batch, attended)
        stream, normed = add_layer_norm(stream, attended.reshape(-1, channels), attended_scale, rows, norm2.weight,
                                        norm2.bias, norm2.eps, None)
        pending = block.mlp(normed)
        pending_scale = drop_path_scale(block.drop_path2, batch, pending)
    if pending is not None:
        stream = stream + _scaled(pending, pending_scale)
    return stream.view(batch, height, width, channels)


def run_stages(stages: Iterable[SwinTransformerStage], x: torch.Tensor, mode: FusedNorm) -> torch.Tensor:
    """``x`` through ``stages`` in turn, each by :func:`fused_stage_forward` where ``mode`` allows it and
    :func:`fused_norm_applies`, else by timm's forward."""
    for stage in stages:
        fused = mode != "off" and fused_norm_applies(stage, x, training=mode == "training")
        x = fused_stage_forward(stage, x) if fused else stage(x)
    return x
