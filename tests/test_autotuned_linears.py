"""tools/autotuned_linears.py (session 29's candidate): the swap keeps every parameter and the CPU's outputs, the
op's torch path and its fake agree, and on a GPU with nvmath-python the autotuned GEMMs give torch's products."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from sifar.models import create_model
from tools import autotuned_linears
from tools.autotuned_linears import (AutotunedGeluMlp, AutotunedLinear, autotuned_linear, epilog_name,
                                    use_autotuned_linears)


def test_every_block_gets_an_autotuned_qkv_and_mlp_holding_its_own_parameters():
    model = create_model("SIFAR-N-6", 10).eval()
    before = {name: p for name, p in model.named_parameters()}
    blocks = use_autotuned_linears(model)
    attentions = [m for m in model.modules() if hasattr(m, "qkv")]
    assert blocks == len(attentions) == 5
    assert all(type(a.qkv) is AutotunedLinear for a in attentions)
    assert sum(isinstance(m, AutotunedGeluMlp) for m in model.modules()) == blocks
    after = dict(model.named_parameters())
    assert after.keys() == before.keys() and all(after[name] is before[name] for name in before)


def test_off_cuda_the_model_gives_the_same_logits():
    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", 10, attention="sdpa").eval()
    swapped = copy.deepcopy(model)
    use_autotuned_linears(swapped)
    frames = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(swapped(frames), model(frames), atol=0, rtol=0)


@pytest.mark.parametrize("gelu, bias", [(False, True), (True, True), (False, False), (True, False)])
def test_the_op_is_linear_and_tanh_gelu_on_the_cpu_and_its_fake_agrees(gelu, bias):
    x, weight, bias = torch.randn(6, 4), torch.randn(8, 4), torch.randn(8) if bias else None
    expected = F.linear(x, weight, bias)
    torch.testing.assert_close(autotuned_linear(x, weight, bias, gelu),
                               F.gelu(expected, approximate="tanh") if gelu else expected)
    torch.library.opcheck(autotuned_linear, (x, weight, bias, gelu))


def test_each_epilogue_has_nvmaths_name():
    assert [epilog_name(gelu, bias) for gelu, bias in ((True, True), (False, True), (True, False), (False, False))] == [
        "GELU_BIAS", "BIAS", "GELU", "DEFAULT"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuBLASLt through nvmath-python needs a CUDA GPU")
def test_on_the_gpu_the_autotuned_gemms_give_torchs_products(monkeypatch):
    pytest.importorskip("nvmath", reason="the candidate calls cuBLASLt through nvmath-python")
    epilogues = []
    planned = autotuned_linears.planned_matmul
    monkeypatch.setattr(autotuned_linears, "planned_matmul", lambda *args: epilogues.append(args[2]) or planned(*args))
    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", 10).cuda().eval()
    swapped = copy.deepcopy(model)
    use_autotuned_linears(swapped)
    frames = torch.randn(2, 8, 3, 64, 64, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        expected, got = model(frames).float(), swapped(frames).float()
    assert ((got - expected).norm() / expected.norm()).item() < 1e-2
    assert sorted(epilogues) == ["BIAS"] * 5 + ["GELU_BIAS"] * 5  # each of the 5 blocks' qkv and fc1, once
