"""Numeric precision per device: bf16 autocast on GPUs that have it, else fp16 with a gradient scaler; fp32 on
CPU by default. Training can also run its linear layers in fp8 (:mod:`sifar.models.float8`), the rest under
bf16 autocast."""

from __future__ import annotations

import contextlib
import functools
from typing import Literal

import torch

Precision = Literal["auto", "bf16", "fp16", "fp32"]
TrainPrecision = Literal["auto", "bf16", "fp16", "fp32", "fp8"]
ResolvedPrecision = Literal["bf16", "fp16", "fp32", "fp8"]
PRECISION_HELP = ("auto: bf16 autocast on GPUs that support it, else fp16 (training scales the loss); fp32 on CPU. "
                  "fp16: autocast with a gradient scaler in training.")
TRAIN_PRECISION_HELP = PRECISION_HELP + (" fp8: linear layers in float8 through torchao (pip install 'sifar[fp8]'; "
                                         "GPUs of compute capability 8.9+), the rest under bf16 autocast.")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.bfloat16}  # fp8: what is not a linear layer
HALF_DTYPES = (torch.bfloat16, torch.float16)
AUTOCAST_DEVICES = ("cuda", "cpu")  # torch.amp.is_autocast_available would break a compiled graph


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype an autocast op such as a linear layer computes ``x`` in: autocast's on ``x``'s device when it is on
    there, else ``x``'s own."""
    device = x.device.type
    if device in AUTOCAST_DEVICES and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def half_precision_on_cuda(x: torch.Tensor) -> bool:
    """Whether an autocast op such as a linear layer computes ``x`` in bf16 or fp16 on a CUDA device: where the
    GEMMs with cuBLASLt's fused epilogues may stand in for torch's."""
    return x.is_cuda and compute_dtype(x) in HALF_DTYPES


def resolve_precision(device: torch.device, precision: str, bf16_supported: bool | None = None) -> ResolvedPrecision:
    """What ``precision`` means on ``device``: "auto" is bf16 on CUDA where ``bf16_supported`` (default: asked
    of the current GPU), else fp16 there, and fp32 elsewhere; the others are themselves."""
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if device.type != "cuda":
        return "fp32"
    if bf16_supported is None:
        bf16_supported = _gpu_has_bf16(device.index if device.index is not None else torch.cuda.current_device())
    return "bf16" if bf16_supported else "fp16"


@functools.cache
def _gpu_has_bf16(index: int) -> bool:
    """Asked of the GPU once: autocast resolves ``auto`` at every training step and evaluation batch."""
    with torch.cuda.device(index):
        return torch.cuda.is_bf16_supported()


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` (resolved by :func:`resolve_precision`) on ``device``; nothing for fp32."""
    dtype = _DTYPES.get(resolve_precision(device, precision))
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The loss scaler of a training step: active for fp16 (whose gradients underflow unscaled), a pass-through
    otherwise, so the step is written once."""
    return torch.amp.GradScaler(device.type, enabled=resolve_precision(device, precision) == "fp16")


def describe_precision(device: torch.device, precision: str) -> str:
    """One line saying what ``precision`` became on ``device`` and why, for the start of a run."""
    resolved = resolve_precision(device, precision)
    why = {"bf16": "bf16 autocast", "fp16": "fp16 autocast with a gradient scaler", "fp32": "fp32",
           "fp8": "fp8 linear layers (torchao float8, dynamic per-tensor scales), the rest under bf16 autocast",
           }[resolved]
    if precision == "auto":
        reason = {"bf16": "this GPU supports bf16", "fp16": "this GPU has no bf16", "fp32": "not on a GPU"}[resolved]
        return f"precision: {why} (auto: {reason})"
    return f"precision: {why}"


def allow_tf32() -> None:
    """Let fp32 matmuls and convolutions use TF32 tensor cores on GPUs that have them (Ampere and later).

    The official SIFAR runs and timm's trainer do the same; fp32 without it is several times slower there.
    """
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
