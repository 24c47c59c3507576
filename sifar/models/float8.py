"""FP8 training of a model's linear layers through torchao's float8 training (``--precision fp8``).

torchao does the work (casting activations, weights and gradients to float8 with dynamic per-tensor scales,
and the scaled matmuls); this module only chooses the layers: the linear layers whose sizes the float8
matmul takes (multiples of 16), except the classifier, whose few outputs gain nothing and whose logits are
kept in full precision, as torchao's own recipes keep the last layer. The weights stay in full precision,
so a checkpoint of an fp8 run is an ordinary one that evaluates and exports as any other.
torchao is an optional extra (``pip install 'sifar[fp8]'``).
"""

from __future__ import annotations

import torch
from torch import nn

FP8_MIN_CAPABILITY = (8, 9)  # float8 tensor cores: Ada and Hopper and later
FP8_RECIPES = ("tensorwise", "rowwise")  # torchao's scaling recipes (Float8LinearConfig.from_recipe_name)
# Said when an fp8 run's loss turns non-finite. On an H100 (torch 2.11, torchao 0.18) fp8 gave NaN gradients where
# bf16 did not: tests/test_gpu.py's fixed-batch loop, compiled in every run and eagerly in 10 of 14, born in
# FlexAttention's backward at the last stage, whose windows fill no whole tile (docs/PERFORMANCE.md, "fp8"); the
# cause is not found. The temporal study's eager fp8 runs (another model and schedule) stayed finite.
FP8_NON_FINITE_ADVICE = ("--precision fp8 is experimental and has given NaN gradients where bf16 did not, "
                         "compiled or not (docs/PERFORMANCE.md, fp8): resume with --precision bf16")


def float8_layers(model: nn.Module) -> list[str]:
    """Names of the linear layers that fp8 training converts."""
    classifier = _classifier(model)
    return [name for name, module in model.named_modules()
            if type(module) is nn.Linear and module is not classifier
            and module.in_features % 16 == 0 and module.out_features % 16 == 0]


def check_float8(device: torch.device) -> None:
    """ValueError, naming the reason, unless fp8 training can run on ``device``: torchao installed, and a GPU
    with float8 (any CPU runs it, slowly). The trainer asks before it reads any data."""
    _check_device(device)
    _torchao_float8()


def convert_to_float8(model: nn.Module, device: torch.device, recipe: str = "tensorwise") -> list[str]:
    """Swap :func:`float8_layers` for torchao's float8 linear layers in place (same parameters, same state dict
    keys); return their names. ``recipe``: torchao's scaling recipe, one of :data:`FP8_RECIPES` (tensorwise, its
    default: one scale per tensor; rowwise: one per row, for the NaN probe). Refused as :func:`check_float8`
    refuses, for an unknown recipe, or for a model without such layers."""
    _check_device(device)
    torchao_float8 = _torchao_float8()
    if recipe not in FP8_RECIPES:
        raise ValueError(f"unknown fp8 recipe {recipe!r}: one of {', '.join(FP8_RECIPES)}")
    chosen = set(float8_layers(model))
    if not chosen:
        raise ValueError(f"--precision fp8: {getattr(model, 'name', type(model).__name__)} has no linear layer "
                         "whose sizes are multiples of 16")
    torchao_float8.convert_to_float8_training(model, module_filter_fn=lambda _module, name: name in chosen,
                                              config=torchao_float8.Float8LinearConfig.from_recipe_name(recipe))
    return sorted(chosen)


def _torchao_float8():
    try:
        import torchao.float8
    except ImportError as err:
        raise ValueError("--precision fp8 needs torchao: pip install 'sifar[fp8]'") from err
    return torchao.float8


def _classifier(model: nn.Module) -> nn.Module | None:
    backbone = getattr(model, "backbone", model)
    get_classifier = getattr(backbone, "get_classifier", None)
    return get_classifier() if callable(get_classifier) else None


def _check_device(device: torch.device) -> None:
    if device.type != "cuda":
        return  # torch runs float8 matmuls on the CPU too (slowly): what the tests train with
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        raise ValueError(f"--precision fp8 needs a GPU of compute capability {FP8_MIN_CAPABILITY[0]}."
                         f"{FP8_MIN_CAPABILITY[1]} or newer (H100, L40, RTX 4090); "
                         f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}")
