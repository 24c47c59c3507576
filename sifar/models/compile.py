"""``torch.compile`` as sifar's trainer, evaluator and benchmarks run it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Programmatic Dependent Launch: each generated Triton kernel may start while the previous kernel drains and
# waits on the device for the data it reads, which hides the gap between kernels. Inductor emits it only on
# GPUs that have it (Hopper and later). SIFAR-B-12 on an H100, same runs (docs/PERFORMANCE.md): training
# 322.7 -> 325.9 clips/s; inference 364.3 -> 360.1, so evaluation compiles without it.
TRAINING_COMPILE_OPTIONS: dict[str, Any] = {"triton.enable_pdl": True}


def compile_model(model: nn.Module, training: bool) -> nn.Module:
    """``model`` compiled the way ``sifar-train`` (``training``) or ``sifar-eval`` runs it."""
    return torch.compile(model, options=TRAINING_COMPILE_OPTIONS if training else None)
