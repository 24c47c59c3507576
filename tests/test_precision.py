"""Which precision each setting means on each device, and the fp16 loss scaler."""

import pytest
import torch

from sifar.precision import (autocast_for, compute_dtype, describe_precision, grad_scaler, half_precision_on_cuda,
                            resolve_precision)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("device, precision, bf16_supported, expected", [
    (CUDA, "auto", True, "bf16"),
    (CUDA, "auto", False, "fp16"),
    (CPU, "auto", False, "fp32"),
    (CPU, "auto", True, "fp32"),
    (CUDA, "fp16", True, "fp16"),
    (CPU, "bf16", False, "bf16"),
    (CUDA, "fp32", True, "fp32"),
])
def test_auto_takes_bf16_where_the_gpu_has_it_else_fp16_and_fp32_on_cpu(device, precision, bf16_supported, expected):
    assert resolve_precision(device, precision, bf16_supported) == expected


@pytest.mark.parametrize("precision, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                              ("fp32", torch.float32), ("auto", torch.float32)])
def test_autocast_on_cpu_computes_in_the_precision_asked(precision, dtype):
    layer = torch.nn.Linear(4, 2)
    with autocast_for(CPU, precision):
        assert layer(torch.randn(3, 4)).dtype == dtype


def test_only_fp16_scales_the_loss():
    assert grad_scaler(CPU, "fp16").is_enabled()
    assert not grad_scaler(CPU, "bf16").is_enabled() and not grad_scaler(CPU, "auto").is_enabled()


def test_the_start_line_says_what_auto_chose_and_why():
    assert describe_precision(CPU, "auto") == "precision: fp32 (auto: not on a GPU)"
    assert describe_precision(CPU, "fp16") == "precision: fp16 autocast with a gradient scaler"


def test_compute_dtype_is_autocasts_when_it_is_on_and_the_tensors_otherwise():
    x = torch.randn(2, 3)
    assert compute_dtype(x) == torch.float32 and compute_dtype(x.half()) == torch.float16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(x) == torch.bfloat16
        assert compute_dtype(x.to("meta")) == torch.float32  # no autocast for meta tensors


def test_half_precision_on_cuda_needs_both_a_cuda_tensor_and_a_half_compute_dtype():
    x = torch.randn(2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(x) == torch.bfloat16 and not half_precision_on_cuda(x)  # half, but not on CUDA
    assert not half_precision_on_cuda(x.half())
    if torch.cuda.is_available():
        on_gpu = x.cuda()
        assert not half_precision_on_cuda(on_gpu) and half_precision_on_cuda(on_gpu.bfloat16())
        with torch.autocast("cuda", dtype=torch.float16):
            assert half_precision_on_cuda(on_gpu)
