"""Candidate (issue 30, session 29): inference's wide-output GEMMs, each Swin block's qkv and its MLP's fc1 with the
GELU, through the cuBLASLt algorithm nvmath-python's autotuner times fastest for their layout, instead of cuBLAS's
heuristic pick. Not wired into the package: ``bench_train``'s ``flex-bf16-compile-autotuned-linears`` measures it
(and ``tools/bench_gemms.py`` the GEMMs alone) before it may join.

Why: in session 27's inference profile the GEMMs that write 3-4 times wider outputs than they read ran at 470-530
TFLOP/s against ~705 for the others (docs/PERFORMANCE.md, "Session 29"), as if their stores did not overlap their
products. The same epilogues as the model's (bias; bias and tanh GELU, as ``sifar.models.mlp`` runs fc1), so only
the algorithm changes. Half-precision inference on CUDA only; everything else keeps the parent layers' paths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn

from sifar.models.gelu_epilogue_training import planned_matmul
from sifar.models.mlp import GeluEpilogueMlp, rows_in_compute_dtype, set_gelu_epilogue
from sifar.precision import half_precision_on_cuda


def epilog_name(gelu: bool, bias: bool) -> str:
    """nvmath's ``MatmulEpilog`` name for a GEMM with a tanh GELU and a bias, or not: GELU_BIAS, BIAS, GELU, DEFAULT."""
    return "_".join(["GELU"] * gelu + ["BIAS"] * bias) or "DEFAULT"


@torch.library.custom_op("sifar_tools::autotuned_linear", mutates_args=())
def autotuned_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    """(rows, out) ``x @ weight.T (+ bias)``, tanh-GELU'd with ``gelu``: on CUDA one cuBLASLt GEMM with the
    matching epilogue, planned and autotuned for this layout (the bias added along the (out, rows) result's rows,
    read back transposed)."""
    if not x.is_cuda:
        out = F.linear(x, weight, bias)
        return F.gelu(out, approximate="tanh") if gelu else out
    epilog = epilog_name(gelu, bias is not None)
    return planned_matmul(weight, x.t(), epilog, {"bias": bias} if bias is not None else {})[0].t()


@autotuned_linear.register_fake
def _(x, weight, bias, gelu):
    return x.new_empty((x.shape[0], weight.shape[0]))


def _inference_in_half_precision(module: nn.Module, x: torch.Tensor) -> bool:
    return not module.training and not torch.is_grad_enabled() and half_precision_on_cuda(x)


class AutotunedLinear(nn.Linear):
    """``nn.Linear`` (same parameters) whose half-precision inference on CUDA runs :func:`autotuned_linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _inference_in_half_precision(self, x):
            return super().forward(x)
        rows, dtype = rows_in_compute_dtype(x)
        bias = self.bias.to(dtype) if self.bias is not None else None
        out = autotuned_linear(rows, self.weight.to(dtype), bias, False)
        return out.view(*x.shape[:-1], self.out_features)


class AutotunedGeluMlp(GeluEpilogueMlp):
    """:class:`sifar.models.mlp.GeluEpilogueMlp` whose fc1 and GELU run :func:`autotuned_linear` where its parent
    would run ``torch._addmm_activation``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.epilogue_applies(x):
            return super().forward(x)
        rows, dtype = rows_in_compute_dtype(x)
        hidden = autotuned_linear(rows, self.fc1.weight.to(dtype), self.fc1.bias.to(dtype), True)
        hidden = hidden.view(*x.shape[:-1], self.fc1.out_features)
        return self.drop2(self.fc2(self.norm(self.drop1(hidden))))


def autotuned_copy(linear: nn.Linear) -> AutotunedLinear:
    """An :class:`AutotunedLinear` holding ``linear``'s own parameters, in its training mode."""
    with torch.device("meta"):
        replacement = AutotunedLinear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    replacement.weight, replacement.bias = linear.weight, linear.bias
    return replacement.train(linear.training)


def use_autotuned_linears(model: nn.Module) -> int:
    """Give every Swin block of ``model`` an autotuned qkv and an :class:`AutotunedGeluMlp` (with its GELU
    epilogue on); the number of blocks."""
    blocks = [m for m in model.modules() if isinstance(m, SwinTransformerBlock)]
    for block in blocks:
        block.attn.qkv = autotuned_copy(block.attn.qkv)
    set_gelu_epilogue(model, mlp_class=AutotunedGeluMlp)
    return len(blocks)
