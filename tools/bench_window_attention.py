"""Swin window attention on the GPU: FlexAttention (as sifar/models/window_attention.py calls it) against the
Triton kernels of tools/window_kernel.py, forward and forward+backward, at one model's training shapes.

Each row is one stage's block, shifted or not, with its real (windows * batch, heads, N) and shift regions, taken
from the model itself. All inputs are bf16 as under autocast; q, k, v are the permuted views of one qkv tensor.
The gradients reach the relative-position bias table through the same gather in both. ``kernel-qkv`` is
window_attention_qkv (gradient written straight into the qkv layout); ``flex-fwd-kernel-bwd`` the same with
FlexAttention's forward (``flex_forward=True``). Session 18's first timing also had a ``kernel`` row, the kernels
on q, k, v views, since dropped (docs/window_attention.json). The forward is timed with autograd on, as in
training; the first calls (FlexAttention's compile, the kernels' autotuning) fall in the warmup. Each is timed
twice: wall clock between CUDA events (the host's launches included) and the GPU kernels' durations from the
profiler (:func:`kernel_ms`); the speedups and the totals over all the model's blocks use the GPU times, once
for all the row's kernels and once for the attention's own (``ATTENTION_KERNELS``: not the layout copies around
them, which a compiled model fuses into kernels of its own).

    python -m tools.bench_window_attention --model SIFAR-B-12 --batch 32 --json window_attention.json

Where a kernel's time goes (Nsight Compute; each row's kernels profiled once, warm):

    ncu --clock-control none --profile-from-start off --section SpeedOfLight --section Occupancy \
        python -m tools.bench_window_attention --blocks stage0 --cuda-profiler-range
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from timm.models.swin_transformer import SwinTransformerBlock

from sifar.io import write_json
from sifar.models import create_model
from sifar.models.window_attention import SifarWindowAttention, merge_heads, split_heads
from tools.bench_train import back_to_back_ms
from tools.profile_kinds import device_kernels
from tools.window_kernel import tuned_tiles, window_attention_qkv

IMPLS = ("flex", "kernel-qkv", "flex-fwd-kernel-bwd")
# The attention's own kernels: FlexAttention's forward, its backward and the backward's delta pass (Inductor names
# them after flex_attention), and the Triton kernels. The rest of a row's kernels are the bias's gather and
# scatter and layout copies; with FlexAttention these include autograd's eager kernels that stack dq, dk, dv back
# into the qkv layout (1.7 of 4.6 ms in SIFAR-B-12's first block, Nsight Compute, session 24), which a compiled
# model's step does in one fused kernel of its own (3.8 ms a SIFAR-B-12 training step, all blocks).
ATTENTION_KERNELS = re.compile(r"flex_attention|_forward_kernel|_grad_kernel")
DEVICE = "cuda"
HBM_BYTES_PER_S = 3.35e12  # the H100 SXM's memory bandwidth (HBM3), the card every figure here is from


def stage_blocks(model: torch.nn.Module) -> list[tuple[str, SwinTransformerBlock, int]]:
    """The first unshifted and first shifted block of each stage (the others repeat their shapes), each with the
    number of the model's blocks of its shape."""
    first: dict[str, SwinTransformerBlock] = {}
    counts: Counter[str] = Counter()
    for name, block in model.named_modules():
        if isinstance(block, SwinTransformerBlock):
            stage, shifted = name.split(".blocks.")[0], block.attn_mask is not None
            label = f"stage{stage.split('.')[-1]}{'-shifted' if shifted else ''}"
            first.setdefault(label, block)
            counts[label] += 1
    return [(label, block, counts[label]) for label, block in first.items()]


def selected_blocks(model: torch.nn.Module, labels: str | None) -> list[tuple[str, SwinTransformerBlock, int]]:
    """``stage_blocks`` of the model, only those named in the comma-separated ``labels`` when given."""
    return [(label, block, count) for label, block, count in stage_blocks(model)
            if not labels or label in labels.split(",")]


def model_totals(rows: list[dict], by: str = "impl",
                 metrics: tuple[str, ...] = ("fwd_gpu_ms", "fwd_bwd_gpu_ms")) -> dict[str, dict[str, float]]:
    """Each ``by`` group's GPU ms over all the model's blocks (a row's times its ``blocks``): the attention's
    share of one step, which the equal-weight sum of the rows is not (SIFAR-B's 18 blocks of stage 2). A row
    without a metric (a failed measurement) makes its group's total NaN."""
    totals: dict[str, dict[str, float]] = {}
    for row in rows:
        total = totals.setdefault(row[by], dict.fromkeys(metrics, 0.0))
        for key in metrics:
            total[key] += row.get("blocks", 0) * row.get(key, math.nan)
    return totals


def attention_floor_ms(block: SwinTransformerBlock, batch: int, train: bool,
                       bytes_per_s: float = HBM_BYTES_PER_S) -> float:
    """The least GPU time ``block``'s window attention can take at ``batch`` super images: the bf16 bytes it must
    move at the card's memory bandwidth. The forward reads qkv (3C a token) and writes the output (C); training's
    backward reads qkv, the output and its gradient again and writes the qkv gradient (3 + 1 + 1 + 3 C). The
    scores never leave the chip, and at head dimension 32 their matrix products and exponentials take less than
    this (SIFAR-B-12 inference with 64 x 32 tiles: 1.8 and 3.5 ms of padded work, at the H100's dense bf16 peak
    and 16 exponentials a clock per SM, against 4.7 ms of bytes; session 23), so this is the roofline a kernel
    is compared with."""
    tokens = batch * math.prod(block.input_resolution)
    channels_moved = 12 if train else 4
    return tokens * channels_moved * block.attn.qkv.in_features * 2 / bytes_per_s * 1e3


def block_inputs(block: SwinTransformerBlock, batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random (W, N, 3C) qkv activations of ``block``'s windows at ``batch`` super images, and a (W, N, C)
    output gradient."""
    channels = block.attn.qkv.out_features
    tokens = block.window_size[0] * block.window_size[1]
    rows, cols = (size // window for size, window in zip(block.input_resolution, block.window_size))
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    qkv = torch.randn(batch * rows * cols, tokens, channels, device=DEVICE, generator=generator, dtype=dtype)
    grad = torch.randn(qkv.shape[0], tokens, channels // 3, device=DEVICE, generator=generator, dtype=dtype)
    return qkv, grad


def attention_step(impl: str, attn: SifarWindowAttention, qkv: torch.Tensor, mask: torch.Tensor | None):
    """A function computing the (W, N, H*D) attention output of ``qkv`` with ``impl``."""
    heads = attn.num_heads
    regions = None if mask is None else attn.shift_regions

    def step() -> torch.Tensor:
        if impl != "flex":
            return window_attention_qkv(qkv, attn.score_bias(qkv.dtype), regions, attn.scale, heads,
                                        flex_forward=impl == "flex-fwd-kernel-bwd")
        return merge_heads(attn._flex(*split_heads(qkv, heads), mask))

    return step


def kernel_times_ms(fn: Callable[[], object], reps: int) -> dict[str, float]:
    """Mean milliseconds a call of each GPU kernel ``fn`` launches, by the kernel's name
    (:func:`tools.profile_kinds.device_kernels`; empty under Nsight Compute). Wall-clock timing of calls of under a
    millisecond also times the host's launches (FlexAttention's compiled call wraps each in guards): the two agreed
    to 1% at stage 0, but at stages 1-3 one FlexAttention row moved by up to 2x between two machines (session 19)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    return {kernel["name"]: kernel["gpu_ms_per_step"] for kernel in device_kernels(prof.key_averages(), reps)}


def summed_ms(times: dict[str, float], names: re.Pattern | None = None) -> float:
    """The kernels' ``times`` summed (only those whose names match ``names`` when given); NaN when none were
    measured."""
    if not times:
        return math.nan
    return sum(ms for name, ms in times.items() if names is None or names.search(name))


def kernel_ms(fn: Callable[[], object], reps: int, names: re.Pattern | None = None) -> float:
    """Mean GPU milliseconds of the kernels ``fn`` launches (:func:`kernel_times_ms`, :func:`summed_ms`)."""
    return summed_ms(kernel_times_ms(fn, reps), names)


def in_cuda_profiler_range(fn: Callable[[], object]) -> None:
    """One call of ``fn`` between cudaProfilerStart and cudaProfilerStop: what ``ncu --profile-from-start off``
    profiles, each kernel once, warm (FlexAttention compiled, the kernels tuned)."""
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    fn()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


def measure(impl: str, block: SwinTransformerBlock, qkv: torch.Tensor, grad: torch.Tensor, args) -> dict:
    """Forward and forward+backward times of one implementation, and its output and gradients."""
    attn, table = block.attn, block.attn.relative_position_bias_table
    step = attention_step(impl, attn, qkv, block.attn_mask)

    def forward_backward() -> None:
        qkv.grad = table.grad = None
        step().backward(grad)

    forward_ms = back_to_back_ms(step, args.warmup, args.reps)  # with autograd on, as in training
    train_ms = back_to_back_ms(forward_backward, args.warmup, args.reps)
    train_times = kernel_times_ms(forward_backward, args.reps)
    forward_gpu_ms, train_gpu_ms = kernel_ms(step, args.reps), summed_ms(train_times)
    train_attention_ms = summed_ms(train_times, ATTENTION_KERNELS)
    if args.cuda_profiler_range:
        in_cuda_profiler_range(forward_backward)
    out = step()
    qkv.grad = table.grad = None
    out.backward(grad)
    tensors = {"out": out.detach().float(), "dqkv": qkv.grad.float(), "dtable": table.grad.float()}
    return {"fwd_ms": forward_ms, "fwd_bwd_ms": train_ms, "fwd_gpu_ms": forward_gpu_ms, "fwd_bwd_gpu_ms": train_gpu_ms,
            "fwd_bwd_attention_gpu_ms": train_attention_ms, "tensors": tensors}


def differences(got: dict, expected: dict) -> dict:
    """Max absolute difference and relative norm of each output against FlexAttention's."""
    return {name: {"max_abs": (got[name] - ref).abs().max().item(),
                   "rel_norm": ((got[name] - ref).norm() / ref.norm().clamp_min(1e-12)).item()}
            for name, ref in expected.items()}


def bench_block(label: str, block: SwinTransformerBlock, args) -> list[dict]:
    """Rows for one block shape: each implementation's times, the kernels' differences from FlexAttention."""
    qkv, grad = block_inputs(block, args.batch, args.dtype)
    qkv.requires_grad_()
    (windows, tokens, _), heads = qkv.shape, block.attn.num_heads
    results = {impl: measure(impl, block, qkv, grad, args) for impl in IMPLS}
    tensors = {impl: result.pop("tensors") for impl, result in results.items()}
    tuned = tuned_tiles()
    print(f"{label}: the autotuner's tiles {tuned}", flush=True)
    return [{"block": label, "W": windows, "H": heads, "N": tokens, "impl": impl, **result, "tuned": tuned,
             "vs_flex": differences(tensors[impl], tensors["flex"]) if impl != "flex" else {}}
            for impl, result in results.items()]


def print_row(row: dict, flex: dict) -> None:
    errors = " ".join(f"{name} {e['max_abs']:.1e}/{e['rel_norm']:.1e}" for name, e in row["vs_flex"].items())
    attention = "fwd_bwd_attention_gpu_ms"
    print(f"{row['block']:<16}{row['W']:>6}{row['H']:>4}{row['N']:>5}  {row['impl']:<20}{row['fwd_ms']:>8.3f}"
          f"{row['fwd_bwd_ms']:>9.3f}{row['fwd_gpu_ms']:>9.3f}{row['fwd_bwd_gpu_ms']:>9.3f}{row[attention]:>9.3f}"
          f"{flex['fwd_bwd_gpu_ms'] / row['fwd_bwd_gpu_ms']:>8.2f}x{flex[attention] / row[attention]:>7.2f}x  {errors}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SIFAR-B-12")
    parser.add_argument("--batch", type=int, default=32, help="clips per step (W = batch * windows per image)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--blocks", help="comma-separated labels to run (e.g. stage0,stage0-shifted); default all")
    parser.add_argument("--cuda-profiler-range", action="store_true",
                        help="after its timings, one forward + backward of each row between cudaProfilerStart and "
                             "Stop, for `ncu --profile-from-start off`")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_window_attention needs a CUDA GPU (FlexAttention and Triton kernels)")
    args.dtype = torch.bfloat16
    with torch.device(DEVICE):
        model = create_model(args.model, num_classes=174, attention="flex")
    print(f"{torch.cuda.get_device_name()}, {args.model}, batch {args.batch}; max abs / relative norm vs flex")
    print(f"{'block':<16}{'W':>6}{'H':>4}{'N':>5}  {'impl':<20}{'fwd ms':>8}{'f+b ms':>9}{'fwd GPU':>9}{'f+b GPU':>9}"
          f"{'f+b attn':>9}{'speedups':>16}  errors (speedups: f+b GPU ms and f+b attention kernels' ms, "
          f"FlexAttention's over the row's)")
    rows = []
    for label, block, count in selected_blocks(model, args.blocks):
        block_rows = [{**row, "blocks": count} for row in bench_block(label, block, args)]
        for row in block_rows:
            print_row(row, block_rows[0])
        rows += block_rows
    totals = model_totals(rows, metrics=("fwd_gpu_ms", "fwd_bwd_gpu_ms", "fwd_bwd_attention_gpu_ms"))
    for impl, total in totals.items():
        print(f"all {args.model}'s blocks, {impl}: forward {total['fwd_gpu_ms']:.2f} GPU ms, forward + backward "
              f"{total['fwd_bwd_gpu_ms']:.2f} ({totals['flex']['fwd_bwd_gpu_ms'] / total['fwd_bwd_gpu_ms']:.2f}x), "
              f"the attention's own kernels {total['fwd_bwd_attention_gpu_ms']:.2f} "
              f"({totals['flex']['fwd_bwd_attention_gpu_ms'] / total['fwd_bwd_attention_gpu_ms']:.2f}x)")
    if args.json:
        write_json(Path(args.json), {"device": torch.cuda.get_device_name(), "model": args.model,
                                     "batch": args.batch, "rows": rows, "model_totals": totals})


if __name__ == "__main__":
    main()
