"""FlexAttention's tile settings at one model's window shapes: which ``kernel_options`` make its kernels fastest.

FlexAttention picks its tiles from a table keyed by head dimension, made for long sequences; SIFAR's windows are
144 tokens (324 at SIFAR-B-12's last stage) at head dimension 32, where a tile that does not divide the window
computes padded scores (a 144-token window in 64 x 64 tiles computes 192 x 192 scores, 1.78x). Each setting here
is a set of ``kernel_options`` laid over ``window_attention.FLEX_KERNEL_OPTIONS`` (the first setting is the one
the others are compared with) and timed on every block shape of the model (its real windows, heads and shift
regions) in one of two modes:

- ``infer``: the forward under ``torch.no_grad()``, as ``sifar-eval`` runs it (default batch 96: 32 clips x 3
  crops); only the forward's options (``BLOCK_M``, ``BLOCK_N``, ``fwd_num_warps``, ...) matter there;
- ``train``: forward and backward with autograd, as ``sifar-train`` runs them (default batch 32).

Times are FlexAttention's own kernels' durations from the profiler (``bench_window_attention.kernel_ms`` with
``ATTENTION_KERNELS``: not autograd's eager layout copies around them, which sessions 22 and 23 counted; the
compiled model's step does that work in kernels of its own), summed over all the model's blocks (a shape's time
its number of blocks): the attention's share of one step; each is also shown against its memory floor
(``bench_window_attention.attention_floor_ms``: the bytes the attention must move at the card's bandwidth), to tell
how far any setting is from what a kernel could reach. Each setting's output (and in ``train`` mode the gradients)
is compared with the first setting's, so a setting that computes something else shows; a setting FlexAttention's
template refuses is reported and skipped. Every setting compiles FlexAttention afresh for every shape.

    python -m tools.bench_flex_tiles --mode infer --json flex_tiles_infer.json
    python -m tools.bench_flex_tiles --mode train --json flex_tiles_train.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sifar.io import write_json
from sifar.models import create_model
from sifar.models.window_attention import FLEX_KERNEL_OPTIONS
from sifar.torch_compat import raise_recompile_limit
from tools.bench_window_attention import (ATTENTION_KERNELS, attention_floor_ms, attention_step, block_inputs,
                                          differences, kernel_ms, model_totals, selected_blocks)

DEVICE = "cuda"
# Forward tiles (BLOCK_M queries x BLOCK_N keys), warps and pipeline stages. The first is FlexAttention's own
# H100 choice at head dim 32 (3 stages, 4 warps) with 64 x 64 tiles, as sessions 4-21 ran it; keys in tiles of 16
# or 32 leave a 144-token window unpadded or nearly (144 = 9 x 16; 160 = 5 x 32). Session 22 made 64 x 32 the
# default (15.8 against 17.2 GPU ms, SIFAR-B-12 inference, H100).
INFER_SETTINGS: dict[str, dict] = {
    "64x64 (sessions 4-21)": {"BLOCK_N": 64},
    "64x32": {"BLOCK_N": 32},
    "64x16": {"BLOCK_N": 16},
    "128x32": {"BLOCK_M": 128, "BLOCK_N": 32},
    "128x16": {"BLOCK_M": 128, "BLOCK_N": 16},
    "128x32 8 warps": {"BLOCK_M": 128, "BLOCK_N": 32, "fwd_num_warps": 8},
    "32x32": {"BLOCK_M": 32, "BLOCK_N": 32},
    "32x16": {"BLOCK_M": 32, "BLOCK_N": 16},
    "64x32 2 stages": {"BLOCK_N": 32, "fwd_num_stages": 2},
    "64x32 rows safe": {"BLOCK_N": 32, "ROWS_GUARANTEED_SAFE": True},
    "64x32 TMA": {"BLOCK_N": 32, "USE_TMA": True},  # experimental in torch 2.11: last, as it may fail
}
# Tried in session 22 and dropped: PRESCALE_QK (q scaled by 1/sqrt(d) * log2(e) once, score_mod then takes scores
# in base 2, so the bias and shift mask were scaled to match): level in inference (15.85 against 15.87 GPU ms), and
# torch 2.11's backward returned the captured bias's gradient log2(e) times too large (relative difference 0.44).
# Backward tiles: BLOCK_M1 queries x BLOCK_N1 keys for dK/dV, BLOCK_M2 x BLOCK_N2 for dQ (the default 16/64/64/16
# was picked in session 4 with an fp32 bias), warps, stages, and where the bias gradient is scattered; all with
# the forward's keys in tiles of 64 as before session 22, and against it the forward's tiles alone.
TRAIN_SETTINGS: dict[str, dict] = {
    "forward 64x64 (sessions 4-21)": {"BLOCK_N": 64},
    "forward 64x32": {"BLOCK_N": 32},
    "16/32/32/16": {"BLOCK_N": 64, "BLOCK_N1": 32, "BLOCK_M2": 32},
    "16/16/16/16": {"BLOCK_N": 64, "BLOCK_N1": 16, "BLOCK_M2": 16},
    "32/32/32/32": {"BLOCK_N": 64, "BLOCK_M1": 32, "BLOCK_N1": 32, "BLOCK_M2": 32, "BLOCK_N2": 32},
    "2 stages": {"BLOCK_N": 64, "bwd_num_stages": 2},
    "8 warps": {"BLOCK_N": 64, "bwd_num_warps": 8},
    "bias gradient in the dK/dV loop": {"BLOCK_N": 64, "WRITE_DQ": False},
}
MODES = {"infer": (INFER_SETTINGS, 96), "train": (TRAIN_SETTINGS, 32)}


def time_setting(block, options: dict, batch: int, train: bool, args) -> dict:
    """GPU ms of one block's attention with ``options``, and its output (and gradients when ``train``)."""
    attn, table = block.attn, block.attn.relative_position_bias_table
    attn.flex_kernel_options = options
    qkv, grad = block_inputs(block, batch, torch.bfloat16)
    qkv.requires_grad_(train)
    forward = attention_step("flex", attn, qkv, block.attn_mask)

    def forward_backward() -> None:
        qkv.grad = table.grad = None
        forward().backward(grad)

    def forward_no_grad() -> None:
        with torch.no_grad():
            forward()

    step = forward_backward if train else forward_no_grad
    for _ in range(args.warmup):
        step()
    milliseconds = kernel_ms(step, args.reps, ATTENTION_KERNELS)
    tensors = {}
    if train:
        forward_backward()
        tensors = {"dqkv": qkv.grad.float(), "dtable": table.grad.float()}
    with torch.no_grad():
        tensors["out"] = forward().float()
    return {"gpu_ms": milliseconds, "tensors": tensors}


def floor_ms(blocks: list[tuple[str, torch.nn.Module, int]], batch: int, train: bool) -> float:
    """The memory floor of the blocks' window attentions, each ``attention_floor_ms`` times its number."""
    return sum(count * attention_floor_ms(block, batch, train) for _label, block, count in blocks)


def sweep(blocks: list[tuple[str, torch.nn.Module, int]], settings: dict[str, dict], batch: int, train: bool,
          args) -> list[dict]:
    """One row per (setting, block shape), settings in the outer loop so each one's total prints when done."""
    raise_recompile_limit(2 * len(settings) * len(blocks))  # past it FlexAttention would fall back unfused
    reference: dict[str, dict] = {}
    rows = []
    for name, setting in settings.items():
        for label, block, count in blocks:
            try:
                result = time_setting(block, {**FLEX_KERNEL_OPTIONS, **setting}, batch, train, args)
            except Exception as error:  # a setting the template refuses (resources, sizes): say so, go on
                print(f"  {name:<34}{label:<16} failed: {type(error).__name__}: {str(error)[:300]}", flush=True)
                rows.append({"setting": name, "options": setting, "block": label, "error": str(error)[:2000]})
                continue
            tensors = result.pop("tensors")
            reference.setdefault(label, tensors)
            row = {"setting": name, "options": setting, "block": label, "blocks": count, **result,
                   "floor_ms": attention_floor_ms(block, batch, train),
                   "vs_first": differences(tensors, reference[label])}
            rows.append(row)
            worst = max((d["rel_norm"] for d in row["vs_first"].values()), default=0.0)
            print(f"  {name:<34}{label:<16}{row['gpu_ms']:>9.3f} ms  {row['gpu_ms'] / row['floor_ms']:>5.1f}x the "
                  f"memory floor  (relative difference {worst:.1e})", flush=True)
        print(f"{name:<34} all {args.model}'s blocks: {setting_totals(rows)[name]:.2f} GPU ms", flush=True)
    return rows


def setting_totals(rows: list[dict]) -> dict[str, float]:
    """Each setting's GPU ms over all the model's blocks (NaN for one that failed on a block)."""
    return {name: total["gpu_ms"] for name, total in model_totals(rows, by="setting", metrics=("gpu_ms",)).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="infer")
    parser.add_argument("--model", default="SIFAR-B-12")
    parser.add_argument("--batch", type=int, help="super images a step (default: 96 for infer, 32 for train)")
    parser.add_argument("--settings", help="comma-separated setting names to run (default: all of the mode's)")
    parser.add_argument("--blocks", help="comma-separated block labels to run (e.g. stage2,stage2-shifted)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--json", help="write the rows and totals to this file")
    args = parser.parse_args()
    settings, default_batch = MODES[args.mode]
    if args.settings:
        unknown = set(args.settings.split(",")) - set(settings)
        if unknown:
            sys.exit(f"--settings: unknown {sorted(unknown)}; {args.mode} has {sorted(settings)}")
        settings = {name: settings[name] for name in args.settings.split(",")}
    if not torch.cuda.is_available():
        sys.exit("bench_flex_tiles needs a CUDA GPU (FlexAttention's Triton kernels)")
    batch = args.batch or default_batch
    with torch.device(DEVICE):
        model = create_model(args.model, num_classes=174, attention="flex")
    model.train(args.mode == "train")
    train, blocks = args.mode == "train", selected_blocks(model, args.blocks)
    floor = floor_ms(blocks, batch, train)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.model}, {args.mode}, batch {batch}; "
          f"relative differences against the first setting; the blocks' memory floor: {floor:.2f} ms")
    rows = sweep(blocks, settings, batch, train, args)
    totals = setting_totals(rows)
    default = next(iter(totals.values()))
    for name, total in sorted(totals.items(), key=lambda item: item[1]):
        print(f"{name:<34}{total:>9.2f} GPU ms  {default / total:.3f}x the first setting  {total / floor:.2f}x the "
              "memory floor")
    if args.json:
        write_json(Path(args.json), {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                     "model": args.model, "mode": args.mode, "batch": batch, "rows": rows,
                                     "totals": totals, "floor_ms": floor})


if __name__ == "__main__":
    main()
