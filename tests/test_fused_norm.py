"""The fused residual-add + LayerNorm candidate (tools/fused_norm.py): its row tables, its torch path against
timm's stages on the CPU, and its Triton kernel under Triton's interpreter (in a subprocess: TRITON_INTERPRET
must be set before Triton kernels are defined, and would turn every other kernel of the session into an
interpreted one). The interpreter rounds to bf16 otherwise than the GPU does (one unit in the last place, where
the GPU rounds to nearest even), so it checks fp32 and fp16, which take the same casts; bf16 and the compiled GPU
path are checked in tests/test_gpu.py."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerStage, window_partition

from sifar.models import create_model

pytest.importorskip("triton", reason="the fused kernel is written in Triton")
from tools.fused_norm import (FusedNormSwinStage, add_layer_norm, add_layer_norm_reference,  # noqa: E402
                              fused_stage_forward, use_fused_norm, window_rows)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shift", [(0, 0), (2, 2)])
def test_the_table_puts_each_token_where_roll_and_partition_put_it(shift):
    height, width, window = 8, 12, (4, 4)
    image = torch.randn(1, height, width, 3)
    rows = window_rows(height, width, window, shift)
    placed = torch.empty(height * width, 3)
    placed[rows.long()] = image.view(-1, 3)
    rolled = torch.roll(image, shifts=(-shift[0], -shift[1]), dims=(1, 2)) if any(shift) else image
    torch.testing.assert_close(placed, window_partition(rolled, window).reshape(-1, 3))


@pytest.mark.parametrize("name", ["SIFAR-N-6", "SIFAR-M-12"])
def test_each_stage_computes_what_timms_stage_does(name):
    torch.manual_seed(0)
    model = create_model(name, 10, attention="sdpa", drop_path_rate=0.1).eval()
    fused = copy.deepcopy(model)
    stages, fused_stages = model.backbone.layers, fused.backbone.layers
    assert use_fused_norm(fused) == len(stages)
    x = torch.randn(2, *stages[0].blocks[0].input_resolution, stages[0].dim)
    with torch.no_grad():
        for stage, fused_stage in zip(stages, fused_stages):
            expected = stage(x)
            torch.testing.assert_close(fused_stage_forward(fused_stage, x, torch.float32), expected,
                                       atol=1e-5, rtol=1e-4)
            x = expected


def test_off_cuda_or_in_training_the_stage_takes_timms_path():
    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", 10, attention="sdpa")
    fused = copy.deepcopy(model)
    use_fused_norm(fused)
    assert all(type(stage) is FusedNormSwinStage for stage in fused.backbone.layers)
    frames = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused.eval()(frames), model.eval()(frames))
    torch.manual_seed(1)
    expected = model.train()(frames)
    torch.manual_seed(1)
    torch.testing.assert_close(fused.train()(frames), expected)


def test_the_model_keeps_its_parameters_and_checkpoint_keys_and_a_cnn_is_refused():
    model = create_model("SIFAR-N-6", 10, attention="sdpa")
    before = model.state_dict(keep_vars=True)
    use_fused_norm(model)
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(before) and all(after[k] is before[k] for k in before)
    assert all(hasattr(block, "fused_norm_rows") for stage in model.backbone.layers for block in stage.blocks)
    with pytest.raises(ValueError, match="no Swin stage"):
        use_fused_norm(create_model("SIFAR-R18", 10))


def test_a_map_that_needs_padding_is_refused():
    stage = SwinTransformerStage(dim=16, out_dim=16, input_resolution=(10, 10), depth=1, downsample=False,
                                 num_heads=2, window_size=4)
    with pytest.raises(ValueError, match="a 10x10 map needs padding to \\(4, 4\\) windows"):
        use_fused_norm(torch.nn.Sequential(stage))


def test_the_op_on_the_cpu_is_the_reference():
    torch.manual_seed(0)
    x, y = torch.randn(32, 24), torch.randn(32, 24)
    table = window_rows(4, 4, (2, 2), (1, 1))
    weight, bias = torch.randn(24), torch.randn(24)
    total, normed = add_layer_norm(x, y, table, weight, bias, 1e-5, table, torch.float32)
    expected = add_layer_norm_reference(x, y, table, weight, bias, 1e-5, table, torch.float32)
    torch.testing.assert_close(total, expected[0])
    torch.testing.assert_close(normed, expected[1])
    assert add_layer_norm(x, None, None, weight, bias, 1e-5, table, torch.float32)[0].numel() == 0


KERNEL_CHECK = r"""
import torch
from tools.fused_norm import _add_layer_norm_kernel, add_layer_norm_reference, launch_add_layer_norm, window_rows
torch.manual_seed(0)
for dtype, channels in ((torch.float32, 24), (torch.float16, 40)):
    # 24 tokens an image, 8 images: 192 rows, in programs of 128 (fp32: the last one half empty) or 64 (fp16)
    table = window_rows(4, 6, (2, 3), (1, 1))
    x, y = (torch.randn(8 * 24, channels).to(dtype) for _ in range(2))
    weight, bias = torch.randn(channels), torch.randn(channels)
    for y_, in_rows, out_rows in ((y, table, None), (y, None, table), (None, None, table), (y, None, None)):
        got = launch_add_layer_norm(_add_layer_norm_kernel, x, y_, in_rows, weight, bias, 1e-5, out_rows, dtype)
        want = add_layer_norm_reference(x, y_, in_rows, weight, bias, 1e-5, out_rows, dtype)
        torch.testing.assert_close(got[0], want[0], atol=0, rtol=0)
        torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)
print("kernel matches")
"""


def test_the_triton_kernel_under_the_interpreter_matches_the_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", KERNEL_CHECK], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "kernel matches" in result.stdout, result.stderr[-3000:]
