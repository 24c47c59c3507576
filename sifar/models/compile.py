"""``torch.compile`` as sifar's trainer, evaluator and benchmarks run it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Programmatic Dependent Launch: each generated Triton kernel may start while the previous kernel drains and
# waits on the device for the data it reads, instead of the launch gap between kernels. Inductor emits it
# only for GPUs that have it (Hopper and later); elsewhere this is a no-op. SIFAR-B-12 training on an H100:
# +1% (docs/PERFORMANCE.md).
COMPILE_OPTIONS: dict[str, Any] = {"triton.enable_pdl": True}


def compile_model(model: nn.Module) -> nn.Module:
    """``model`` compiled with :data:`COMPILE_OPTIONS`."""
    return torch.compile(model, options=COMPILE_OPTIONS)
