"""tools/bench_gemms.py: the GEMM shapes it reads from a model on the CPU, its refusal without a GPU, and (on a
GPU with nvmath-python) both ways of a GEMM giving the same product."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from sifar.models import create_model
from tools.bench_gemms import GemmShape, inference_gemms, main, time_gemm


def test_every_linear_layer_is_one_call_of_a_shape_with_its_epilogue():
    shapes = inference_gemms("SIFAR-N-6", super_images=3)
    linears = [m for m in create_model("SIFAR-N-6", num_classes=400).modules() if isinstance(m, nn.Linear)]
    assert sum(shape.calls for shape in shapes) == len(linears)
    by_layers = {shape.layers: shape for shape in shapes}
    stage0_fc1 = by_layers["backbone.layers.0.blocks.*.mlp.fc1"]
    assert (stage0_fc1.in_features, stage0_fc1.out_features, stage0_fc1.epilogue) == (32, 128, "GELU_BIAS")
    assert by_layers["backbone.layers.0.blocks.*.mlp.fc2"].epilogue == "BIAS"
    assert by_layers["backbone.layers.1.downsample.reduction"].epilogue == "DEFAULT"  # patch merging: no bias
    assert by_layers["backbone.layers.2.blocks.*.attn.qkv"].calls == 2  # SIFAR-N-6's third stage has two blocks
    assert by_layers["backbone.head.fc"].rows == 3  # one row a super image


def test_rows_scale_with_the_super_images_of_a_step():
    one, six = inference_gemms("SIFAR-N-6", 1), inference_gemms("SIFAR-N-6", 6)
    assert [shape.rows * 6 for shape in one] == [shape.rows for shape in six]
    shape = GemmShape("fc", rows=10, in_features=4, out_features=8, bias=True, gelu=False, calls=1)
    assert shape.flops == 640 and shape.epilogue == "BIAS"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_a_gpu_it_says_so_before_any_work():
    result = CliRunner().invoke(main, ["--model", "SIFAR-N-6"])
    assert result.exit_code == 2 and "CUDA GPU" in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="times cuBLAS on a CUDA GPU")
@pytest.mark.parametrize("bias, gelu", [(True, False), (True, True), (False, False)])  # qkv..., fc1, patch merging
def test_torch_and_nvmath_compute_the_same_product(bias, gelu):
    pytest.importorskip("nvmath", reason="the autotuned way calls cuBLASLt through nvmath-python")
    shape = GemmShape("fc", rows=4096, in_features=256, out_features=1024, bias=bias, gelu=gelu, calls=1)
    timed = time_gemm(shape, iterations=2)
    assert timed["relative_difference"] < 1e-2 and min(timed["torch_us"], timed["nvmath_us"], timed["product_us"]) > 0
