"""Swin window attention (relative-position bias, shifted-window mask) as hand-written Triton kernels.

Status (issue 30): a candidate, not wired into any model; correct on an H100 (FlexAttention's results to 1e-3 in
bf16), not faster (docs/PERFORMANCE.md, "Round two"). Three versions timed at SIFAR-B-12's training shapes, forward
+ backward summed over one block of each kind against FlexAttention's: session 18's first (a shared GPU, 0.87x);
one program per window and head with the keys padded to a power of two (session 19, idle card, 0.63x); this one,
the keys in two tiles (session 19, 0.92x by the wall clock). Session 20 timed this one by the GPU's kernel times
over all of the model's blocks, 0.84x, and in the whole compiled step: training 0.81x (0.86x on the 144-token
windows only), inference 0.994x. Not adopted. Its backward was the slower half (one program per window and head, all
keys in registers: up to 255 registers a thread). Session 23 replaced it with a backward that splits each window's
keys over programs (below); timed in session 24 it is slower still: 0.40x FlexAttention over SIFAR-B-12's blocks
by the attention's own kernels (55.0 against 22.1 ms, forward + backward), bound by L2 (its atomic adds, two a
score; Nsight Compute). The figures above counted every kernel, FlexAttention's eager gradient copies included
(1.7 of its 4.6 ms in the first block), which flattered the kernels: by its own kernels FlexAttention's backward
is about 2.2x faster than session 20's. It stays with the tools, with its tests and benchmark
(``tools/bench_window_attention.py``).

Why not FlexAttention (``window_attention.py``'s ``flex``)? It is made for long sequences: a 144-token window
(12x12) pads to its 64- and 16-token tiles, and its 64-row forward tiles read a window's keys and values three
times. Windows are small: a program here owns one window and head, loads its keys and values once and keeps them
in registers while it walks the query rows in tiles, with the shift mask from a region id per token. The
(q, k, v) layout is read through strides, so the qkv linear's output is never copied, and
:func:`window_attention_qkv` writes the gradients straight into the qkv layout.

Kernels:

- forward (one program per window and head; all N keys of the window in two tiles, see :func:`_key_tiles`):
  loads k and v once, then per query tile the (BLOCK_M, N) bias tile (shared by every window, so read from L2),
  the scores, the output and the rows' logsumexp (fp32).
- backward (FlashAttention-2's, P recomputed from the logsumexp; one program per window, head and BLOCK_N of the
  window's keys): holds its keys' k, v, dk and dv, walks the window's query rows in BLOCK_M tiles, writes dk, dv
  once and adds each tile's share of dq to an fp32 sum with atomic adds, so the scores are computed once.
  FlexAttention's backward computes them twice, once for dk and dv and once more for dq, with the keys padded to
  its tiles of 64 (192 of a 144-token window). Each tile's dS, the bias's gradient, is added to an fp32 (heads,
  N, N) sum with atomic adds, as FlexAttention does (measured cheap with its tiles of 16: docs/PERFORMANCE.md,
  session 9). The backward before session 23 held all the keys in one program (registers: see above); session
  18's first summed dS over runs of windows in a kernel of its own.

Keys are held in two power-of-two tiles, N_MAIN + N_TAIL (144 = 128 + 16), since Triton's tiles are powers of
two: padding 144 keys to 256 (session 19's timed version) computed 1.8x the scores, as FlexAttention's 64-token
tiles do (192 x 192 for 144 x 144); the two tiles compute 144 x 144 at N=144. Query rows are tiled by 16, 32 or 64
(the autotuner's choice; 16 divides 144), and so are the backward's keys (9, 5 or 3 programs at N=144).

Saved for the backward: q, k, v (or qkv), the output and the logsumexp. Matrix products take bf16/fp16 inputs
with fp32 accumulation (fp32 inputs: Triton's default TF32 on GPU). ``TRITON_INTERPRET=1`` runs the same kernels
on CPU tensors with one small tile configuration (tests/test_window_kernel.py).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from torch.nn.attention.flex_attention import flex_attention

from sifar.models.window_attention import (FLEX_KERNEL_OPTIONS, SHIFT_MASK_VALUE, SifarWindowAttention,
                                           compiled_flex_attention, merge_heads, split_heads, window_score_mod)

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"
SHIFT_MASK = tl.constexpr(SHIFT_MASK_VALUE)  # jit functions read globals only as constexpr
SHAPE_KEY = ["W", "H", "N", "D"]  # the tiles are tuned once per stage shape (a handful per model)


def _configs(names: tuple[str, ...], options: list[tuple[int, ...]], interpreted: tuple[int, ...]) -> list:
    """triton.Configs of the constexprs ``names`` and num_warps (each option's last value); one under the
    interpreter."""
    if INTERPRETING:
        options = [(*interpreted, 1)]
    return [triton.Config(dict(zip(names, option[:-1])), num_warps=option[-1], num_stages=2) for option in options]


# The forward: one window and head a program. ptxas (Triton 3.8, sm_90a) on the CPU, keys padded to 256 (session
# 18): 16-row query tiles spilled nothing at 4 or 8 warps; 32-row tiles spilled. The two key tiles hold fewer
# registers; the autotuner times each setting on the GPU and keeps the fastest.
FORWARD_CONFIGS = _configs(("BLOCK_M",), [(16, 4), (16, 8), (32, 4), (32, 8), (64, 4), (64, 8)], interpreted=(16,))
# The backward: BLOCK_N of a window's keys a program, its query rows in BLOCK_M tiles. None of these spills at
# sm_90a (session 23: 111 registers a thread at 16 x 16, 143 at 16 x 32, 182 at 16 x 64, up to 255 beyond).
GRAD_CONFIGS = _configs(("BLOCK_M", "BLOCK_N"), [(16, 16, 4), (16, 32, 4), (16, 64, 4), (32, 32, 4), (32, 64, 8),
                                                 (64, 32, 8)], interpreted=(16, 16))


@triton.jit
def _region_ids(regions_ptr, window, tokens, N, num_windows, other, HAS_REGIONS: tl.constexpr):
    """Region ids of ``tokens`` in this window's place of the image (``other`` past N; 0s without a mask)."""
    if HAS_REGIONS:
        return tl.load(regions_ptr + (window % num_windows) * N + tokens, mask=tokens < N, other=other)
    return tl.zeros_like(tokens)


@triton.jit
def _scores(q, k, rows, keys, q_region, k_region, bias_ptr, head, N, scale, HAS_REGIONS: tl.constexpr):
    """(len(rows), len(keys)) fp32 scores q k^T * scale + bias + shift mask, -inf on the padding keys. The bias
    (shared by every window, so read from L2) is loaded as fp32, 0 on padding."""
    valid = (rows[:, None] < N) & (keys[None, :] < N)
    bias = tl.load(bias_ptr + head * N * N + rows[:, None] * N + keys[None, :], mask=valid, other=0.0)
    s = tl.dot(q, tl.trans(k)) * scale + bias.to(tl.float32)
    if HAS_REGIONS:
        s = tl.where(q_region[:, None] == k_region[None, :], s, s + SHIFT_MASK)
    return tl.where(keys[None, :] < N, s, float("-inf"))


@triton.jit
def _load_rows(ptr, window, head, rows, dims, stride_w, stride_h, stride_n, N):
    """A (len(rows), D) tile of a (W, H, N, D) tensor with unit stride along D (0 on padding rows)."""
    base = ptr + window * stride_w + head * stride_h  # a scalar: only the int32 offsets are per element
    return tl.load(base + (rows[:, None] * stride_n + dims[None, :]), mask=rows[:, None] < N, other=0.0)


@triton.jit
def _store_rows(ptr, value, window, head, rows, dims, stride_w, stride_h, stride_n, N):
    """Store a (len(rows), D) tile of a (W, H, N, D) tensor in its dtype."""
    base = ptr + window * stride_w + head * stride_h
    tl.store(base + (rows[:, None] * stride_n + dims[None, :]), value.to(ptr.dtype.element_ty), mask=rows[:, None] < N)


@triton.jit
def _key_tile_grads(q, do, delta, lse, rows, keys, q_region, k_region, k, v, dk, dv, bias_ptr, dbias_ptr, head, N,
                    scale, HAS_REGIONS: tl.constexpr, BIAS_GRAD: tl.constexpr):
    """One query tile against one key tile (FlashAttention-2's backward, P recomputed from the logsumexp): this
    tile's share of dq, and dk, dv with its terms added."""
    p = tl.exp(_scores(q, k, rows, keys, q_region, k_region, bias_ptr, head, N, scale, HAS_REGIONS) - lse[:, None])
    dv += tl.dot(tl.trans(p.to(do.dtype)), do)
    ds = p * (tl.dot(do, tl.trans(v)) - delta[:, None])
    if BIAS_GRAD:  # dS is the bias's gradient: summed over the windows by atomic adds, as FlexAttention does
        valid = (rows[:, None] < N) & (keys[None, :] < N)
        tl.atomic_add(dbias_ptr + head * N * N + rows[:, None] * N + keys[None, :], ds, mask=valid)
    dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
    return tl.dot(ds.to(k.dtype), k), dk, dv


@triton.autotune(configs=FORWARD_CONFIGS, key=SHAPE_KEY)
@triton.jit
def _forward_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, bias_ptr, regions_ptr,
                    sq_w, sq_h, sq_n, sk_w, sk_h, sk_n, sv_w, sv_h, sv_n, so_w, so_h, so_n,
                    W, H, N, num_windows, scale,
                    D: tl.constexpr, N_MAIN: tl.constexpr, N_TAIL: tl.constexpr, HAS_REGIONS: tl.constexpr,
                    BLOCK_M: tl.constexpr):
    window = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    dims = tl.arange(0, D)
    keys = tl.arange(0, N_MAIN)  # once a window, not once a query tile: the keys, values and their regions
    k = _load_rows(k_ptr, window, head, keys, dims, sk_w, sk_h, sk_n, N)
    v = _load_rows(v_ptr, window, head, keys, dims, sv_w, sv_h, sv_n, N)
    k_region = _region_ids(regions_ptr, window, keys, N, num_windows, -1, HAS_REGIONS)
    if N_TAIL > 0:
        tail = N_MAIN + tl.arange(0, N_TAIL)
        k_tail = _load_rows(k_ptr, window, head, tail, dims, sk_w, sk_h, sk_n, N)
        v_tail = _load_rows(v_ptr, window, head, tail, dims, sv_w, sv_h, sv_n, N)
        tail_region = _region_ids(regions_ptr, window, tail, N, num_windows, -1, HAS_REGIONS)
    for start in range(0, N, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        q = _load_rows(q_ptr, window, head, rows, dims, sq_w, sq_h, sq_n, N)
        q_region = _region_ids(regions_ptr, window, rows, N, num_windows, 0, HAS_REGIONS)
        s = _scores(q, k, rows, keys, q_region, k_region, bias_ptr, head, N, scale, HAS_REGIONS)
        row_max = tl.max(s, 1)
        if N_TAIL > 0:
            s_tail = _scores(q, k_tail, rows, tail, q_region, tail_region, bias_ptr, head, N, scale, HAS_REGIONS)
            row_max = tl.maximum(row_max, tl.max(s_tail, 1))
        p = tl.exp(s - row_max[:, None])
        row_sum = tl.sum(p, 1)
        out = tl.dot(p.to(v.dtype), v)
        if N_TAIL > 0:
            p_tail = tl.exp(s_tail - row_max[:, None])
            row_sum += tl.sum(p_tail, 1)
            out += tl.dot(p_tail.to(v.dtype), v_tail)
        _store_rows(o_ptr, out / row_sum[:, None], window, head, rows, dims, so_w, so_h, so_n, N)
        tl.store(lse_ptr + (window * H + head) * N + rows, row_max + tl.log(row_sum), mask=rows < N)


@triton.autotune(configs=GRAD_CONFIGS, key=SHAPE_KEY, reset_to_zero=["dq_ptr", "dbias_ptr"])
@triton.jit
def _grad_kernel(q_ptr, k_ptr, v_ptr, o_ptr, do_ptr, lse_ptr, bias_ptr, regions_ptr,
                 dq_ptr, dk_ptr, dv_ptr, dbias_ptr,
                 sq_w, sq_h, sq_n, sk_w, sk_h, sk_n, sv_w, sv_h, sv_n, so_w, so_h, so_n, sdo_w, sdo_h, sdo_n,
                 sdk_w, sdk_h, sdk_n, sdv_w, sdv_h, sdv_n,
                 W, H, N, num_windows, scale,
                 D: tl.constexpr, HAS_REGIONS: tl.constexpr, BIAS_GRAD: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr):
    window = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    dims = tl.arange(0, D)
    keys = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)  # this program's share of the window's keys
    k = _load_rows(k_ptr, window, head, keys, dims, sk_w, sk_h, sk_n, N)
    v = _load_rows(v_ptr, window, head, keys, dims, sv_w, sv_h, sv_n, N)
    k_region = _region_ids(regions_ptr, window, keys, N, num_windows, -1, HAS_REGIONS)
    dk = tl.zeros((BLOCK_N, D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, D), dtype=tl.float32)
    dq_base = dq_ptr + (window * H + head) * N * D  # a contiguous fp32 (W, H, N, D) sum
    for start in range(0, N, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        q = _load_rows(q_ptr, window, head, rows, dims, sq_w, sq_h, sq_n, N)
        do = _load_rows(do_ptr, window, head, rows, dims, sdo_w, sdo_h, sdo_n, N)
        o = _load_rows(o_ptr, window, head, rows, dims, so_w, so_h, so_n, N)
        lse = tl.load(lse_ptr + (window * H + head) * N + rows, mask=rows < N, other=0.0)
        delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
        q_region = _region_ids(regions_ptr, window, rows, N, num_windows, 0, HAS_REGIONS)
        dq, dk, dv = _key_tile_grads(q, do, delta, lse, rows, keys, q_region, k_region, k, v, dk, dv, bias_ptr,
                                     dbias_ptr, head, N, scale, HAS_REGIONS, BIAS_GRAD)
        # each key program adds its share of dq: no second pass recomputing the scores for dq
        tl.atomic_add(dq_base + rows[:, None] * D + dims[None, :], dq * scale, mask=rows[:, None] < N)
    _store_rows(dk_ptr, dk * scale, window, head, keys, dims, sdk_w, sdk_h, sdk_n, N)
    _store_rows(dv_ptr, dv, window, head, keys, dims, sdv_w, sdv_h, sdv_n, N)


def tuned_tiles() -> dict[str, str]:
    """The tile configuration the autotuner kept last for each kernel (benchmark reports)."""
    return {name: str(getattr(kernel, "best_config", None))
            for name, kernel in (("forward", _forward_kernel), ("grad", _grad_kernel))}


def _strides(*tensors: torch.Tensor) -> list[int]:
    """The (W, H, N) strides of (W, H, N, D) tensors, in order."""
    return [stride for tensor in tensors for stride in tensor.stride()[:3]]


def _unit_stride_d(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself when its head dim is contiguous (q, k, v of the qkv linear are); else a copy."""
    return tensor if tensor.stride(-1) == 1 else tensor.contiguous()


def _key_tiles(tokens: int) -> dict[str, int]:
    """The two key tiles a program holds: N_MAIN, the largest power of two <= N (at least 16), and N_TAIL, the
    power of two >= 16 covering the rest, 0 if none. 144 = 128 + 16 keys, no padding (a power of two would pad it
    to 256); 49 -> 32 + 32; 324 -> 256 + 128."""
    main = max(16, 1 << (tokens.bit_length() - 1))
    rest = tokens - main
    return {"N_MAIN": main, "N_TAIL": max(16, triton.next_power_of_2(rest)) if rest > 0 else 0}


def _static_args(q: torch.Tensor, num_windows: int, scale: float, has_regions: bool) -> dict:
    """Shape arguments shared by the kernels."""
    windows_batch, heads, tokens, head_dim = q.shape
    if head_dim < 16 or head_dim & (head_dim - 1):
        raise ValueError(f"the window kernels need a head dim that is a power of two >= 16, not {head_dim}")
    return {"W": windows_batch, "H": heads, "N": tokens, "num_windows": num_windows, "scale": scale,
            "D": head_dim, "HAS_REGIONS": has_regions}


def _regions_args(bias: torch.Tensor, regions: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """The regions pointer (the bias when there are none: never read) and the number of windows per image."""
    return (bias, 1) if regions is None else (regions, regions.shape[0])


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, bias: torch.Tensor,
             regions: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Write softmax(q k^T * scale + bias + mask) v into ``out`` (W, H, N, D); return the logsumexp (W, H, N)."""
    windows_batch, heads, tokens, _ = q.shape
    lse = torch.empty((windows_batch, heads, tokens), device=q.device, dtype=torch.float32)
    regions_ptr, num_windows = _regions_args(bias, regions)
    shape = _static_args(q, num_windows, scale, regions is not None)
    _forward_kernel[(windows_batch, heads)](q, k, v, out, lse, bias, regions_ptr, *_strides(q, k, v, out), **shape,
                                            **_key_tiles(tokens))
    return lse


def _backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
              grad_out: torch.Tensor, grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor], bias: torch.Tensor,
              regions: torch.Tensor | None, scale: float, bias_grad: bool) -> torch.Tensor | None:
    """Write dq, dk, dv into ``grads`` (views of any strides); return the bias gradient (or None if not wanted)."""
    windows_batch, heads, tokens, _ = q.shape
    regions_ptr, num_windows = _regions_args(bias, regions)
    shape = _static_args(q, num_windows, scale, regions is not None)
    # fp32 sums of dq (every key program adds to it) and of the bias gradient (a stand-in of one element when none
    # is wanted: never written)
    dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    dbias = torch.zeros(bias.shape if bias_grad else (1,), device=bias.device, dtype=torch.float32)

    def grid(meta: dict) -> tuple[int, int, int]:
        return windows_batch, heads, triton.cdiv(tokens, meta["BLOCK_N"])

    _grad_kernel[grid](q, k, v, out, grad_out, lse, bias, regions_ptr, dq, *grads[1:], dbias,
                       *_strides(q, k, v, out, grad_out, *grads[1:]), BIAS_GRAD=bias_grad, **shape)
    grads[0].copy_(dq)
    return dbias.to(bias.dtype) if bias_grad else None


def _prepare(bias: torch.Tensor, regions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (H, N, N) bias and (windows, N) int32 regions as the kernels read them (both small)."""
    return bias.contiguous(), None if regions is None else regions.to(torch.int32).contiguous()


# The qkv form as custom ops: opaque to torch.compile, so a compiled model calls the kernels as they are (their
# autotuning included) instead of breaking its graph at an autograd.Function that launches Triton kernels.
@torch.library.custom_op("sifar_tools::window_attention_qkv", mutates_args=())
def _qkv_forward(qkv: torch.Tensor, bias: torch.Tensor, regions: torch.Tensor | None, scale: float,
                 num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(output (W, N, H*D), logsumexp (W, H, N)) of the (W, N, 3*H*D) qkv activations."""
    bias, regions = _prepare(bias, regions)
    windows_batch, tokens, channels = qkv.shape
    out = torch.empty((windows_batch, tokens, channels // 3), device=qkv.device, dtype=qkv.dtype)
    lse = _forward(*split_heads(_unit_stride_d(qkv), num_heads), _heads_view(out, num_heads), bias, regions, scale)
    return out, lse


@torch.library.custom_op("sifar_tools::window_attention_qkv_flex_forward", mutates_args=())
def _qkv_flex_forward(qkv: torch.Tensor, bias: torch.Tensor, regions: torch.Tensor | None, scale: float,
                      num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_qkv_forward` by FlexAttention as ``window_attention.py`` calls it (its output and logsumexp), so
    that the kernels' backward can be measured after the model's own forward."""
    bias, regions = _prepare(bias, regions)
    q, k, v = split_heads(qkv, num_heads)
    attend = compiled_flex_attention() if qkv.is_cuda else flex_attention
    # detached: FlexAttention on the CPU refuses inputs that require gradients (its backward is not used here)
    out, lse = attend(q.detach(), k.detach(), v.detach(), score_mod=window_score_mod(bias.detach(), regions),
                      scale=scale, kernel_options=FLEX_KERNEL_OPTIONS if qkv.is_cuda else None, return_lse=True)
    return merge_heads(out), lse.contiguous()


@_qkv_forward.register_fake
@_qkv_flex_forward.register_fake
def _(qkv, bias, regions, scale, num_heads):
    windows_batch, tokens, channels = qkv.shape
    return (qkv.new_empty((windows_batch, tokens, channels // 3)),
            qkv.new_empty((windows_batch, num_heads, tokens), dtype=torch.float32))


@torch.library.custom_op("sifar_tools::window_attention_qkv_backward", mutates_args=())
def _qkv_backward(qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, grad_out: torch.Tensor,
                  bias: torch.Tensor, regions: torch.Tensor | None, scale: float, num_heads: int,
                  bias_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of qkv, in its layout; gradient of the bias, or an empty tensor when not wanted)."""
    bias, regions = _prepare(bias, regions)
    qkv = _unit_stride_d(qkv)
    grad_qkv = torch.empty_like(qkv)
    dbias = _backward(*split_heads(qkv, num_heads), _heads_view(out, num_heads), lse,
                      _heads_view(grad_out.contiguous(), num_heads), split_heads(grad_qkv, num_heads),
                      bias, regions, scale, bias_grad)
    return grad_qkv, dbias if bias_grad else bias.new_empty(0)


@_qkv_backward.register_fake
def _(qkv, out, lse, grad_out, bias, regions, scale, num_heads, bias_grad):
    return torch.empty_like(qkv), bias.new_empty(bias.shape if bias_grad else (0,))


def _qkv_setup_context(ctx, inputs: tuple, output: tuple) -> None:
    qkv, bias, regions, scale, num_heads = inputs
    ctx.save_for_backward(qkv, *output, bias, regions)
    ctx.scale, ctx.num_heads = scale, num_heads


def _qkv_gradients(ctx, grad_out: torch.Tensor, _grad_lse: torch.Tensor) -> tuple:
    qkv, out, lse, bias, regions = ctx.saved_tensors
    bias_grad = ctx.needs_input_grad[1]
    grad_qkv, dbias = _qkv_backward(qkv, out, lse, grad_out, bias, regions, ctx.scale, ctx.num_heads, bias_grad)
    return grad_qkv, dbias if bias_grad else None, None, None, None


for _op in (_qkv_forward, _qkv_flex_forward):  # both saved what the one backward reads
    _op.register_autograd(_qkv_gradients, setup_context=_qkv_setup_context)


def _heads_view(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The (W, H, N, D) view of a (W, N, H*D) tensor."""
    windows_batch, tokens, channels = x.shape
    return x.view(windows_batch, tokens, num_heads, channels // num_heads).transpose(1, 2)


def window_attention_qkv(qkv: torch.Tensor, bias: torch.Tensor, regions: torch.Tensor | None, scale: float,
                         num_heads: int, flex_forward: bool = False) -> torch.Tensor:
    """(W, N, H*D) window attention of the (W, N, 3*H*D) qkv activations, ready for the output projection: the
    function of ``window_attention.py``'s FlexAttention call on ``qkv.reshape(W, N, 3, H, D).permute(2, 0, 3, 1,
    4)``, with windows the fast axis of W (window = w % num_windows), ``bias`` (H, N, N) and ``regions``
    (num_windows, N) region ids or None (tokens of different regions get SHIFT_MASK_VALUE). The gradient is
    written straight into a (W, N, 3*H*D) tensor: no stacking of dq, dk, dv. ``flex_forward``: FlexAttention's
    forward, these kernels' backward.
    """
    forward = _qkv_flex_forward if flex_forward else _qkv_forward
    return forward(qkv, bias, regions, scale, num_heads)[0]


class KernelWindowAttention(SifarWindowAttention):
    """SifarWindowAttention (same parameters, same checkpoints) computing with :func:`window_attention_qkv`;
    ``flex_forward``: FlexAttention's forward and these kernels' backward."""

    flex_forward = False

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        qkv = self.qkv(x)
        bias = self.score_bias(qkv.dtype)
        regions = None if mask is None else self.shift_regions
        out = window_attention_qkv(qkv, bias, regions, self.scale, self.num_heads, flex_forward=self.flex_forward)
        return self.proj_drop(self.proj(out))


def use_window_kernel(model: torch.nn.Module, max_tokens: int | None = None, flex_forward: bool = False) -> int:
    """Make the window attentions of a Swin SIFAR ``model`` (``create_model`` made them SifarWindowAttention)
    compute with these kernels, in place: all, or those whose windows hold at most ``max_tokens`` tokens (the
    others keep FlexAttention); the number changed. ``flex_forward``: only the backward on the kernels. A
    benchmark's switch, not the package's: the class of each module is swapped, its parameters and buffers
    stay.

    With ``flex_forward``, AOTAutograd's check of custom ops' aliasing (a dispatch mode around a compiled graph's
    first call) is switched off for the process: it cannot look into the custom op's own FlexAttention call
    (on the CPU: "Cannot access storage of BatchedTensorImpl")."""
    attentions = [m for m in model.modules() if isinstance(m, SifarWindowAttention)
                  and (max_tokens is None or m.window_area <= max_tokens)]
    for attention in attentions:
        attention.__class__ = KernelWindowAttention
        attention.flex_forward = flex_forward
    if flex_forward and attentions:
        torch._functorch.config.check_custom_op_aliasing = False
    return len(attentions)
