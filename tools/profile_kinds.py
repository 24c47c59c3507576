"""Where a step's GPU time goes, by kind of kernel: sums the kernel list that ``tools.bench_train --profile``
saves beside its JSON (``profile-<label>.json``: every kernel's GPU ms per step, not only the 60 longest of its
table) into the kinds docs/PERFORMANCE.md discusses, one column per profile.

    python -m tools.profile_kinds docs/profile_training_session26.json docs/profile_inference_session26.json

Kernel names are Inductor's and the libraries' own (``triton_tem_fused_flex_attention_backward_...``,
``nvjet_sm90_...``); a kernel goes to the first kind whose pattern its name matches, so the order of
:data:`KINDS` matters (FlexAttention's backward before its forward, GEMMs before reductions).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import torch

KINDS: tuple[tuple[str, str], ...] = (
    ("FlexAttention backward", r"^triton_tem_fused.*flex_attention_backward"),
    ("FlexAttention forward", r"^triton_tem_fused.*flex_attention"),
    ("attention's other kernels (delta pass, bias gradient)", r"flex_attention"),
    ("GEMMs (cuBLAS / cuBLASLt, with their epilogues)", r"nvjet|xmma_gemm|gemm|cutlass|splitKreduce"),
    ("dq, dk, dv stacked into the qkv layout", r"permute_stack"),
    ("LayerNorm with the residual, rolls and window copies", r"layer_norm|roll"),
    ("library reductions (bias gradients: fc1's sum under --gelu-epilogue)", r"reduce_kernel"),
    ("GELU (its own passes)", r"gelu"),
    ("optimizer (fused AdamW)", r"multi_tensor_apply|Optimizer"),
    ("memsets", r"^Memset"),
)
OTHER = "the rest"


def device_kernels(averages, calls: int) -> list[dict]:
    """Every GPU kernel of a ``torch.profiler`` run's ``key_averages()`` over ``calls`` calls (steps) of what it
    profiled: name, launches and GPU ms a call ("Self CUDA time total" over ``calls``), the longest first; empty
    under Nsight Compute, which holds the GPU's profiling interface."""
    kernels = ({"name": e.key, "calls_per_step": e.count / calls,
                "gpu_ms_per_step": e.self_device_time_total / 1000 / calls}
               for e in averages if e.device_type == torch.autograd.DeviceType.CUDA and not e.is_user_annotation)
    return sorted(kernels, key=lambda kernel: -kernel["gpu_ms_per_step"])


def kind_of(name: str) -> str:
    """The first kind of :data:`KINDS` whose pattern ``name`` matches, else :data:`OTHER`."""
    return next((kind for kind, pattern in KINDS if re.search(pattern, name)), OTHER)


def sum_by_kind(kernels: list[dict]) -> dict[str, float]:
    """GPU ms per step of each kind (every kind, in :data:`KINDS`' order, then the rest)."""
    totals = {kind: 0.0 for kind, _ in KINDS} | {OTHER: 0.0}
    for kernel in kernels:
        totals[kind_of(kernel["name"])] += kernel["gpu_ms_per_step"]
    return totals


def read_kernels(path: Path) -> list[dict]:
    """A ``profile-<label>.json`` kernel list. click.BadParameter naming the file if it is not one."""
    try:
        kernels = json.loads(path.read_text())
        if not all({"name", "gpu_ms_per_step"} <= set(k) for k in kernels):
            raise ValueError("entries without name and gpu_ms_per_step")
    except (OSError, ValueError, TypeError) as error:
        raise click.BadParameter(f"{path}: not a kernel list of tools.bench_train --profile ({error})") from error
    return kernels


def kinds_table(columns: dict[str, dict[str, float]]) -> str:
    """A markdown table: a row per kind, ms per step and share of each profile's total in a column each."""
    names = list(columns)
    lines = ["| kernels | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    totals = {name: sum(column.values()) for name, column in columns.items()}
    for kind in next(iter(columns.values())):
        cells = [f"{columns[n][kind]:.1f} ({_share(columns[n][kind], totals[n])})" for n in names]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines.append("| **all kernels** | " + " | ".join(f"**{totals[n]:.1f}**" for n in names) + " |")
    return "\n".join(lines)


def _share(part: float, total: float) -> str:
    return f"{100 * part / total:.0f}%" if total > 0 else "-"  # a profile that caught no GPU kernel


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("profiles", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def main(profiles: tuple[Path, ...]) -> None:
    """Print GPU ms per step by kind of kernel, a column per PROFILES file (bench_train's profile-*.json)."""
    columns = {path.stem.removeprefix("profile-"): sum_by_kind(read_kernels(path)) for path in profiles}
    click.echo(kinds_table(columns))


if __name__ == "__main__":
    main()
