"""Swin's MLP with its GELU in the first linear layer's GEMM epilogue, for half-precision inference on CUDA.

timm's ``Mlp`` runs ``fc1`` as a cuBLAS GEMM (bias added in its epilogue), then GELU as a pass of its own that
reads and writes the (tokens, 4C) hidden tensor once more. Inductor calls cuBLAS as an opaque kernel, so it
cannot fuse the GELU in (only its own Triton GEMMs fuse epilogues, under max-autotune). cuBLASLt can apply
the GELU in the GEMM's epilogue; torch reaches it through ``torch._addmm_activation``, which Inductor calls as
it is. No library wraps this for a model's MLP, hence this small layer.

That op has no backward, and its GELU on CUDA is the tanh approximation, at most 4.7e-4 from the exact GELU.
bf16 and fp16 round a unit activation by 2e-3 to 4e-3 already, so the fused path runs only where ``fc1``
computes in one of them, without gradients, on CUDA; fp32, training and the CPU keep the exact two passes.
"""

from __future__ import annotations

import torch
from timm.layers import Mlp
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn

from sifar.precision import compute_dtype, half_precision_on_cuda

MLP_LAYERS = ("fc1", "act", "drop1", "norm", "fc2", "drop2")


def rows_in_compute_dtype(x: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    """(``x``'s (tokens, C) rows, any leading dimensions flattened, in :func:`compute_dtype`; that dtype): what the
    fused GEMMs of the MLP's epilogue paths take, their weights cast to the same dtype."""
    dtype = compute_dtype(x)
    return x.reshape(-1, x.shape[-1]).to(dtype), dtype


def linear_gelu(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``gelu(linear(x))`` as one GEMM with GELU in its epilogue (tanh GELU on CUDA, exact on the CPU), in
    :func:`compute_dtype`; any number of leading dimensions."""
    rows, dtype = rows_in_compute_dtype(x)
    out = torch._addmm_activation(linear.bias.to(dtype), rows, linear.weight.to(dtype).t(), use_gelu=True)
    return out.view(*x.shape[:-1], linear.out_features)


class GeluEpilogueMlp(Mlp):
    """timm's ``Mlp`` (same parameters, same checkpoints) that runs ``fc1`` and GELU as one GEMM in half-precision
    inference on CUDA (see the module docstring); ``gelu_epilogue = False`` keeps timm's path everywhere."""

    gelu_epilogue: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.epilogue_applies(x):
            return super().forward(x)
        return self.drop2(self.fc2(self.norm(self.drop1(linear_gelu(x, self.fc1)))))

    def epilogue_applies(self, x: torch.Tensor) -> bool:
        """Whether this call takes the fused GEMM: inference, and :meth:`fusable`."""
        return not self.training and not torch.is_grad_enabled() and self.fusable(x)

    def fusable(self, x: torch.Tensor) -> bool:
        """Whether cuBLASLt's GELU epilogue may stand in for ``fc1`` and GELU on ``x``: enabled, on CUDA, in half
        precision. A subclass of ``nn.Linear`` in ``fc1`` (torchao's ``Float8Linear`` in an fp8 run's validation)
        keeps its own forward."""
        return self.gelu_epilogue and type(self.fc1) is nn.Linear and half_precision_on_cuda(x)


def gelu_epilogue_mlp(mlp: Mlp, mlp_class: type[GeluEpilogueMlp] = GeluEpilogueMlp) -> GeluEpilogueMlp:
    """A ``mlp_class`` made of ``mlp``'s own layers (the same modules and parameters), in its training mode."""
    with torch.device("meta"):  # its own layers are replaced at once
        replacement = mlp_class(mlp.fc1.in_features, mlp.fc1.out_features, mlp.fc2.out_features)
    for name in MLP_LAYERS:
        setattr(replacement, name, getattr(mlp, name))
    return replacement.train(mlp.training)


def set_gelu_epilogue(model: nn.Module, enabled: bool = True,
                      mlp_class: type[GeluEpilogueMlp] = GeluEpilogueMlp) -> int:
    """Give every Swin block of ``model`` whose MLP is timm's exact-GELU ``Mlp`` a ``mlp_class`` (unless it has
    one already), with its epilogue ``enabled`` or not; the number of such MLPs. ``mlp_class``: a subclass adds
    paths of its own (``sifar.models.gelu_epilogue_training``'s for training)."""
    mlps = 0
    for block in model.modules():
        if isinstance(block, SwinTransformerBlock) and _plain_gelu_mlp(block.mlp):
            if not isinstance(block.mlp, mlp_class):
                block.mlp = gelu_epilogue_mlp(block.mlp, mlp_class)
            block.mlp.gelu_epilogue = enabled
            mlps += 1
    return mlps


def _plain_gelu_mlp(mlp: nn.Module) -> bool:
    return (isinstance(mlp, Mlp) and isinstance(mlp.fc1, nn.Linear) and mlp.fc1.bias is not None
            and type(mlp.act) is nn.GELU and mlp.act.approximate == "none" and isinstance(mlp.norm, nn.Identity))
