"""Swin blocks in window order (tools/window_order.py): the same function, parameters and random draws as
timm's block, on the CPU (the compiled GPU step is checked in tests/test_gpu.py)."""

import copy

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock

from sifar.models import create_model
from tools.window_order import WindowOrderSwinBlock, use_window_order


def _pair(name: str, drop_path: float):
    torch.manual_seed(0)
    model = create_model(name, 10, attention="sdpa", drop_path_rate=drop_path)
    reordered = copy.deepcopy(model)
    return model, reordered, use_window_order(reordered)


@pytest.mark.parametrize("name", ["SIFAR-N-6", "SIFAR-M-12"])  # windows inside the map; windows that straddle frames
def test_the_model_gives_the_same_logits(name):
    model, reordered, blocks = _pair(name, 0.0)
    assert blocks == sum(isinstance(m, SwinTransformerBlock) for m in model.modules())
    frames = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reordered.eval()(frames), model.eval()(frames), atol=1e-6, rtol=1e-5)


def test_training_draws_the_same_drop_paths_and_gives_the_same_gradients():
    model, reordered, _ = _pair("SIFAR-M-12", 0.3)
    frames = torch.randn(2, 8, 3, 64, 64)
    losses = []
    for net in (model, reordered):
        torch.manual_seed(1)  # the same draws: one per sample and block, in the same order
        loss = net.train()(frames).square().mean()
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0])
    for (name, a), b in zip(model.named_parameters(), reordered.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_the_blocks_keep_their_parameters_and_checkpoint_keys():
    model = create_model("SIFAR-N-6", 10, attention="sdpa")
    tensors = {name: t for name, t in model.state_dict(keep_vars=True).items()}
    assert use_window_order(model) == use_window_order(model) > 0  # a second call changes nothing
    assert all(type(m) is WindowOrderSwinBlock for m in model.modules() if isinstance(m, SwinTransformerBlock))
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(tensors) and all(after[k] is tensors[k] for k in tensors)


@pytest.mark.parametrize("shift", [0, 2])
def test_a_map_that_needs_padding_takes_timms_path(shift):
    torch.manual_seed(0)
    block = SwinTransformerBlock(dim=16, input_resolution=(10, 10), num_heads=2, window_size=4, shift_size=shift)
    reordered = copy.deepcopy(block)
    reordered.__class__ = WindowOrderSwinBlock
    x = torch.randn(2, 10, 10, 16)
    with torch.no_grad():
        torch.testing.assert_close(reordered.eval()(x), block.eval()(x))


def test_a_model_without_swin_blocks_is_refused():
    with pytest.raises(ValueError, match="no Swin block"):
        use_window_order(create_model("SIFAR-R18", 10))
