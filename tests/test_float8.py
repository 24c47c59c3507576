"""FP8 training (--precision fp8, sifar/models/float8.py): which layers torchao converts, that the converted
model computes what the bf16 model does within float8's error and learns, that its checkpoints are ordinary,
and the refusals. torch runs float8 matmuls on the CPU, so this is real float8 arithmetic, slowly."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from torch import nn

from sifar.checkpoint import load_trained
from sifar.models import create_model
from sifar.models.float8 import FP8_RECIPES, convert_to_float8, float8_layers
from sifar.precision import autocast_for, describe_precision, grad_scaler

from test_train import TINY, data, run_train, step_losses  # noqa: F401 - data: the shards fixture

CPU = torch.device("cpu")


def nano() -> nn.Module:
    torch.manual_seed(0)
    return create_model("SIFAR-N-6", 10, frame_size=32)


def test_every_linear_layer_of_sixteen_multiples_is_chosen_but_the_classifier():
    model = nano()
    chosen = float8_layers(model)
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert "backbone.head.fc" in linears and "backbone.head.fc" not in chosen
    assert any(name.endswith("attn.qkv") for name in chosen) and any(name.endswith("mlp.fc2") for name in chosen)
    assert set(chosen) == {name for name, m in linears.items()
                           if name != "backbone.head.fc" and m.in_features % 16 == 0 and m.out_features % 16 == 0}


@pytest.mark.parametrize("recipe", FP8_RECIPES)
def test_a_converted_model_keeps_its_state_dict_computes_as_bf16_does_and_its_gradients_flow(recipe):
    plain, converted = nano(), nano()
    before = {k: v.clone() for k, v in converted.state_dict().items()}
    names = convert_to_float8(converted, CPU, recipe)
    assert all(type(converted.get_submodule(name)).__name__ == "Float8Linear" for name in names)
    granularity = {converted.get_submodule(name).config.cast_config_input.scaling_granularity.name for name in names}
    assert granularity == {"tensorwise": {"TENSORWISE"}, "rowwise": {"AXISWISE"}}[recipe]
    after = converted.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    frames = torch.randn(4, 8, 3, 32, 32)
    with autocast_for(CPU, "fp8"):
        logits = converted(frames)
    with autocast_for(CPU, "bf16"):
        bf16 = plain(frames).float()
    with torch.no_grad():
        fp32 = plain(frames)
    assert logits.dtype == torch.bfloat16

    def error(found: torch.Tensor) -> float:
        return ((found.float() - fp32).norm() / fp32.norm()).item()

    assert error(logits) < 2 * error(bf16), f"fp8 logits {error(logits):.3f} from fp32's, bf16 {error(bf16):.3f}"
    logits.float().logsumexp(-1).sum().backward()
    assert all(converted.get_submodule(name).weight.grad.abs().sum() > 0 for name in names)


def test_an_unknown_fp8_recipe_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown fp8 recipe 'blockwise': one of tensorwise, rowwise"):
        convert_to_float8(nano(), CPU, "blockwise")


def test_fp8_is_bf16_autocast_around_its_linear_layers_and_needs_no_loss_scaler():
    assert not grad_scaler(CPU, "fp8").is_enabled()
    assert "fp8 linear layers" in describe_precision(CPU, "fp8")


def test_sifar_train_with_fp8_trains_resumes_step_for_step_and_saves_an_ordinary_checkpoint(data,  # noqa: F811
                                                                                            tmp_path):
    common = ["--shards", str(data["shards"]), "--epochs", "2", "--steps-per-epoch", "3", "--save-every", "100",
              "--precision", "fp8", *TINY]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    result = run_train([*common, "--output", str(straight)])
    assert result.exit_code == 0, result.output
    assert "fp8 linear layers" in result.output and "linear layers in fp8" in result.output
    assert run_train([*common, "--output", str(broken), "--max-steps", "4"]).exit_code == 0
    assert run_train([*common, "--output", str(broken)]).exit_code == 0  # resumes mid-epoch 2
    expected, resumed = step_losses(straight), step_losses(broken)
    assert [step for step, _ in resumed] == [1, 2, 3, 4, 5, 6] and all(math.isfinite(v) for _, v in expected)
    assert [v for _, v in resumed] == pytest.approx([v for _, v in expected], rel=1e-5, abs=1e-6)
    assert json.loads((straight / "config.json").read_text())["precision"] == "fp8"
    trained = load_trained(straight / "last.pt")  # plain layers: the weights fp8 training left
    assert not any("Float8" in type(m).__name__ for m in trained.model.modules())
    untrained = nano().state_dict()
    assert any(not torch.equal(v, untrained[k]) for k, v in trained.model.state_dict().items() if "qkv" in k)


def test_fp8_is_refused_without_torchao_naming_the_extra_before_any_data_is_read(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchao.float8", None)  # as if torchao were not installed
    with pytest.raises(ValueError, match=r"pip install 'sifar\[fp8\]'"):
        convert_to_float8(nano(), CPU)
    # shards that do not exist: the refusal names torchao, so it came before the loader opened them
    result = run_train(["--shards", str(tmp_path / "no_shards"), "--output", str(tmp_path / "run"),
                        "--precision", "fp8", *TINY])
    assert result.exit_code != 0 and "pip install 'sifar[fp8]'" in result.output, result.output
    assert not (tmp_path / "run" / "config.json").exists()


def test_fp8_is_refused_for_a_model_without_a_linear_layer_it_can_take():
    torch.manual_seed(0)
    resnet = create_model("SIFAR-R18", 10, frame_size=32)  # its one linear layer is the classifier
    with pytest.raises(ValueError, match="sifar_resnet18 has no linear layer"):
        convert_to_float8(resnet, CPU)
