"""Training's Swin MLP with its GELU and the GELU's gradient in cuBLASLt's GEMM epilogues, through nvmath-python
(``sifar-train --gelu-epilogue``, an option for bf16 and fp16 training on CUDA).

Why: in SIFAR-B-12's compiled training step the GELU forward and backward are passes of their own over the
(tokens, 4C) hidden tensor, 10.8 of 89.2 ms a step, bound by memory (session 24's profile, docs/PERFORMANCE.md).
cuBLASLt does them in the GEMMs' epilogues, as Transformer Engine's fused MLP does:

- ``GELU_AUX_BIAS`` in fc1's forward adds the bias, writes gelu(pre) and, as its aux output, pre itself;
- ``DGELU`` in fc2's input-gradient GEMM multiplies (dY W2) by gelu'(pre) read from that aux output; fc1's bias
  gradient is one reduction over the result. cuBLASLt's ``DGELU_BGRAD`` would do that reduction in the epilogue
  too, but every algorithm it offers at these shapes runs it as a kernel of its own: 1.40 ms against DGELU's
  0.34 ms plus the sum at stage 0's width, and 313 against 369 clips/s in the whole step (session 25).

PyTorch reaches cuBLASLt's GELU epilogue only through ``torch._addmm_activation``, which has no derivative
(:mod:`sifar.models.mlp` uses it for inference); nvmath-python, NVIDIA's Python API over cuBLASLt, takes these
epilogs with torch tensors, hence this small layer over it (an optional extra: ``pip install 'sifar[gelu]'``).
The compiled step keeps pre and gelu(pre) for the backward already (AOTAutograd's min-cut partition saves both
for timm's ``Mlp``), so keeping them here adds no memory. cuBLASLt's GELU is the tanh approximation (at most
4.7e-4 from the exact one, below bf16's rounding): a run with this option trains with it.

Measured on an H100 (session 25, ``tools/bench_train.py``): SIFAR-B-12 369.4 against 354.8 clips/s (1.04x),
SIFAR-B-14-16f 142.8 against 136.3 (1.05x), the same peak memory.

Layouts: cuBLASLt adds a bias along the result's rows and wants these epilogues' results in column order, so
fc1 runs transposed: (4C, T) = W1 (4C, C) @ x^T (C, T), whose column-ordered result is the row-major (T, 4C)
hidden tensor; pre stays in that (4C, T) column-ordered layout between the forward and the backward, and the
backward runs (4C, T) = W2^T (4C, C) @ dY^T (C, T) the same way. On the CPU the same arithmetic runs in torch, in
the same layouts: that is what the CPU tests check.

Each GEMM is planned and autotuned once per layout and reused (nvmath's stateful ``Matmul``): its function form
builds and frees a cuBLASLt descriptor and runs the heuristic on every call, 619 against 103 µs of host time a
call (session 25), for each of a SIFAR-B step's 48 such GEMMs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sifar.models.factory import resolve_config
from sifar.models.mlp import GeluEpilogueMlp, rows_in_compute_dtype, set_gelu_epilogue
from sifar.precision import resolve_precision

AUTOTUNE_ITERATIONS = 5
AUX_ROWS_MULTIPLE = 8  # cuBLASLt pads the GELU aux output's rows to a multiple of 8 (nvmath's gelu_aux_mm_shape)
INSTALL_HINT = "pip install 'sifar[gelu]'"
SWIN_MLP_FAMILIES = ("swin", "timm")  # model families that may hold Swin MLPs (a timm Swin does)

_PLANS: dict[tuple, object] = {}  # planned nvmath Matmul objects by operand layout and epilog


def check_training_gelu_epilogue(device: torch.device, precision: str, model: str) -> None:
    """ValueError, naming the reason, unless ``--gelu-epilogue`` can run: a Swin ``model`` (by its family; a
    ``timm:`` model is checked once built), on CUDA, in bf16 or fp16 (``precision`` as the run resolves it), with
    nvmath-python installed. The trainer asks before it reads any data."""
    family = resolve_config(model).family
    if family not in SWIN_MLP_FAMILIES:
        raise ValueError(f"--gelu-epilogue: {model} is a {family} model, without Swin MLPs")
    if device.type != "cuda":
        raise ValueError(f"--gelu-epilogue runs cuBLASLt on a CUDA GPU; this run's device is {device}")
    resolved = resolve_precision(device, precision)
    if resolved not in ("bf16", "fp16"):
        raise ValueError(f"--gelu-epilogue needs --precision bf16 or fp16 (this run: {resolved})")
    _nvmath()


def _nvmath():
    try:
        import nvmath.linalg.advanced as advanced
    except ImportError as error:
        raise ValueError(f"--gelu-epilogue calls cuBLASLt through nvmath-python: {INSTALL_HINT}") from error
    return advanced


def _layout(tensor: torch.Tensor) -> tuple:
    return tensor.device, tensor.dtype, tuple(tensor.shape), tensor.stride()


def planned_matmul(a: torch.Tensor, b: torch.Tensor, epilog: str,
                   epilog_inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``a @ b`` with the named ``MatmulEpilog`` on the current stream: (result, the epilog's outputs), by a
    ``Matmul`` planned and autotuned the first time these layouts come and reset to these operands afterwards;
    it lets go of them once the GEMM is queued, so it keeps no activation alive."""
    advanced = _nvmath()
    key = (epilog, _layout(a), _layout(b), tuple((name, _layout(t)) for name, t in sorted(epilog_inputs.items())))
    mm = _PLANS.get(key)
    if mm is None:
        mm = _PLANS[key] = advanced.Matmul(a, b)
        mm.plan(epilog=getattr(advanced.MatmulEpilog, epilog), epilog_inputs=epilog_inputs)
        mm.autotune(iterations=AUTOTUNE_ITERATIONS)
    else:
        mm.reset_operands_unchecked(a=a, b=b, epilog_inputs=epilog_inputs)
    executed = mm.execute()
    mm.release_operands()
    return executed if isinstance(executed, tuple) else (executed, {})


def fc1_gelu_reference(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden (T, 4C) row-major, pre (4C, T) column-ordered) of tanh-GELU(x W1^T + b1), in torch."""
    pre = torch.addmm(b1, x, w1.t())
    return F.gelu(pre, approximate="tanh"), pre.t()


def dgelu_reference(grad_y: torch.Tensor, w2: torch.Tensor, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of pre (T, 4C), fc1's bias gradient (4C,)) from fc2's output gradient, in torch."""
    grad_pre = torch.ops.aten.gelu_backward(grad_y @ w2, pre.t(), approximate="tanh")
    return grad_pre, grad_pre.sum(0)


@torch.library.custom_op("sifar::fc1_gelu_aux", mutates_args=())
def fc1_gelu(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fc1_gelu_reference` by one cuBLASLt GEMM with ``GELU_AUX_BIAS`` on CUDA."""
    if not x.is_cuda:
        return fc1_gelu_reference(x, w1, b1)
    hidden_t, aux = planned_matmul(w1, x.t(), "GELU_AUX_BIAS", {"bias": b1})
    return hidden_t.t(), aux["gelu_aux"]


@fc1_gelu.register_fake
def _(x, w1, b1):
    rows, features = x.shape[0], w1.shape[0]
    return (x.new_empty((rows, features)),
            x.new_empty_strided((features, rows), (1, features)))


@torch.library.custom_op("sifar::dgelu", mutates_args=())
def dgelu(grad_y: torch.Tensor, w2: torch.Tensor, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dgelu_reference` by one cuBLASLt GEMM with ``DGELU`` on CUDA and a sum for the bias gradient."""
    grad_y = grad_y.contiguous()
    if not grad_y.is_cuda:
        return dgelu_reference(grad_y, w2, pre)
    grad_pre_t, _ = planned_matmul(w2.t(), grad_y.t(), "DGELU", {"gelu_aux": pre})
    return grad_pre_t.t(), grad_pre_t.sum(1)


@dgelu.register_fake
def _(grad_y, w2, pre):
    return grad_y.new_empty((grad_y.shape[0], w2.shape[1])), grad_y.new_empty((w2.shape[1],))


@torch.library.custom_op("sifar::mlp_gelu_epilogue", mutates_args=())
def _mlp_forward(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                 b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, hidden, pre): fc2(gelu(fc1(x))) of (T, C) rows, and what its backward reads."""
    hidden, pre = fc1_gelu(x, w1, b1)
    return F.linear(hidden, w2, b2), hidden, pre


@_mlp_forward.register_fake
def _(x, w1, b1, w2, b2):
    hidden, pre = fc1_gelu(x, w1, b1)  # its fake: the layouts above
    return x.new_empty((x.shape[0], w2.shape[0])), hidden, pre


def _mlp_setup_context(ctx, inputs: tuple, output: tuple) -> None:
    x, w1, _b1, w2, _b2 = inputs
    _y, hidden, pre = output
    ctx.save_for_backward(x, w1, w2, hidden, pre)


def _mlp_gradients(ctx, grad_y: torch.Tensor, _grad_hidden, _grad_pre) -> tuple:
    x, w1, w2, hidden, pre = ctx.saved_tensors
    grad_pre, grad_b1 = dgelu(grad_y, w2, pre)
    return grad_pre @ w1, grad_pre.t() @ x, grad_b1, grad_y.t() @ hidden, grad_y.sum(0)


_mlp_forward.register_autograd(_mlp_gradients, setup_context=_mlp_setup_context)


def mlp_gelu_epilogue(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                      b2: torch.Tensor) -> torch.Tensor:
    """fc2(tanh-GELU(fc1(x))) of (T, C) rows with weights and biases as ``nn.Linear`` holds them, the GELU and its
    gradient in the GEMMs' epilogues on CUDA; differentiable in every input."""
    if w1.shape[0] % AUX_ROWS_MULTIPLE:
        raise ValueError(f"the GELU epilogue needs a hidden width that is a multiple of {AUX_ROWS_MULTIPLE}, "
                         f"not {w1.shape[0]}")
    return _mlp_forward(x, w1, b1, w2, b2)[0]


class TrainingGeluEpilogueMlp(GeluEpilogueMlp):
    """:class:`sifar.models.mlp.GeluEpilogueMlp` (same parameters, same checkpoints) whose training steps in half
    precision on CUDA run :func:`mlp_gelu_epilogue`; inference keeps its parent's path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training_epilogue_applies(x):
            return super().forward(x)
        rows, dtype = rows_in_compute_dtype(x)
        fc1, fc2 = self.fc1, self.fc2
        out = mlp_gelu_epilogue(rows, fc1.weight.to(dtype), fc1.bias.to(dtype), fc2.weight.to(dtype),
                                fc2.bias.to(dtype))
        return self.drop2(out.view(*x.shape[:-1], fc2.out_features))

    def training_epilogue_applies(self, x: torch.Tensor) -> bool:
        return (self.training and torch.is_grad_enabled() and self.fusable(x) and type(self.fc2) is nn.Linear
                and self.drop1.p == 0 and self.fc1.out_features % AUX_ROWS_MULTIPLE == 0)


def use_training_gelu_epilogue(model: nn.Module) -> int:
    """Give every Swin block of ``model`` whose MLP is timm's exact-GELU ``Mlp`` a :class:`TrainingGeluEpilogueMlp`
    holding the same layers (:func:`sifar.models.mlp.set_gelu_epilogue`, inference's epilogue on); the number.
    ValueError for a model without such MLPs (a CNN)."""
    mlps = set_gelu_epilogue(model, mlp_class=TrainingGeluEpilogueMlp)
    if not mlps:
        raise ValueError(f"--gelu-epilogue: {getattr(model, 'name', type(model).__name__)} has no Swin MLP")
    return mlps
