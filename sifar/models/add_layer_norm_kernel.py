"""The Triton kernel of :func:`sifar.models.fused_norm.add_layer_norm`: a residual add and a LayerNorm over whole
rows, each read and written through a per-image row table. Imported only on CUDA, where torch ships Triton."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

ELEMENTS_PER_PROGRAM = 4096  # rows a program: 32 of SIFAR-B's stage-0 128 channels, 4 of its 1,024


@triton.jit
def add_layer_norm_kernel(x_ptr, y_ptr, in_rows_ptr, weight_ptr, bias_ptr, sum_ptr, out_ptr, out_rows_ptr,
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
                          weight: torch.Tensor, bias: torch.Tensor, eps: float,
                          out_rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``kernel`` (:func:`add_layer_norm_kernel`, or it wrapped for torch.compile) over the (rows, C) ``x``:
    (x + y, or an empty tensor without ``y``; the normalised rows in x's dtype). The tables ``in_rows`` and
    ``out_rows`` hold a row for each token of an image."""
    x, y = x.contiguous(), y.contiguous() if y is not None else None  # rows of C, one after another
    rows, channels = x.shape
    total = torch.empty_like(x) if y is not None else x.new_empty(0)
    normed = torch.empty_like(x)
    block_c = triton.next_power_of_2(channels)
    block_r = max(1, ELEMENTS_PER_PROGRAM // block_c)
    table = in_rows if in_rows is not None else out_rows
    kernel[(triton.cdiv(rows, block_r),)](
        x, y if y is not None else x, in_rows if in_rows is not None else x, weight, bias, total, normed,
        out_rows if out_rows is not None else x, rows, rows if table is None else table.numel(), channels, eps,
        HAS_Y=y is not None, IN_ROWS=in_rows is not None, OUT_ROWS=out_rows is not None,
        BLOCK_R=block_r, BLOCK_C=block_c)
    return total, normed
