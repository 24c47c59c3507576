"""tools/profile_kinds.py: the kernel names of a real H100 profile (session 26) go to the kinds PERFORMANCE.md
discusses, and a file that is not a kernel list is named in the error."""

import json
from types import SimpleNamespace

import click
import pytest
import torch
from click.testing import CliRunner

from tools.profile_kinds import OTHER, device_kernels, kind_of, kinds_table, main, read_kernels, sum_by_kind


@pytest.mark.parametrize("name, kind", [
    ("triton_tem_fused_flex_attention_backward_transpose_view_35", "FlexAttention backward"),
    ("triton_tem_fused__to_copy_flex_attention_ones_permute_slice_sort_sum_transpose_unbind_view_zeros_49",
     "FlexAttention forward"),
    ("triton_tem_fused_flex_attention_permute_unbind_view_61", "FlexAttention forward"),
    ("triton_per_fused_flex_attention_backward_transpose_view_34",
     "attention's other kernels (delta pass, bias gradient)"),
    ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_gelubias_TNT", "GEMMs (cuBLAS / cuBLASLt, with their epilogues)"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_nn_n_tilesize128x128x64_warpgroupsize1x1x1_aux_bf16_dgelu_execute",
     "GEMMs (cuBLAS / cuBLASLt, with their epilogues)"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16>",
     "GEMMs (cuBLAS / cuBLASLt, with their epilogues)"),
    ("triton_poi_fused_clone_permute_stack_38", "dq, dk, dv stacked into the qkv layout"),
    ("triton_red_fused__to_copy__unsafe_view_add_clone_native_layer_norm_permute_roll_view_50",
     "LayerNorm with the residual, rolls and window copies"),
    ("void at::native::reduce_kernel<128, 4, at::native::ReduceOp<c10::BFloat16>>",
     "library reductions (bias gradients: fc1's sum under --gelu-epilogue)"),
    ("triton_poi_fused_gelu_view_48", "GELU (its own passes)"),
    ("void at::native::multi_tensor_apply_kernel<FusedOptimizerTensorListMetadata>", "optimizer (fused AdamW)"),
    ("Memset (Device)", "memsets"),
    ("triton_poi_fused__to_copy_46", OTHER),
])
def test_each_kernel_goes_to_its_kind(name, kind):
    assert kind_of(name) == kind


def test_the_kinds_sum_every_kernel_and_the_table_shows_each_profiles_share():
    kernels = [{"name": "nvjet_sm90_a", "gpu_ms_per_step": 3.0}, {"name": "nvjet_sm90_b", "gpu_ms_per_step": 1.0},
               {"name": "triton_tem_fused_flex_attention_7", "gpu_ms_per_step": 4.0}]
    totals = sum_by_kind(kernels)
    assert sum(totals.values()) == 8.0 and totals["GEMMs (cuBLAS / cuBLASLt, with their epilogues)"] == 4.0
    table = kinds_table({"run": totals})
    assert "| GEMMs (cuBLAS / cuBLASLt, with their epilogues) | 4.0 (50%) |" in table
    assert table.endswith("| **all kernels** | **8.0** |")
    assert "| memsets | 0.0 (-) |" in kinds_table({"no GPU kernel": sum_by_kind([])})


def test_the_command_reads_bench_trains_files_and_names_a_bad_one(tmp_path):
    good = tmp_path / "profile-SIFAR-B-12-x-train.json"
    good.write_text(json.dumps([{"name": "Memset (Device)", "calls_per_step": 2.0, "gpu_ms_per_step": 0.5}]))
    result = CliRunner().invoke(main, [str(good)])
    assert result.exit_code == 0 and "| SIFAR-B-12-x-train |" in result.output
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(click.BadParameter, match="other.json: not a kernel list"):
        read_kernels(bad)
    with pytest.raises(click.BadParameter, match="missing.json"):
        read_kernels(tmp_path / "missing.json")


def test_device_kernels_keep_the_gpu_kernels_per_call_longest_first():
    def event(key, device, us, count=6, annotation=False):
        return SimpleNamespace(key=key, count=count, self_device_time_total=us, is_user_annotation=annotation,
                               device_type=getattr(torch.autograd.DeviceType, device))
    averages = [event("aten::mm", "CPU", 0.0), event("nvjet_a", "CUDA", 3000.0), event("step", "CUDA", 9000.0, 3, True),
                event("triton_poi_b", "CUDA", 6000.0, count=3)]
    assert device_kernels(averages, 3) == [
        {"name": "triton_poi_b", "calls_per_step": 1.0, "gpu_ms_per_step": 2.0},
        {"name": "nvjet_a", "calls_per_step": 2.0, "gpu_ms_per_step": 1.0}]
