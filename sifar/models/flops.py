"""FLOPs and parameters, counted on the meta device (no memory, no arithmetic) with torch's FLOP counter.

Reported as GFLOPs in the paper's convention: multiply-adds (torch counts a multiply-add as 2 FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from sifar.models.factory import create_model


@dataclass(frozen=True)
class ModelCost:
    gflops: float  # multiply-adds per clip, in billions
    params_m: float  # parameters, in millions


def count_cost(name: str, num_classes: int = 400, **kwargs: Any) -> ModelCost:
    """GFLOPs (multiply-adds) of one clip's forward pass and parameter count, without allocating weights."""
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **kwargs).eval()
        clip = torch.empty(1, model.num_frames, 3, model.frame_size, model.frame_size)
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(clip)
    return ModelCost(gflops=counter.get_total_flops() / 2 / 1e9, params_m=params / 1e6)
