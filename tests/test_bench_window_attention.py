"""The window-attention benchmark's bookkeeping on the CPU: which blocks stand for the model, and how many each."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("triton", reason="the benchmark times Triton kernels")

from sifar.models import create_model  # noqa: E402
from tools.bench_window_attention import (ATTENTION_KERNELS, attention_floor_ms, model_totals,  # noqa: E402
                                          stage_blocks, summed_ms)


def test_stage_blocks_stand_for_every_block_of_sifar_b():
    blocks = stage_blocks(create_model("SIFAR-B-12", num_classes=10))
    counts = {label: count for label, _block, count in blocks}
    # Swin-B's depths 2, 2, 18, 2; the last stage's window covers its whole map, so it is never shifted
    assert counts == {"stage0": 1, "stage0-shifted": 1, "stage1": 1, "stage1-shifted": 1, "stage2": 9,
                      "stage2-shifted": 9, "stage3": 2}
    assert all((block.attn_mask is not None) == label.endswith("shifted") for label, block, _count in blocks)


def test_model_totals_weigh_each_row_by_its_blocks():
    rows = [{"impl": "flex", "blocks": 9, "fwd_gpu_ms": 1.0, "fwd_bwd_gpu_ms": 2.0},
            {"impl": "flex", "blocks": 1, "fwd_gpu_ms": 0.5, "fwd_bwd_gpu_ms": 4.0},
            {"impl": "kernel-qkv", "blocks": 9, "fwd_gpu_ms": 0.5, "fwd_bwd_gpu_ms": 3.0}]
    assert model_totals(rows) == {"flex": {"fwd_gpu_ms": 9.5, "fwd_bwd_gpu_ms": 22.0},
                                  "kernel-qkv": {"fwd_gpu_ms": 4.5, "fwd_bwd_gpu_ms": 27.0}}


@pytest.mark.parametrize("kernel, is_attention", [
    # names from Nsight Compute's profile of SIFAR-B-12's first block on the H100 (session 24)
    ("triton_tem_fused_flex_attention_4", True),
    ("triton_tem_fused_flex_attention_backward_2", True),
    ("triton_per_fused_flex_attention_backward_1", True),  # the backward's delta pass
    ("_forward_kernel", True),
    ("_grad_kernel", True),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<at::native::(anonymous namespace)::OpaqueType<2u>,"
     " unsigned int, 4, 64, 64>(...)", False),  # autograd's eager stacking of dq, dk, dv
    ("triton_poi_fused_clone_permute_stack_39", False),  # the same, fused by a compiled step
    ("void at::native::vectorized_gather_kernel<16, long>(char*, char*, long*, int, long, long, long, long, bool)",
     False),  # the bias gathered from its table
])
def test_the_attention_kernels_are_told_from_the_copies_around_them(kernel, is_attention):
    assert bool(ATTENTION_KERNELS.search(kernel)) == is_attention


def test_kernel_times_sum_whole_or_by_name_and_none_measured_is_nan():
    times = {"triton_tem_fused_flex_attention_4": 0.5, "triton_poi_fused_clone_permute_stack_39": 0.25}
    assert summed_ms(times) == 0.75
    assert summed_ms(times, ATTENTION_KERNELS) == 0.5
    assert math.isnan(summed_ms({}))  # the profiler saw no kernels (under Nsight Compute)


def test_the_memory_floor_counts_the_bytes_attention_must_move():
    """SIFAR-B-12's first block: 144 x 144 tokens of 128 channels in bf16; the forward reads qkv and writes the
    output (4 C a token), training also reads qkv, the output and its gradient and writes qkv's (12 C)."""
    blocks = {label: block for label, block, _count in stage_blocks(create_model("SIFAR-B-12", num_classes=10))}
    forward_bytes = 144 * 144 * 4 * 128 * 2
    assert attention_floor_ms(blocks["stage0"], 1, train=False, bytes_per_s=1e9) == pytest.approx(forward_bytes / 1e6)
    assert attention_floor_ms(blocks["stage0"], 96, train=True) == pytest.approx(
        3 * 96 * attention_floor_ms(blocks["stage0"], 1, train=False))
    # each stage halves the tokens' side and doubles the channels: half the bytes of the stage before
    first, second = (attention_floor_ms(blocks[label], 1, train=False) for label in ("stage0", "stage1"))
    assert second == pytest.approx(first / 2)
