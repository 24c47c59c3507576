"""Numeric precision per device: bf16 autocast on GPUs by default, fp32 on CPU."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["auto", "bf16", "fp32"]
PRECISION_HELP = "auto: bf16 autocast on GPU, fp32 on CPU."


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``precision`` is "auto" (bf16 on CUDA, fp32 elsewhere), "bf16" or "fp32"."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()


def allow_tf32() -> None:
    """Let fp32 matmuls and convolutions use TF32 tensor cores on GPUs that have them (Ampere and later).

    The official SIFAR runs and timm's trainer do the same; fp32 without it is several times slower there.
    """
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
