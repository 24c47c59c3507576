"""The fused residual adds and LayerNorms of Swin inference (sifar.models.fused_norm): its row tables, its torch path
against timm's stages on the CPU, when it applies, and its Triton kernels compiled for an H100 (no GPU needed) and
run under Triton's interpreter (in a subprocess: TRITON_INTERPRET must be set before Triton kernels are defined, and
would turn every other kernel of the session into an interpreted one). The interpreter rounds to bf16 otherwise than
the GPU does (one unit in the last place, where the GPU rounds to nearest even), so it checks fp32 and fp16, which
take the same casts; bf16 and the compiled GPU path are checked in tests/test_gpu.py."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.models.swin_transformer import SwinTransformerStage, window_partition

from sifar.models import create_model
from sifar.models.fused_norm import (add_layer_norm, add_layer_norm_reference, add_window_tables, fused_norm_applies,
                                     fused_stage_forward, window_rows)
from sifar.models.swin import set_fused_norm

ROOT = Path(__file__).resolve().parents[1]


@settings(max_examples=40, deadline=None)
@given(windows=st.tuples(st.integers(1, 4), st.integers(1, 4)), window=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       shift_fraction=st.tuples(st.floats(0, 0.99), st.floats(0, 0.99)))
def test_the_table_puts_each_token_where_roll_and_partition_put_it(windows, window, shift_fraction):
    height, width = windows[0] * window[0], windows[1] * window[1]
    shift = (int(shift_fraction[0] * window[0]), int(shift_fraction[1] * window[1]))
    image = torch.randn(1, height, width, 3)
    rows = window_rows(height, width, window, shift)
    assert sorted(rows.tolist()) == list(range(height * width))  # a permutation: every row written once
    placed = torch.empty(height * width, 3)
    placed[rows.long()] = image.view(-1, 3)
    rolled = torch.roll(image, shifts=(-shift[0], -shift[1]), dims=(1, 2)) if any(shift) else image
    torch.testing.assert_close(placed, window_partition(rolled, window).reshape(-1, 3))


@pytest.mark.parametrize("name", ["SIFAR-N-6", "SIFAR-M-12"])  # windows inside frames; windows across frames
def test_each_stage_computes_what_timms_stage_does(name):
    torch.manual_seed(0)
    model = create_model(name, 10, attention="sdpa", drop_path_rate=0.1).eval()
    stages = model.backbone.layers
    x = torch.randn(2, *stages[0].blocks[0].input_resolution, stages[0].dim)
    with torch.no_grad():
        for stage in stages:
            expected = stage(x)
            torch.testing.assert_close(fused_stage_forward(stage, x), expected, atol=1e-5, rtol=1e-4)
            x = expected


def test_each_block_is_built_with_one_table_outside_the_checkpoint_and_a_map_needing_padding_none():
    model = create_model("SIFAR-N-6", 10)
    blocks = [block for stage in model.backbone.layers for block in stage.blocks]
    tables = [block.window_rows for block in blocks]
    assert all(table.dtype == torch.int32 for table in tables)
    assert not any("window_rows" in key for key in model.state_dict())
    set_fused_norm(model, "training")
    assert all(block.window_rows is table for block, table in zip(blocks, tables))  # made once
    stage = SwinTransformerStage(dim=16, out_dim=16, input_resolution=(10, 10), depth=1, downsample=False,
                                 num_heads=2, window_size=4)
    add_window_tables([stage])
    assert not hasattr(stage.blocks[0], "window_rows")


def test_it_is_on_for_inference_as_built_and_never_applies_off_cuda():
    """(Where it applies on CUDA: tests/test_gpu.py.)"""
    model = create_model("SIFAR-N-6", 10, attention="sdpa").eval()
    assert model.backbone.fused_norm == "inference"
    with torch.no_grad():
        assert not fused_norm_applies(model.backbone.layers[0], torch.empty(1, 16, 16, 32, dtype=torch.bfloat16))


def test_off_cuda_the_model_takes_timms_path_and_gives_its_logits():
    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", 10, attention="sdpa").eval()
    set_fused_norm(model, "off")
    fused = copy.deepcopy(model)
    set_fused_norm(fused, "training")
    frames = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(frames), model(frames), atol=0, rtol=0)


def test_the_op_on_the_cpu_is_the_reference():
    torch.manual_seed(0)
    x, y = torch.randn(32, 24), torch.randn(32, 24)
    table = window_rows(4, 4, (2, 2), (1, 1))
    weight, bias = torch.randn(24), torch.randn(24)
    total, normed = add_layer_norm(x, y, None, table, weight, bias, 1e-5, table)
    expected = add_layer_norm_reference(x, y, None, table, weight, bias, 1e-5, table)
    torch.testing.assert_close(total, expected[0])
    torch.testing.assert_close(normed, expected[1])
    assert add_layer_norm(x, None, None, None, weight, bias, 1e-5, table)[0].numel() == 0


@pytest.mark.parametrize("name", ["SIFAR-N-6", "SIFAR-M-12"])
def test_in_training_each_stage_draws_the_same_drop_paths_and_gives_the_same_gradients(name):
    """The fused stage in training (the candidate behind ``set_fused_norm(model, "training")``), through the op's
    torch path and its registered gradient: timm's outputs under the same seed, and its gradients."""
    torch.manual_seed(0)
    model = create_model(name, 10, attention="sdpa", drop_path_rate=0.3).train()
    stages = model.backbone.layers
    x = torch.randn(3, *stages[0].blocks[0].input_resolution, stages[0].dim)
    for stage in stages:
        outputs, gradients = [], []
        for forward in (stage, lambda x_: fused_stage_forward(stage, x_)):
            x_ = x.clone().requires_grad_()
            torch.manual_seed(5)
            outputs.append(forward(x_))
            torch.manual_seed(6)
            gradients.append(torch.autograd.grad(outputs[-1], [x_, *stage.parameters()],
                                                 torch.randn_like(outputs[-1])))
        torch.testing.assert_close(outputs[1], outputs[0], atol=0, rtol=0)
        for got, expected in zip(*gradients[::-1]):
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3)
        x = outputs[0].detach()


def test_the_stage_compiles_whole_with_its_gradient():
    """The op and its registered gradient trace into one graph (fullgraph) and through AOTAutograd, as sifar-train's
    compiled step needs: outputs and gradients as timm's stage gives them (the op's torch path on the CPU)."""
    torch.manual_seed(0)
    stage = create_model("SIFAR-N-6", 10, attention="sdpa").train().backbone.layers[0]
    x = torch.randn(2, *stage.blocks[0].input_resolution, stage.dim)
    compiled = torch.compile(lambda x_: fused_stage_forward(stage, x_), fullgraph=True)
    results = []
    for forward in (stage, compiled):
        x_ = x.clone().requires_grad_()
        out = forward(x_)
        results.append((out, torch.autograd.grad(out, [x_, *stage.parameters()], torch.ones_like(out))))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-4)
    for got, expected in zip(results[1][1], results[0][1]):
        assert (got - expected).norm() <= 1e-4 * expected.norm() + 1e-6


def test_it_takes_one_of_three_modes_and_names_a_wrong_one():
    model = create_model("SIFAR-N-6", 10, attention="sdpa")
    for mode in ("training", "off", "inference"):
        set_fused_norm(model, mode)
        assert model.backbone.fused_norm == mode
    with pytest.raises(ValueError, match="fused norm mode 'train': expected one of off, inference, training"):
        set_fused_norm(model, "train")
    assert model.backbone.fused_norm == "inference"


KERNEL_CHECK = r"""
import torch
from sifar.models.add_layer_norm_kernel import (add_layer_norm_backward_kernel, add_layer_norm_kernel,
                                                launch_add_layer_norm, launch_add_layer_norm_backward)
from sifar.models.fused_norm import add_layer_norm_backward_reference, add_layer_norm_reference, window_rows
torch.manual_seed(0)
for dtype, channels in ((torch.float32, 24), (torch.float16, 40)):
    # 24 tokens an image, 8 images: 192 rows, in programs of 128 (fp32: the last one half empty) or 64 (fp16)
    table = window_rows(4, 6, (2, 3), (1, 1))
    x, y, grad_sum, grad_out = (torch.randn(8 * 24, channels).to(dtype) for _ in range(4))
    scale = torch.tensor([0.0, 1.25, 1.25, 0.0, 1.25, 1.25, 1.25, 0.0]).to(dtype)  # drop path's, keeping 0.8
    weight, bias = torch.randn(channels), torch.randn(channels)
    for y_, y_scale, in_rows, out_rows in ((y, None, table, None), (y, scale, table, None), (y, None, None, table),
                                           (y, scale, None, table), (None, None, None, table), (y, None, None, None)):
        got = launch_add_layer_norm(add_layer_norm_kernel, x, y_, y_scale, in_rows, weight, bias, 1e-5, out_rows, 24)
        want = add_layer_norm_reference(x, y_, y_scale, in_rows, weight, bias, 1e-5, out_rows)
        torch.testing.assert_close(got[0], want[0], atol=0, rtol=0)
        one_rounding = 1e-5 if dtype == torch.float32 else 1e-3  # fp16: an output next to a rounding boundary
        torch.testing.assert_close(got[1], want[1], atol=one_rounding, rtol=one_rounding)
    for grad_sum_, write_grad_y, y_scale, in_rows, out_rows in (
            (grad_sum, True, scale, table, None), (grad_sum, True, None, table, None), (grad_sum, True, scale, None,
            table), (None, False, None, None, table), (grad_sum, False, None, None, None)):
        args = (x, grad_sum_, grad_out, out_rows, weight, write_grad_y, y_scale, in_rows, 1e-5)
        got = launch_add_layer_norm_backward(add_layer_norm_backward_kernel, *args, 24)
        want = add_layer_norm_backward_reference(*args)
        for name, g, w in zip(("x", "y", "weight", "bias"), got, want):
            tolerance = 1e-5 if dtype == torch.float32 or name in ("weight", "bias") else 1e-3
            torch.testing.assert_close(g, w, atol=tolerance, rtol=tolerance, msg=name)
print("kernels match")
"""


def test_the_triton_kernel_under_the_interpreter_matches_the_reference():
    pytest.importorskip("triton", reason="the fused kernel is written in Triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", KERNEL_CHECK], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "kernels match" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("eps_type", ["fp32", "fp64"])
def test_both_kernels_compile_for_an_h100_with_eps_typed_as_inductor_may_type_it(eps_type):
    """Triton's compiler, for sm_90 without a GPU: Inductor may pass the Python float ``eps`` as fp64 (torch 2.11
    did in the compiled backward, and Triton then refused the kernel: its fp32 dweight sum turned fp64 in the
    loop). Both kernels compile either way, and no arithmetic but eps's own truncation is done in fp64."""
    triton = pytest.importorskip("triton", reason="the fused kernel is written in Triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from sifar.models import add_layer_norm_kernel

    def arg_type(name: str) -> str:
        if name.endswith("rows_ptr"):
            return "*i32"
        if name.endswith("_ptr"):
            return "*fp32" if name in ("grad_weight_ptr", "grad_bias_ptr") else "*bf16"
        return eps_type if name == "eps" else "constexpr" if name.isupper() else "i32"

    for kernel in (add_layer_norm_kernel.add_layer_norm_kernel, add_layer_norm_kernel.add_layer_norm_backward_kernel):
        names = kernel.arg_names
        flags = {name: True for name in names if name.isupper() and not name.startswith("BLOCK")}
        constants = {**flags, "BLOCK_R": 8, "BLOCK_C": 512}
        source = ASTSource(kernel, {name: arg_type(name) for name in names},
                           constexprs={(names.index(name),): value for name, value in constants.items()})
        ir = triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm["ttir"]
        fp64_ops = [line for line in ir.splitlines() if "f64" in line and "tt.func" not in line]
        assert all("arith.truncf %eps" in line for line in fp64_ops), (kernel.__name__, fp64_ops)
