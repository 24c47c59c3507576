"""Training's GELU in cuBLASLt's epilogues (sifar/models/gelu_epilogue_training.py, sifar-train --gelu-epilogue):
its autograd against torch's on the CPU (where the same arithmetic runs in torch, in the layouts cuBLASLt uses),
what the trainer refuses, and nvmath-python's GEMMs on a GPU."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Mlp

from sifar.models import create_model
from sifar.models.gelu_epilogue_training import (TrainingGeluEpilogueMlp, check_training_gelu_epilogue, dgelu,
                                                 dgelu_reference, fc1_gelu, fc1_gelu_reference, mlp_gelu_epilogue,
                                                 use_training_gelu_epilogue)

from test_train import TINY, run_train


def mlp_inputs(rows: int = 12, channels: int = 8, hidden: int = 32, dtype=torch.float64, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(rows, channels), (hidden, channels), (hidden,), (channels, hidden), (channels,)]
    return [torch.randn(shape, generator=generator, dtype=torch.float64).to(device, dtype).requires_grad_()
            for shape in shapes]


def with_tanh_gelu_reference(model):
    """(``model`` with :func:`use_training_gelu_epilogue`, a copy made before it whose MLPs run timm's tanh GELU)."""
    reference = copy.deepcopy(model)
    for module in reference.modules():
        if isinstance(module, Mlp):
            module.act.approximate = "tanh"
    use_training_gelu_epilogue(model)
    return model, reference


def training_step(net, forward):
    """(logits, each parameter's gradient) of one training step of ``net``: ``forward(net)``, then the backward of
    the logits' squares."""
    logits = forward(net.train())
    logits.square().sum().backward()
    return logits.detach(), {name: p.grad for name, p in net.named_parameters()}


def torch_mlp(x, w1, b1, w2, b2):
    return F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2)


def gradients(fn, inputs, grad_y):
    for tensor in inputs:
        tensor.grad = None
    y = fn(*inputs)
    y.backward(grad_y)
    return y.detach(), [tensor.grad.clone() for tensor in inputs]


@pytest.mark.parametrize("compiled", [False, True])
def test_the_epilogue_mlp_and_its_gradients_are_the_tanh_gelu_mlp(compiled):
    inputs = mlp_inputs()
    grad_y = torch.randn(12, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fn = torch.compile(mlp_gelu_epilogue, fullgraph=True) if compiled else mlp_gelu_epilogue
    y, grads = gradients(fn, inputs, grad_y)
    y_ref, grads_ref = gradients(torch_mlp, inputs, grad_y)
    torch.testing.assert_close(y, y_ref)
    for name, got, expected in zip(("x", "w1", "b1", "w2", "b2"), grads, grads_ref):
        torch.testing.assert_close(got, expected, msg=f"gradient of {name}")


def test_pre_activation_is_kept_in_cublaslt_column_order():
    x, w1, b1, _w2, _b2 = mlp_inputs()
    hidden, pre = fc1_gelu(x.detach(), w1.detach(), b1.detach())
    assert hidden.shape == (12, 32) and hidden.is_contiguous()
    assert pre.shape == (32, 12) and pre.stride() == (1, 32)  # (4C, T) column-ordered: the (T, 4C) rows in memory
    torch.testing.assert_close(pre.t(), F.linear(x, w1, b1).detach())


def test_a_hidden_width_cublaslt_cannot_pad_is_refused():
    with pytest.raises(ValueError, match="multiple of 8, not 30"):
        mlp_gelu_epilogue(*mlp_inputs(hidden=30))


def test_the_swap_keeps_every_parameter_and_the_cpu_keeps_timms_path():
    model = create_model("SIFAR-N-6", num_classes=5).eval()
    frames = torch.randn(1, 8, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        logits = model(frames)
    parameters = {id(p) for p in model.parameters()}
    count = len([module for module in model.modules() if isinstance(module, Mlp)])
    assert use_training_gelu_epilogue(model) == count > 0
    mlps = [module for module in model.modules() if isinstance(module, Mlp)]
    assert len(mlps) == count and all(isinstance(module, TrainingGeluEpilogueMlp) for module in mlps)
    assert {id(p) for p in model.parameters()} == parameters  # the same layers, not copies
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(model(frames), logits)
    model.train()
    assert not any(module.training_epilogue_applies(torch.zeros(2, 8)) for module in mlps)  # CPU: timm's path


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvmath-python's cuBLASLt epilogues need a CUDA GPU")
@pytest.mark.parametrize("seed", [0, 1])  # the second call reuses the first one's planned GEMMs with new operands
def test_cublaslt_epilogues_match_the_torch_arithmetic_in_bf16(seed):
    pytest.importorskip("nvmath", reason="the training GELU epilogue calls cuBLASLt through nvmath-python")
    x, w1, b1, w2, _b2 = (t.detach() for t in mlp_inputs(rows=4096, channels=128, hidden=512, dtype=torch.bfloat16,
                                                            device="cuda", seed=seed))
    grad_y = torch.randn(4096, 128, device="cuda", dtype=torch.bfloat16)
    hidden, pre = fc1_gelu(x, w1, b1)
    hidden_ref, pre_ref = fc1_gelu_reference(x.float(), w1.float(), b1.float())
    assert pre.stride() == pre_ref.stride()
    for got, expected in ((hidden, hidden_ref), (pre, pre_ref)):
        assert ((got.float() - expected).norm() / expected.norm()).item() < 1e-2
    grad_pre, grad_b1 = dgelu(grad_y, w2, pre)
    grad_pre_ref, grad_b1_ref = dgelu_reference(grad_y.float(), w2.float(), pre_ref)
    for got, expected in ((grad_pre, grad_pre_ref), (grad_b1, grad_b1_ref)):
        assert ((got.float() - expected).norm() / expected.norm()).item() < 2e-2


def test_a_model_trains_through_the_epilogue_as_through_a_tanh_gelu(monkeypatch):
    """The swapped MLPs inside a whole model's training step (forced onto the CPU's torch arithmetic): the same
    logits and parameter gradients as the model with timm's MLPs on the tanh GELU."""
    model, reference = with_tanh_gelu_reference(create_model("SIFAR-N-6", num_classes=5))
    monkeypatch.setattr(TrainingGeluEpilogueMlp, "training_epilogue_applies", lambda self, x: self.training)
    frames = torch.randn(2, 8, 3, 64, 64, generator=torch.Generator().manual_seed(3))

    def forward(net):
        torch.manual_seed(0)  # the same drop paths in both
        return net(frames)

    (logits, grads), (logits_ref, grads_ref) = (training_step(net, forward) for net in (model, reference))
    torch.testing.assert_close(logits, logits_ref, rtol=1e-4, atol=1e-5)
    assert grads.keys() == grads_ref.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], rtol=1e-3, atol=1e-5, msg=f"gradient of {name}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvmath-python's cuBLASLt epilogues need a CUDA GPU")
def test_a_compiled_bf16_training_step_on_the_gpu_runs_through_cublaslt_as_through_a_tanh_gelu(monkeypatch):
    pytest.importorskip("nvmath", reason="the training GELU epilogue calls cuBLASLt through nvmath-python")
    import sifar.models.gelu_epilogue_training as candidate
    monkeypatch.setattr(candidate, "_PLANS", {})
    # no stochastic depth: compiled, the two models would draw different drop paths
    model, reference = with_tanh_gelu_reference(create_model("SIFAR-N-6", num_classes=5, drop_path_rate=0.0).cuda())
    frames = torch.randn(4, 8, 3, 64, 64, generator=torch.Generator().manual_seed(3)).cuda()

    def forward(net):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return torch.compile(net)(frames).float()

    (logits, grads), (logits_ref, grads_ref) = (training_step(net, forward) for net in (model, reference))
    assert candidate._PLANS, "no GEMM went through nvmath-python"
    assert ((logits - logits_ref).norm() / logits_ref.norm()).item() < 2e-2
    for name, grad in grads.items():
        error = ((grad - grads_ref[name]).norm() / grads_ref[name].norm().clamp_min(1e-12)).item()
        assert error < 5e-2, f"gradient of {name}: relative error {error:.3g}"


def test_the_trainer_refuses_the_epilogue_off_cuda_in_full_precision_or_without_nvmath(monkeypatch):
    with pytest.raises(ValueError, match="runs cuBLASLt on a CUDA GPU; this run's device is cpu"):
        check_training_gelu_epilogue(torch.device("cpu"), "bf16", "SIFAR-N-6")
    with pytest.raises(ValueError, match="needs --precision bf16 or fp16 \\(this run: fp32\\)"):
        check_training_gelu_epilogue(torch.device("cuda"), "fp32", "SIFAR-N-6")
    with pytest.raises(ValueError, match="needs --precision bf16 or fp16 \\(this run: fp8\\)"):
        check_training_gelu_epilogue(torch.device("cuda"), "fp8", "SIFAR-N-6")
    monkeypatch.setitem(sys.modules, "nvmath", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ValueError, match=r"through nvmath-python: pip install 'sifar\[gelu\]'"):
        check_training_gelu_epilogue(torch.device("cuda"), "bf16", "SIFAR-N-6")


def test_a_model_without_swin_mlps_is_refused_by_its_family_before_it_is_built_or_once_built():
    with pytest.raises(ValueError, match="--gelu-epilogue: SIFAR-R18 is a resnet model, without Swin MLPs"):
        check_training_gelu_epilogue(torch.device("cuda"), "bf16", "SIFAR-R18")
    # a timm: model passes the family check (a timm Swin has Swin MLPs); a built model without them is refused
    with pytest.raises(ValueError, match="--gelu-epilogue: .* has no Swin MLP"):
        use_training_gelu_epilogue(create_model("SIFAR-R18", num_classes=5))


def test_sifar_train_refuses_the_epilogue_for_a_cnn_before_any_data_is_read(tmp_path):
    result = run_train(["--shards", str(tmp_path / "no_shards"), "--output", str(tmp_path / "run"),
                        "--device", "cpu", "--gelu-epilogue", *TINY, "--model", "SIFAR-R18"])
    assert result.exit_code != 0 and "SIFAR-R18 is a resnet model, without Swin MLPs" in result.output, result.output
    assert not (tmp_path / "run" / "config.json").exists()


def test_sifar_train_refuses_the_epilogue_on_the_cpu_before_any_data_is_read(tmp_path):
    # shards that do not exist: the refusal names the device, so it came before the loader opened them
    result = run_train(["--shards", str(tmp_path / "no_shards"), "--output", str(tmp_path / "run"),
                        "--device", "cpu", "--gelu-epilogue", *TINY])
    assert result.exit_code != 0 and "--gelu-epilogue runs cuBLASLt on a CUDA GPU" in result.output, result.output
    assert not (tmp_path / "run" / "config.json").exists()
