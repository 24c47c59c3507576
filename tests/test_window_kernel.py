"""The Triton window-attention kernels against the explicit softmax(q k^T * scale + bias + mask) v.

The kernels run under Triton's interpreter on CPU tensors, in one subprocess for all cases: TRITON_INTERPRET must
be set before the kernels are defined, and setting it in this process would also turn every other Triton kernel
of the test session (inductor's, on a GPU machine) into interpreted ones. Sizes are tiny because the interpreter
is slow; its one tile configuration (16-row query tiles) still splits 49 and 144 tokens into several query tiles
with padding rows and keys, and several windows of a head add into one bias gradient.

The interpreter multiplies bf16 matrices wrongly (Triton 3.8: tl.dot reads their uint16 storage as integers), so
the low-precision path (bf16 in training) is checked in fp16, which takes the same casts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sifar.models.window_attention import SHIFT_MASK_VALUE

pytest.importorskip("triton", reason="the window-attention kernels are written in Triton")

ROOT = Path(__file__).resolve().parents[1]
HEAD_DIM = 32

# name: (forward, windows per image, images, heads, tokens, dtype, shifted, bias needs a gradient)
CASES = {
    "kernel-49-fp32": ("kernel", 3, 3, 2, 49, torch.float32, False, True),
    "kernel-49-fp32-shifted": ("kernel", 3, 3, 2, 49, torch.float32, True, True),
    "kernel-144-fp32": ("kernel", 2, 2, 2, 144, torch.float32, False, True),
    "kernel-144-fp32-shifted": ("kernel", 2, 2, 2, 144, torch.float32, True, True),
    "kernel-144-fp16-shifted": ("kernel", 2, 2, 2, 144, torch.float16, True, True),
    "kernel-16-fp32-shifted-frozen-bias": ("kernel", 2, 1, 3, 16, torch.float32, True, False),
    # FlexAttention's forward (eager on the CPU) and its logsumexp, then the kernels' backward
    "flex-forward-49-fp32-shifted": ("flex-forward", 3, 2, 2, 49, torch.float32, True, True),
    "flex-forward-144-fp32": ("flex-forward", 2, 1, 2, 144, torch.float32, False, True),
}
TOLERANCE = {torch.float32: 2e-4, torch.float16: 4e-3}  # absolute, on values and gradients of order 1

RUNNER = """
import sys
import torch
import triton
from tools import window_kernel

if len(sys.argv) > 3:  # the backward's (BLOCK_M, BLOCK_N) instead of the interpreter's one configuration
    block_m, block_n = map(int, sys.argv[3].split(","))
    window_kernel._grad_kernel.configs = [triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=1)]
results = {}
for name, case in torch.load(sys.argv[1]).items():
    qkv = case["qkv"].requires_grad_()
    bias = case["bias"].requires_grad_(case["bias_grad"])
    windows, tokens, _ = qkv.shape
    heads = case["heads"]
    out = window_kernel.window_attention_qkv(qkv, bias, case["regions"], case["scale"], heads,
                                             flex_forward=case["forward"] == "flex-forward")
    out = out.view(windows, tokens, heads, -1).transpose(1, 2)
    out.backward(case["grad_out"])
    results[name] = {"out": out.detach(), "qkv": qkv.grad, "bias": bias.grad}
torch.save(results, sys.argv[2])
"""


def make_case(forward: str, num_windows: int, images: int, heads: int, tokens: int, dtype: torch.dtype, shifted: bool,
              bias_grad: bool) -> dict:
    """Random qkv activations, bias, output gradient and (if shifted) regions of 1 to 4 ids a window."""
    generator = torch.Generator().manual_seed(tokens * 100 + heads * 10 + int(shifted))
    windows = num_windows * images
    regions = None
    if shifted:
        regions = torch.randint(0, 4, (num_windows, tokens), generator=generator, dtype=torch.int32)
        regions[0] = 0  # one window of a single region, as the unshifted windows of a shifted block
    return {"forward": forward, "heads": heads, "scale": HEAD_DIM ** -0.5, "bias_grad": bias_grad, "regions": regions,
            "qkv": torch.randn(windows, tokens, 3 * heads * HEAD_DIM, generator=generator).to(dtype),
            "bias": (2 * torch.randn(heads, tokens, tokens, generator=generator)).to(dtype),
            "grad_out": torch.randn(windows, heads, tokens, HEAD_DIM, generator=generator).to(dtype)}


def reference(case: dict, mask: bool = True) -> dict:
    """Output and gradients of the explicit attention in float64 (the shift mask optional)."""
    qkv = case["qkv"].double().requires_grad_()
    bias = case["bias"].double().requires_grad_()
    windows, tokens, _ = qkv.shape
    q, k, v = qkv.reshape(windows, tokens, 3, case["heads"], HEAD_DIM).permute(2, 0, 3, 1, 4).unbind(0)
    scores = q @ k.transpose(-1, -2) * case["scale"] + bias
    if mask and case["regions"] is not None:
        regions = case["regions"][torch.arange(windows) % case["regions"].shape[0]]  # windows are the fast axis
        same = regions[:, None, :, None] == regions[:, None, None, :]
        scores = scores + torch.where(same, 0.0, SHIFT_MASK_VALUE)
    out = torch.softmax(scores, -1) @ v
    out.backward(case["grad_out"].double())
    return {"out": out.detach(), "qkv": qkv.grad, "bias": bias.grad}


@pytest.fixture(scope="module")
def cases() -> dict:
    return {name: make_case(*spec) for name, spec in CASES.items()}


def interpreted(script: str, *args: str) -> None:
    """Run ``script`` in a fresh Python with the kernels interpreted."""
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": python_path}
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def kernel_results(cases, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("window_kernel")
    torch.save(cases, folder / "cases.pt")
    interpreted(RUNNER, str(folder / "cases.pt"), str(folder / "results.pt"))
    return torch.load(folder / "results.pt")


@pytest.mark.parametrize("name", CASES)
def test_kernel_matches_explicit_attention(name, cases, kernel_results):
    case, got, expected = cases[name], kernel_results[name], reference(cases[name])
    tolerance = TOLERANCE[case["qkv"].dtype]
    assert got["out"].dtype == got["qkv"].dtype == case["qkv"].dtype
    assert got["out"].shape == expected["out"].shape
    for key in ("out", "qkv"):  # qkv: dq, dk and dv, in the qkv layout
        torch.testing.assert_close(got[key].double(), expected[key], atol=tolerance, rtol=tolerance, msg=key)
    if case["bias_grad"]:
        assert got["bias"].dtype == case["bias"].dtype
        # a sum over all windows: its error grows with their number
        torch.testing.assert_close(got["bias"].double(), expected["bias"], atol=4 * tolerance, rtol=tolerance)
    else:
        assert got["bias"] is None


@pytest.mark.parametrize("tiles", ["32,64", "64,32"])
def test_the_backward_is_the_same_with_larger_tiles_than_the_interpreters(tiles, cases, tmp_path):
    """The GPU's tiles pad more: 64 keys a program cover 49 tokens with 15 padding keys, 144 with 48 in the last
    of three programs; 32- and 64-row query tiles pad the rows."""
    chosen = {name: cases[name] for name in ("kernel-49-fp32-shifted", "kernel-144-fp32")}
    torch.save(chosen, tmp_path / "cases.pt")
    interpreted(RUNNER, str(tmp_path / "cases.pt"), str(tmp_path / "results.pt"), tiles)
    results = torch.load(tmp_path / "results.pt")
    for name, case in chosen.items():
        expected = reference(case)
        for key in ("qkv", "bias"):
            torch.testing.assert_close(results[name][key].double(), expected[key], atol=4e-4, rtol=2e-4, msg=key)


@pytest.mark.parametrize("name", [name for name in CASES if "shifted" in name])
def test_shift_mask_decides_the_shifted_cases(name, cases, kernel_results):
    """Without the mask the reference is far from the kernel: the cases can tell a missing or wrong mask."""
    unmasked = reference(cases[name], mask=False)
    assert (kernel_results[name]["out"].double() - unmasked["out"]).abs().max() > 0.1
    assert (kernel_results[name]["qkv"].double() - unmasked["qkv"]).abs().max() > 0.1


MODEL_RUNNER = """
import sys
import torch
from sifar.models import create_model
from tools.window_kernel import use_window_kernel

torch.manual_seed(0)
clips = torch.randn(1, 8, 3, 64, 64)
results = {}
for name in ("sdpa", "kernel", "flex-forward"):
    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", num_classes=5, attention="sdpa", drop_path_rate=0.0)
    forward = model
    if name != "sdpa":
        results[f"swapped-{name}"] = use_window_kernel(model, flex_forward=name == "flex-forward")
        forward = torch.compile(model, backend="aot_eager", fullgraph=True)
    logits = forward(clips)
    logits.square().sum().backward()
    results[name] = {"logits": logits.detach(), **{n: p.grad for n, p in model.named_parameters()}}
torch.save(results, sys.argv[1])
"""


def test_a_model_swapped_to_the_kernels_computes_as_before_in_one_compiled_graph(tmp_path):
    """SIFAR-N-6 (windows of 36 tokens, a shifted block) with every window attention on the kernels (or on
    FlexAttention's forward and the kernels' backward), compiled whole (fullgraph=True; aot_eager: Dynamo and
    AOTAutograd trace the custom ops, no code generation), gives the sdpa model's logits and every parameter's
    gradient, relative-position tables included."""
    interpreted(MODEL_RUNNER, str(tmp_path / "model.pt"))
    results = torch.load(tmp_path / "model.pt")
    assert results["swapped-kernel"] == results["swapped-flex-forward"] == 5
    expected = results["sdpa"]
    for name in ("kernel", "flex-forward"):
        got = results[name]
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, atol=2e-4, rtol=1e-3, msg=f"{name}: {key}")


def test_use_window_kernel_swaps_the_windows_up_to_max_tokens(monkeypatch):
    from sifar.models import create_model
    from sifar.models.window_attention import SifarWindowAttention
    from tools.window_kernel import KernelWindowAttention, use_window_kernel

    model = create_model("SIFAR-B-12", num_classes=10)
    assert use_window_kernel(model, max_tokens=144) == 22  # stages 1-3's 12x12 windows, not stage 4's 18x18
    attentions = [m for m in model.modules() if isinstance(m, SifarWindowAttention)]
    assert {type(m).__name__: m.window_area for m in attentions if m.window_area == 324} == {
        "SifarWindowAttention": 324}
    assert sum(isinstance(m, KernelWindowAttention) for m in attentions) == 22
    assert not any(m.flex_forward for m in attentions if isinstance(m, KernelWindowAttention))
    # the flex forward switches AOTAutograd's aliasing check off for the process: restored after this test
    monkeypatch.setattr(torch._functorch.config, "check_custom_op_aliasing", True)
    assert use_window_kernel(model, flex_forward=True) == 24  # all (the 22 again, now after FlexAttention's forward)
    assert all(m.flex_forward for m in attentions)
    assert not torch._functorch.config.check_custom_op_aliasing

