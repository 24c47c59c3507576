"""Training and inference speed on one GPU, every figure beside the official-style baseline of the same run.

    python -m tools.bench_train [--models SIFAR-B-12,SIFAR-B-14-16f] [--batch 32] [--steps 20]
                                [--cnn-pair] [--end-to-end] [--json results.json]

1. Model step (random inputs): forward + backward + AdamW step of each variant below, clips/s, ms/step,
   peak memory and MFU against ``--peak-tflops`` (a training clip costs 3 x 2 x the forward multiply-adds).
   ms/step is the time of ``--steps`` steps queued back to back between two CUDA events, as ``sifar-train``
   runs them (it reads each step's loss a step late, so it never waits for the GPU in between); "synced ms"
   is the median of single steps with a host sync after each, the method of the figures before session 8.
   The baseline ``official`` runs this project's model the way the official SIFAR code does: fp32 with
   TF32 matmuls, explicit (unfused) attention, eager, unfused AdamW; it does the official arithmetic.
2. Inference (random inputs, ``--batch`` clips x 3 crops): clips/s of the baseline and the fast variant.
3. With ``--cnn-pair``: ``--cnn-model`` (SIFAR-R50) training against timm's plain ``resnet50`` at the same
   pixels a step, both channels-last and compiled; the ratio of their speeds.
4. With ``--end-to-end``: makes the synthetic dataset at 320x240, shards it, runs ``sifar-train`` (the real
   loader on this machine's cores) and ``sifar-eval`` (1 clip x 3 crops) with the fastest variant the commands
   run at their defaults (or ``--e2e-variant``, e.g. ``flex-bf16-compile-geluaux-dgelu`` for ``--gelu-epilogue``)
   and with the baseline settings, and prints their throughput beside the pure-model figures of part 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2

from sifar.models import compile_model, create_model, get_config
from sifar.models.compile import TRAINING_COMPILE_OPTIONS
from sifar.models.float8 import convert_to_float8
from sifar.models.flops import count_cost
from sifar.models.fused_norm import FusedNorm
from sifar.models.gelu_epilogue_training import use_training_gelu_epilogue
from sifar.models.mlp import set_gelu_epilogue
from sifar.models.swin import SifarSwin, set_fused_norm
from sifar.models.window_attention import FLEX_KERNEL_OPTIONS, set_attention
from sifar.io import write_json
from sifar.metrics_log import read_metrics
from sifar.precision import allow_tf32
from tools.autotuned_linears import use_autotuned_linears
from tools.profile_kinds import device_kernels, kinds_table, sum_by_kind
from tools.window_kernel import use_window_kernel

REPO = Path(__file__).resolve().parents[1]
PROFILE_STEPS = 3  # steps a --profile table sums


@dataclass(frozen=True)
class Variant:
    name: str
    attention: str
    bf16: bool
    compile: bool
    fused_adamw: bool
    flex_kernel_options: dict | None = None  # None: FLEX_KERNEL_OPTIONS
    compile_options: dict | None = None  # None: as sifar-train / sifar-eval --compile run (compile_model)
    fp8: bool = False  # linear layers in float8 (sifar-train --precision fp8), the rest bf16
    window_kernel: bool = False  # window attention on tools/window_kernel.py's Triton kernels (a candidate)
    window_kernel_max_tokens: int | None = None  # only windows of at most this many tokens (None: all)
    window_kernel_flex_forward: bool = False  # only the kernels' backward, after FlexAttention's forward
    gelu_epilogue: bool = True  # inference's MLP GELU in the GEMM's epilogue (sifar.models.mlp), as the commands run
    training_gelu_epilogue: bool = False  # training's GELU in cuBLASLt's epilogues (sifar-train --gelu-epilogue)
    fused_norm: FusedNorm = SifarSwin.fused_norm  # where residual adds and LayerNorms are fused, as models are built
    autotuned_linears: bool = False  # inference's qkv and fc1 on nvmath-autotuned cuBLASLt (tools/autotuned_linears.py)

    @property
    def commands_can_run(self) -> bool:
        """Whether ``sifar-train`` / ``sifar-eval`` run as this variant does, with :attr:`train_flags` (none of the
        benchmark's own tiles or compile options, no fp8, no kernel, block or GEMM candidate, inference's GELU epilogue
        on, the fused norm as models are built)."""
        return (self.flex_kernel_options is None and self.compile_options is None and not self.fp8
                and not self.window_kernel and self.gelu_epilogue and self.fused_norm == SifarSwin.fused_norm
                and not self.autotuned_linears)

    @property
    def as_the_commands_run(self) -> bool:
        """Whether the commands at their defaults run as this variant does: the end-to-end rows compare the
        fastest of these unless ``--e2e-variant`` names another."""
        return self.commands_can_run and not self.train_flags

    @property
    def train_flags(self) -> list[str]:
        """``sifar-train``'s options beyond ``--attention`` and ``--compile`` that run this variant's step."""
        return ["--gelu-epilogue"] if self.training_gelu_epilogue else []


# FlexAttention's tiles before the backward's tiles of 16 (window_attention.FLEX_KERNEL_OPTIONS)
FLEX_TILES_64 = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_M1": 32, "BLOCK_N1": 64, "BLOCK_M2": 64, "BLOCK_N2": 32}
# the forward's keys in tiles of 64 again, as sessions 4-21 ran it
FLEX_FORWARD_64 = {**FLEX_KERNEL_OPTIONS, "BLOCK_N": 64}
# Inductor's own Triton GEMMs where they beat cuBLAS, with bias and GELU fused into their epilogues
AUTOTUNE_COMPILE_OPTIONS = {**TRAINING_COMPILE_OPTIONS, "max_autotune_gemm": True, "epilogue_fusion": True}
BASELINE = Variant("official", attention="eager", bf16=False, compile=False, fused_adamw=False)
VARIANTS = (
    BASELINE,
    Variant("sdpa-bf16", attention="sdpa", bf16=True, compile=False, fused_adamw=True),
    Variant("sdpa-bf16-compile", attention="sdpa", bf16=True, compile=True, fused_adamw=True),
    Variant("flex-bf16-compile", attention="flex", bf16=True, compile=True, fused_adamw=True),
    # the previous tiles, to measure what the backward's tiles of 16 moved
    Variant("flex-bf16-compile-tiles64", attention="flex", bf16=True, compile=True, fused_adamw=True,
            flex_kernel_options=FLEX_TILES_64),
    Variant("flex-bf16-compile-fwd64", attention="flex", bf16=True, compile=True, fused_adamw=True,
            flex_kernel_options=FLEX_FORWARD_64),
    # training without Programmatic Dependent Launch, to measure what it moves (inference runs without it)
    Variant("flex-bf16-compile-nopdl", attention="flex", bf16=True, compile=True, fused_adamw=True,
            compile_options={}),
    # the forward and backward replayed as CUDA graphs (no launch gaps; the optimizer step stays outside)
    Variant("flex-bf16-compile-cudagraphs", attention="flex", bf16=True, compile=True, fused_adamw=True,
            compile_options={**TRAINING_COMPILE_OPTIONS, "triton.cudagraphs": True}),
    # Inductor's own Triton GEMMs (AUTOTUNE_COMPILE_OPTIONS)
    Variant("flex-bf16-compile-autotune", attention="flex", bf16=True, compile=True, fused_adamw=True,
            compile_options=AUTOTUNE_COMPILE_OPTIONS),
    # inference's MLP GELU as a pass of its own (exact GELU), to measure what the GEMM epilogue moves
    Variant("flex-bf16-compile-gelupass", attention="flex", bf16=True, compile=True, fused_adamw=True,
            gelu_epilogue=False),
    # Inductor's Triton GEMMs with the exact GELU in their epilogue, against cuBLASLt's tanh GELU (inference)
    Variant("flex-bf16-compile-autotune-gelupass", attention="flex", bf16=True, compile=True, fused_adamw=True,
            compile_options=AUTOTUNE_COMPILE_OPTIONS,
            gelu_epilogue=False),
    # the same with Inductor's persistent TMA GEMM templates, whose stores run while the next tile loads (session
    # 29: cuBLAS's picks for the wide-output GEMMs, fc1 and qkv, run at 470-530 TFLOP/s against ~705 for the others)
    Variant("flex-bf16-compile-autotune-tma-gelupass", attention="flex", bf16=True, compile=True, fused_adamw=True,
            compile_options={**AUTOTUNE_COMPILE_OPTIONS, "triton.enable_persistent_tma_matmul": True},
            gelu_epilogue=False),
    # inference's qkv and fc1 + GELU on the cuBLASLt algorithm nvmath-python times fastest (session 29's candidate)
    Variant("flex-bf16-compile-autotuned-linears", attention="flex", bf16=True, compile=True, fused_adamw=True,
            autotuned_linears=True),
    # sifar-train --precision fp8 --compile (torchao's float8 linear layers)
    Variant("flex-fp8-compile", attention="flex", bf16=True, compile=True, fused_adamw=True, fp8=True),
    # the candidate Triton window-attention kernels in place of FlexAttention (tools/window_kernel.py)
    Variant("kernel-bf16-compile", attention="flex", bf16=True, compile=True, fused_adamw=True, window_kernel=True),
    # the kernels for 12x12 windows only: SIFAR-B-12's last stage (18x18 = 324 tokens, where their backward took
    # 2.3x FlexAttention's in session 19) keeps FlexAttention
    Variant("kernel144-bf16-compile", attention="flex", bf16=True, compile=True, fused_adamw=True,
            window_kernel=True, window_kernel_max_tokens=144),
    # FlexAttention's forward, the kernels' backward (session 23's: each window's keys split over programs)
    Variant("flexfwd-kernelbwd-bf16-compile", attention="flex", bf16=True, compile=True, fused_adamw=True,
            window_kernel=True, window_kernel_flex_forward=True),
    # the MLP's GELU and its gradient in cuBLASLt's GEMM epilogues in training too (sifar-train --gelu-epilogue,
    # needs nvmath-python); session 25 measured it as "geluaux-dgelu" beside DGELU_BGRAD's "geluaux", since removed
    Variant("flex-bf16-compile-geluaux-dgelu", attention="flex", bf16=True, compile=True, fused_adamw=True,
            training_gelu_epilogue=True),
    # inference's residual adds and LayerNorms as timm's blocks run them, to measure what the fused kernel moves
    # (sifar.models.fused_norm: as models are built, one Triton kernel a pass with the rolls and window copies)
    Variant("flex-bf16-compile-timmnorm", attention="flex", bf16=True, compile=True, fused_adamw=True,
            fused_norm="off"),
    # training's fused too, with their gradients (session 27's candidate)
    Variant("flex-bf16-compile-fusednorm-train", attention="flex", bf16=True, compile=True, fused_adamw=True,
            fused_norm="training"),
    Variant("flex-bf16-compile-geluaux-dgelu-fusednorm-train", attention="flex", bf16=True, compile=True,
            fused_adamw=True, training_gelu_epilogue=True, fused_norm="training"),
)
VARIANTS_BY_NAME = {v.name: v for v in VARIANTS}
# CNN SIFAR against the plain image model it wraps: channels-last, bf16, compiled, fused AdamW
CNN_VARIANT = Variant("cnn-bf16-compile-cl", attention="eager", bf16=True, compile=True, fused_adamw=True)


@dataclass
class Measurement:
    model: str
    variant: str
    mode: str  # train or infer
    clips_per_s: float
    ms_per_step: float
    synced_ms: float
    peak_gib: float
    mfu: float
    speedup: float | None = None  # against the official run of the same model and mode; None without one


def back_to_back_ms(step, warmup: int, steps: int) -> float:
    """Milliseconds a step over ``steps`` steps queued back to back (timed between CUDA events), after ``warmup``
    untimed steps (compilation and autotuning happen there); peak memory is counted from the timed steps."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / steps


def step_ms(step, warmup: int, steps: int) -> tuple[float, float]:
    """(ms a step queued back to back (:func:`back_to_back_ms`), median ms of single steps each followed by a host
    sync)."""
    back_to_back = back_to_back_ms(step, warmup, steps)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(steps):
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return back_to_back, sorted(times)[len(times) // 2]


def build(model_name: str, variant: Variant, num_classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(model_name, num_classes, attention=variant.attention, drop_path_rate=0.1).cuda()
    if variant.flex_kernel_options is not None:
        set_attention(model, variant.attention, variant.flex_kernel_options)
    if variant.fp8:
        convert_to_float8(model, torch.device("cuda"))
    if variant.window_kernel:
        use_window_kernel(model, variant.window_kernel_max_tokens, variant.window_kernel_flex_forward)
    if not variant.gelu_epilogue:
        set_gelu_epilogue(model, enabled=False)
    if variant.training_gelu_epilogue:
        use_training_gelu_epilogue(model)
    if variant.autotuned_linears:
        use_autotuned_linears(model)
    set_fused_norm(model, variant.fused_norm)
    return model


def compiled(model: torch.nn.Module, variant: Variant, training: bool) -> torch.nn.Module:
    if not variant.compile:
        return model
    if variant.compile_options is None:
        return compile_model(model, training)
    return torch.compile(model, options=variant.compile_options)


def train_step_fn(model: torch.nn.Module, variant: Variant, batch: int, num_classes: int):
    """One training step on fixed random clips and soft (Mixup-like) targets."""
    config = get_config(model.name)
    frames = torch.randn(batch, config.num_frames, 3, config.frame_size, config.frame_size, device="cuda")
    return train_step_on(model, variant, frames, num_classes)


def train_step_on(model: torch.nn.Module, variant: Variant, inputs: torch.Tensor, num_classes: int):
    """One training step of ``model`` on ``inputs`` (clips or images) and soft targets."""
    targets = torch.rand(inputs.shape[0], num_classes, device="cuda").softmax(-1)
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-4, weight_decay=0.05, fused=variant.fused_adamw)
    criterion = SoftTargetCrossEntropy()
    forward = compiled(model, variant, training=True)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=variant.bf16):
            loss = criterion(forward(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def infer_step_fn(model: torch.nn.Module, variant: Variant, batch: int, crops: int = 3):
    config = get_config(model.name)
    frames = torch.randn(batch * crops, config.num_frames, 3, config.frame_size, config.frame_size, device="cuda")
    forward = compiled(model.eval(), variant, training=False)

    @torch.no_grad()  # as sifar-eval runs
    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=variant.bf16):
            forward(frames).float().softmax(-1).view(batch, crops, -1).mean(1)

    return step


def release_compiled() -> float:
    """Drop the compiled graphs and the cached GPU memory of a measured model (the caller has deleted it), so the
    next measurement starts clean; return the measurement's peak memory in GiB."""
    torch._dynamo.reset()
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.empty_cache()
    return peak


def measure(model_name: str, variant: Variant, mode: str, args) -> Measurement | None:
    allow_tf32()  # as the anchor runs of the official code, and as sifar-train / sifar-eval run
    model = build(model_name, variant, args.num_classes)
    try:
        step = (train_step_fn(model, variant, args.batch, args.num_classes) if mode == "train"
                else infer_step_fn(model, variant, args.batch))
        ms, synced_ms = step_ms(step, args.warmup, args.steps)
        if variant.name in args.profile.split(","):
            profile(step, f"{model_name}-{variant.name}-{mode}", args.json)
    except Exception as err:  # out of memory, or a kernel this GPU/torch lacks: report it, go on
        print(f"{model_name} {variant.name} {mode}: failed: {type(err).__name__}: {str(err)[:400]}", flush=True)
        return None
    finally:
        del model
        peak = release_compiled()
    clips_per_s = 1000.0 * args.batch / ms
    # 2 FLOPs per multiply-add, times 3: forward + backward when training, 3 crops per clip in inference.
    flops_per_clip = 3 * 2 * 1e9 * count_cost(model_name, num_classes=args.num_classes).gflops
    mfu = clips_per_s * flops_per_clip / (args.peak_tflops * 1e12)
    result = Measurement(model_name, variant.name, mode, clips_per_s, ms, synced_ms, peak, mfu)
    print(f"{model_name:16s} {variant.name:18s} {mode:5s} {clips_per_s:8.1f} clips/s {ms:8.1f} ms "
          f"(synced {synced_ms:.1f} ms = {1000.0 * args.batch / synced_ms:.1f} clips/s) {peak:6.1f} GiB  "
          f"MFU {100 * mfu:5.1f}%", flush=True)
    return result


def profile(step, label: str, json_path: str | None) -> None:
    """Print the 60 kernels that take the most GPU time over PROFILE_STEPS steps and every kernel's time summed by
    kind (tools.profile_kinds); beside the JSON, save that table and every kernel's GPU time per step
    (``profile-<label>.json``, for tools.profile_kinds: the table omits the tail)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(PROFILE_STEPS):
            step()
        torch.cuda.synchronize()
    averages = prof.key_averages()
    table = averages.table(sort_by="cuda_time_total", row_limit=60, max_name_column_width=90)
    kernels = device_kernels(averages, PROFILE_STEPS)
    print(f"--- profile {label}\n{table}\n{kinds_table({f'{label}, GPU ms a step': sum_by_kind(kernels)})}", flush=True)
    if json_path:
        Path(json_path).with_name(f"profile-{label}.txt").write_text(table)
        write_json(Path(json_path).with_name(f"profile-{label}.json"), kernels)


def add_speedups(results: list[Measurement]) -> None:
    for r in results:
        base = next((b for b in results if b.model == r.model and b.mode == r.mode and b.variant == BASELINE.name),
                    None)
        r.speedup = r.clips_per_s / base.clips_per_s if base else None


def print_table(results: list[Measurement]) -> None:
    print("\n| model | variant | mode | clips/s | ms/step | synced ms | peak GiB | MFU | x official |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.model} | {r.variant} | {r.mode} | {r.clips_per_s:.1f} | {r.ms_per_step:.1f} | {r.synced_ms:.1f} | "
              f"{r.peak_gib:.1f} | {100 * r.mfu:.1f}% | {'-' if r.speedup is None else f'{r.speedup:.2f}x'} |")


def cnn_pair(args) -> dict[str, float]:
    """``--cnn-model`` (a CNN SIFAR) training against the plain timm image model it wraps at the same pixels a
    step: ``--batch`` clips (8 frames of 224 on a 3x3 grid of 672 px, one cell blank) against ``--batch`` x 9
    images of 224, both channels-last, bf16, compiled, fused AdamW. The ratio is what the super image costs."""
    config = get_config(args.cnn_model)
    cells = config.grid[0] * config.grid[1]
    allow_tf32()
    timed = {}
    for what in ("sifar", "image"):
        torch.manual_seed(0)
        if what == "sifar":
            model = create_model(args.cnn_model, args.num_classes)
            inputs = torch.randn(args.batch, config.num_frames, 3, config.frame_size, config.frame_size)
        else:
            model = timm.create_model(config.arch["timm_name"], num_classes=args.num_classes)
            inputs = torch.randn(args.batch * cells, 3, config.frame_size, config.frame_size).contiguous(
                memory_format=torch.channels_last)
        model = model.cuda().to(memory_format=torch.channels_last)
        timed[what], _ = step_ms(train_step_on(model, CNN_VARIANT, inputs.cuda(), args.num_classes), args.warmup,
                                 args.steps)
        del model
        timed[f"{what}_peak_gib"] = release_compiled()
    found = {"model": args.cnn_model, "image_model": config.arch["timm_name"], "images_per_clip": cells,
             "sifar_clips_per_s": 1000.0 * args.batch / timed["sifar"],
             "image_model_images_per_s": 1000.0 * args.batch * cells / timed["image"],
             "sifar_peak_gib": timed["sifar_peak_gib"], "image_model_peak_gib": timed["image_peak_gib"],
             "ratio_at_same_pixels": timed["image"] / timed["sifar"]}
    print(f"{args.cnn_model} {found['sifar_clips_per_s']:.1f} clips/s ({args.batch} clips of {cells} cells a step) "
          f"against {found['image_model']} {found['image_model_images_per_s']:.1f} images/s "
          f"({args.batch * cells} images a step): {found['ratio_at_same_pixels']:.3f} of its speed at the same "
          f"pixels", flush=True)
    return found


# End to end --------------------------------------------------------------------------------------------------

def sifar(*args: str) -> str:
    """Run one of the project's commands as a user would, return its output (raise with it on failure)."""
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def make_shards(root: Path, videos: int, workers: int) -> Path:
    synth, shards = root / "synth", root / "shards"
    sifar("sifar.cli.tools", "synth", "--output", str(synth), "--videos", str(videos), "--frames", "32",
          "--size", "320x240", "--val-fraction", "0.5", "--workers", str(workers), "--no-progress")
    for split in ("train", "val"):
        sifar("sifar.cli.tools", "shard", "--dataset", "csv", "--src", str(synth), "--output", str(shards),
              "--split", split, "--short-side", "0", "--workers", str(workers), "--no-progress")
    return shards


def steady_train_speed(metrics: Path, batch: int, skip: int) -> tuple[float, float]:
    """(clips/s, data-wait share) over the logged steps after the first ``skip`` (compilation, warm-up)."""
    steps = [r for r in read_metrics(metrics) if r.get("kind") == "step"][skip:]
    elapsed = steps[-1]["time"] - steps[0]["time"]
    waited = sum(r["wait_s"] for r in steps[1:])
    return batch * (len(steps) - 1) / elapsed, waited / elapsed


def end_to_end(args, fast: Variant, pure: dict[str, float]) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="sifar_e2e_"))
    shards = make_shards(root, args.e2e_videos, args.workers)
    rows = []
    run = root / "run"
    sifar("sifar.cli.train", "--shards", str(shards), "--output", str(run), "--model", args.e2e_model,
          "--batch-size", str(args.batch), "--workers", str(args.workers), "--attention", fast.attention,
          "--compile", "--max-steps", str(args.e2e_steps), "--steps-per-epoch", str(args.e2e_steps),
          "--epochs", "1", "--save-every", "1000000", *fast.train_flags)
    clips, wait = steady_train_speed(run / "metrics.jsonl", args.batch, skip=2 * args.warmup)
    ratio = clips / pure[args.e2e_model]
    rows.append({"what": "sifar-train", "variant": fast.name, "clips_per_s": clips, "data_wait": wait,
                 "vs_pure_model_step": ratio})
    print(f"sifar-train {args.e2e_model} ({fast.name}, {args.workers} workers): {clips:.1f} clips/s, "
          f"data wait {100 * wait:.1f}%, {100 * ratio:.0f}% of the pure model step", flush=True)
    checkpoint = run / "last.pt"
    for variant, flags in ((BASELINE, ["--attention", "eager", "--precision", "fp32"]),
                           (fast, ["--attention", fast.attention, "--precision", "bf16", "--compile"])):
        out = sifar("sifar.cli.evaluate", "--shards", str(shards), "--checkpoint", str(checkpoint), "--crops", "3",
                    "--batch-size", str(args.batch), "--workers", str(args.workers), *flags)
        speed = float(out.split(" videos/s")[0].rsplit(" ", 1)[-1])
        rows.append({"what": "sifar-eval", "variant": variant.name, "clips_per_s": speed})
        print(f"sifar-eval {args.e2e_model} 1 clip x 3 crops ({variant.name}): {speed:.1f} clips/s", flush=True)
    rows[-1]["vs_official"] = rows[-1]["clips_per_s"] / rows[-2]["clips_per_s"]
    print(f"sifar-eval speed-up over the official-style run: {rows[-1]['vs_official']:.2f}x", flush=True)
    return rows


def end_to_end_choices(name: str, model: str, planned: list[tuple[str, Variant, str]]) -> list[str]:
    """The variants ``sifar-train`` may run end to end: ``name``, else those the commands run at their defaults;
    only those whose training step of ``model`` is planned, to compare with. SystemExit, naming the problem,
    before any GPU work."""
    if name and (name not in VARIANTS_BY_NAME or not VARIANTS_BY_NAME[name].commands_can_run):
        runnable = ", ".join(v.name for v in VARIANTS if v.commands_can_run)
        sys.exit(f"--e2e-variant {name!r}: the commands run only {runnable}")
    wanted = [name] if name else [v.name for v in VARIANTS if v.as_the_commands_run]
    choices = [v.name for m, v, mode in planned if m == model and mode == "train" and v.name in wanted]
    if not choices:
        sys.exit(f"--end-to-end: add {model}/{name or 'flex-bf16-compile'}/train to the run, the step it is "
                 "compared with")
    return choices


def planned_runs(args) -> list[tuple[str, Variant, str]]:
    """(model, variant, mode) of each measurement: ``--runs`` if given, else every combination; checked before
    any GPU work, so a misspelt item fails at once, not after the runs before it."""
    if not args.runs:
        return [(name, v, mode) for name in args.models.split(",") for mode in args.modes.split(",")
                for v in VARIANTS if v.name in args.variants.split(",")]
    planned = []
    for item in args.runs.split(","):
        name, variant, mode = (item.split("/") + ["", ""])[:3]
        if variant not in VARIANTS_BY_NAME or mode not in ("train", "infer"):
            sys.exit(f"--runs: {item!r} is not MODEL/VARIANT/MODE with a variant of "
                     f"{', '.join(VARIANTS_BY_NAME)} and a mode of train or infer")
        try:
            get_config(name)
        except KeyError as err:
            sys.exit(f"--runs: {item!r}: {err.args[0]}")
        planned.append((name, VARIANTS_BY_NAME[variant], mode))
    return planned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="SIFAR-B-12,SIFAR-B-14-16f")
    parser.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
    parser.add_argument("--modes", default="train,infer")
    parser.add_argument("--runs", default="", help="comma-separated MODEL/VARIANT/MODE items measured instead of "
                        "every --models x --modes x --variants combination (one run, one --json, fewer compiles)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=174)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--peak-tflops", type=float, default=800.0, help="dense bf16 peak of the GPU")
    parser.add_argument("--cnn-pair", action="store_true", help="also --cnn-model against its plain timm model")
    parser.add_argument("--cnn-model", default="SIFAR-R50")
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--e2e-model", default="SIFAR-B-12")
    parser.add_argument("--e2e-videos", type=int, default=640)
    parser.add_argument("--e2e-steps", type=int, default=80)
    parser.add_argument("--e2e-variant", default="",
                        help="the variant sifar-train runs end to end, measured in this run as SIFAR-B-12's training "
                             "step (default: the fastest one the commands run at their defaults)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--json", default=None, help="write every figure here")
    parser.add_argument("--profile", default="", help="comma-separated variants to profile (kernel table)")
    args = parser.parse_args()
    planned = planned_runs(args)
    choices = end_to_end_choices(args.e2e_variant, args.e2e_model, planned) if args.end_to_end else []
    if not torch.cuda.is_available():
        sys.exit("bench_train needs a CUDA GPU")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}", flush=True)
    results = [m for name, variant, mode in planned
               if (m := measure(name, variant, mode, args)) is not None]
    add_speedups(results)
    cnn = cnn_pair(args) if args.cnn_pair else None
    e2e = []
    if args.end_to_end:
        measured = [r for r in results if r.mode == "train" and r.model == args.e2e_model and r.variant in choices]
        if not measured:
            sys.exit(f"--end-to-end: no training step of {', '.join(choices)} was measured (out of memory?)")
        pure = max(measured, key=lambda r: r.clips_per_s)
        e2e = end_to_end(args, VARIANTS_BY_NAME[pure.variant], {args.e2e_model: pure.clips_per_s})
    print_table(results)
    if args.json:
        write_json(args.json, {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                               "batch": args.batch, "model_steps": [asdict(r) for r in results], "cnn_pair": cnn,
                               "end_to_end": e2e})


if __name__ == "__main__":
    main()
