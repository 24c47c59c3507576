"""The Triton kernels of :func:`sifar.models.fused_norm.add_layer_norm` and its gradient: a residual add and a
LayerNorm over whole rows, each read and written through a per-image row table. Imported only on CUDA, where
torch ships Triton."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

ELEMENTS_PER_PROGRAM = 4096  # rows a program: 32 of SIFAR-B's stage-0 128 channels, 4 of its 1,024
BACKWARD_PROGRAMS_PER_SM = 4  # the backward's programs loop over row tiles, each summing its share of dweight


@triton.jit
def _mapped(r, table_ptr, tokens, row_ok, USE_TABLE: tl.constexpr):
    """Rows ``r`` through the (tokens,) table: the image's first row plus the table's entry for the token."""
    if USE_TABLE:
        return (r // tokens) * tokens + tl.load(table_ptr + r % tokens, mask=row_ok, other=0)
    return r


@triton.jit
def _normalised(s, mask, channels, eps):
    """(the fp32 rows ``s`` centred and scaled to unit variance, 1 / their standard deviation). ``eps`` is cast:
    Inductor may pass a Python float as fp64 (torch 2.11 did in the backward), which would make the sums fp64."""
    eps = tl.cast(eps, tl.float32)
    mean = tl.sum(s, axis=1) / channels
    centred = tl.where(mask, s - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / channels + eps)
    return centred * rstd[:, None], rstd


@triton.jit
def add_layer_norm_kernel(x_ptr, y_ptr, scale_ptr, in_rows_ptr, weight_ptr, bias_ptr, sum_ptr, out_ptr, out_rows_ptr,
                          rows, tokens, channels, eps,
                          HAS_Y: tl.constexpr, HAS_SCALE: tl.constexpr, IN_ROWS: tl.constexpr,
                          OUT_ROWS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Rows r of a program: s = x[r] + scale[image] * y[map(in_rows, r)] (each product and the sum rounded to x's
    dtype, as torch's ops are), written to sum[r]; LayerNorm(s) to out[map(out_rows, r)]. An image is ``tokens``
    rows."""
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)  # offsets past 2**31 elements
    c = tl.arange(0, BLOCK_C)
    row_ok = r < rows
    mask = row_ok[:, None] & (c < channels)[None, :]
    s = tl.load(x_ptr + r[:, None] * channels + c[None, :], mask=mask, other=0.0)
    if HAS_Y:
        y_row = _mapped(r, in_rows_ptr, tokens, row_ok, IN_ROWS)
        y = tl.load(y_ptr + y_row[:, None] * channels + c[None, :], mask=mask, other=0.0)
        if HAS_SCALE:
            scale = tl.load(scale_ptr + r // tokens, mask=row_ok, other=0.0)
            y = (y.to(tl.float32) * scale.to(tl.float32)[:, None]).to(y.dtype)
        s = (s.to(tl.float32) + y.to(tl.float32)).to(s.dtype)
        tl.store(sum_ptr + r[:, None] * channels + c[None, :], s, mask=mask)
    xhat, _ = _normalised(s.to(tl.float32), mask, channels, eps)
    weight = tl.load(weight_ptr + c, mask=c < channels, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + c, mask=c < channels, other=0.0).to(tl.float32)
    normed = xhat * weight[None, :] + bias[None, :]
    out_row = _mapped(r, out_rows_ptr, tokens, row_ok, OUT_ROWS)
    tl.store(out_ptr + out_row[:, None] * channels + c[None, :], normed.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def add_layer_norm_backward_kernel(s_ptr, grad_sum_ptr, grad_out_ptr, out_rows_ptr, weight_ptr, scale_ptr,
                                   in_rows_ptr, grad_x_ptr, grad_y_ptr, grad_weight_ptr, grad_bias_ptr,
                                   rows, tokens, channels, eps, tiles,
                                   HAS_GRAD_SUM: tl.constexpr, OUT_ROWS: tl.constexpr, WRITE_GRAD_Y: tl.constexpr,
                                   HAS_SCALE: tl.constexpr, IN_ROWS: tl.constexpr,
                                   BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """The gradient of :func:`add_layer_norm_kernel` for tiles of BLOCK_R rows, a program looping over every
    ``num_programs``-th tile: grad_x[r] = grad_sum[r] + LayerNorm'(s[r]) . grad_out[map(out_rows, r)];
    grad_y[map(in_rows, r)] = scale[image] * grad_x[r]; the program's shares of the weight's and bias's gradients
    (fp32) in row ``program_id`` of grad_weight and grad_bias."""
    c = tl.arange(0, BLOCK_C)
    weight = tl.load(weight_ptr + c, mask=c < channels, other=0.0).to(tl.float32)
    grad_weight = tl.zeros((BLOCK_C,), dtype=tl.float32)
    grad_bias = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for tile in range(tl.program_id(0), tiles, tl.num_programs(0)):
        r = (tile * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)  # rows fit 32 bits, their offsets may not
        row_ok = r < rows
        mask = row_ok[:, None] & (c < channels)[None, :]
        s = tl.load(s_ptr + r[:, None] * channels + c[None, :], mask=mask, other=0.0).to(tl.float32)
        xhat, rstd = _normalised(s, mask, channels, eps)
        out_row = _mapped(r, out_rows_ptr, tokens, row_ok, OUT_ROWS)
        grad = tl.load(grad_out_ptr + out_row[:, None] * channels + c[None, :], mask=mask, other=0.0)
        grad = grad.to(tl.float32)
        grad_weight += tl.sum(grad * xhat, axis=0)
        grad_bias += tl.sum(grad, axis=0)
        weighted = grad * weight[None, :]
        along_xhat = tl.sum(xhat * weighted, axis=1) / channels
        mean = tl.sum(weighted, axis=1) / channels
        grad_s = tl.where(mask, (weighted - xhat * along_xhat[:, None] - mean[:, None]) * rstd[:, None], 0.0)
        if HAS_GRAD_SUM:
            grad_s += tl.load(grad_sum_ptr + r[:, None] * channels + c[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(grad_x_ptr + r[:, None] * channels + c[None, :], grad_s.to(grad_x_ptr.dtype.element_ty), mask=mask)
        if WRITE_GRAD_Y:
            grad_y = grad_s.to(grad_x_ptr.dtype.element_ty).to(tl.float32)  # y's gradient is x's, rounded, scaled
            if HAS_SCALE:
                grad_y = grad_y * tl.load(scale_ptr + r // tokens, mask=row_ok, other=0.0).to(tl.float32)[:, None]
            y_row = _mapped(r, in_rows_ptr, tokens, row_ok, IN_ROWS)
            tl.store(grad_y_ptr + y_row[:, None] * channels + c[None, :], grad_y.to(grad_y_ptr.dtype.element_ty),
                     mask=mask)
    tl.store(grad_weight_ptr + tl.program_id(0) * channels + c, grad_weight, mask=c < channels)
    tl.store(grad_bias_ptr + tl.program_id(0) * channels + c, grad_bias, mask=c < channels)


def _tiles(channels: int) -> tuple[int, int]:
    """(rows a program takes at once, the channels padded to a power of two)."""
    block_c = triton.next_power_of_2(channels)
    return max(1, ELEMENTS_PER_PROGRAM // block_c), block_c


def launch_add_layer_norm(kernel, x: torch.Tensor, y: torch.Tensor | None, y_scale: torch.Tensor | None,
                          in_rows: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                          out_rows: torch.Tensor | None, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``kernel`` (:func:`add_layer_norm_kernel`, or it wrapped for torch.compile) over the (rows, C) ``x``:
    (x + y_scale * y, or an empty tensor without ``y``; the normalised rows in x's dtype)."""
    x, y = x.contiguous(), y.contiguous() if y is not None else None  # rows of C, one after another
    rows, channels = x.shape
    total = torch.empty_like(x) if y is not None else x.new_empty(0)
    normed = torch.empty_like(x)
    block_r, block_c = _tiles(channels)
    kernel[(triton.cdiv(rows, block_r),)](
        x, _or(y, x), _or(y_scale, x), _or(in_rows, x), weight, bias, total, normed, _or(out_rows, x),
        rows, tokens, channels, eps, HAS_Y=y is not None, HAS_SCALE=y_scale is not None,
        IN_ROWS=in_rows is not None, OUT_ROWS=out_rows is not None, BLOCK_R=block_r, BLOCK_C=block_c)
    return total, normed


def launch_add_layer_norm_backward(kernel, s: torch.Tensor, grad_sum: torch.Tensor | None, grad_out: torch.Tensor,
                                   out_rows: torch.Tensor | None, weight: torch.Tensor, write_grad_y: bool,
                                   y_scale: torch.Tensor | None, in_rows: torch.Tensor | None, eps: float,
                                   tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``kernel`` (:func:`add_layer_norm_backward_kernel`, or it wrapped) over the (rows, C) sum ``s``: (x's
    gradient; y's, or an empty tensor unless ``write_grad_y``; the weight's and the bias's, in the weight's dtype)."""
    s, grad_out = s.contiguous(), grad_out.contiguous()
    grad_sum = grad_sum.contiguous() if grad_sum is not None else None
    rows, channels = s.shape
    block_r, block_c = _tiles(channels)
    tiles = triton.cdiv(rows, block_r)
    programs = min(tiles, BACKWARD_PROGRAMS_PER_SM * _processors(s.device))
    grad_x = torch.empty_like(s)
    grad_y = torch.empty_like(s) if write_grad_y else s.new_empty(0)
    grad_weight = s.new_empty(programs, channels, dtype=torch.float32)
    grad_bias = s.new_empty(programs, channels, dtype=torch.float32)
    kernel[(programs,)](
        s, _or(grad_sum, s), grad_out, _or(out_rows, s), weight, _or(y_scale, s), _or(in_rows, s),
        grad_x, grad_y, grad_weight, grad_bias, rows, tokens, channels, eps, tiles,
        HAS_GRAD_SUM=grad_sum is not None, OUT_ROWS=out_rows is not None, WRITE_GRAD_Y=write_grad_y,
        HAS_SCALE=y_scale is not None, IN_ROWS=in_rows is not None, BLOCK_R=block_r, BLOCK_C=block_c)
    return grad_x, grad_y, grad_weight.sum(0).to(weight.dtype), grad_bias.sum(0).to(weight.dtype)


def _processors(device: torch.device) -> int:
    """The GPU's streaming multiprocessors; 1 for tensors on the CPU (Triton's interpreter, in the tests)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _or(tensor: torch.Tensor | None, stand_in: torch.Tensor) -> torch.Tensor:
    """``tensor``, or a stand-in pointer for an argument the kernel's flags leave unread."""
    return tensor if tensor is not None else stand_in
