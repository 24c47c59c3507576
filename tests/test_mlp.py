"""The Swin MLP with GELU in its GEMM epilogue (sifar.models.mlp). On the CPU torch's op computes the exact GELU, so
the fused function is compared exactly here; the CUDA path (tanh GELU in cuBLASLt) is tested in test_gpu.py."""

import pytest
import torch
from timm.layers import Mlp
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from sifar.models import create_model
from sifar.models.mlp import GeluEpilogueMlp, linear_gelu, set_gelu_epilogue


@pytest.mark.parametrize("shape", [(7, 16), (2, 3, 5, 16)])
def test_linear_gelu_is_the_linear_layer_then_gelu(shape):
    torch.manual_seed(0)
    linear, x = nn.Linear(16, 24), torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(linear_gelu(x, linear), nn.functional.gelu(linear(x)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fused, plain = linear_gelu(x, linear), nn.functional.gelu(linear(x))
    assert fused.dtype == plain.dtype == torch.bfloat16 and fused.shape == (*shape[:-1], 24)
    torch.testing.assert_close(fused, plain)


def test_every_swin_block_gets_the_epilogue_mlp_with_its_own_parameters_and_checkpoint_keys():
    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", num_classes=4)
    plain = SwinTransformer(img_size=192, window_size=6, embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                            num_classes=4)
    mlps = [block.mlp for stage in model.backbone.layers for block in stage.blocks]
    assert len(mlps) == 5 and all(isinstance(mlp, GeluEpilogueMlp) and mlp.gelu_epilogue for mlp in mlps)
    assert set(model.backbone.state_dict()) == set(plain.state_dict())
    before = [(mlp.fc1.weight, mlp.fc2.bias) for mlp in mlps]
    set_gelu_epilogue(model, enabled=False)
    assert [(mlp.fc1.weight, mlp.fc2.bias) for mlp in mlps] == before
    assert not any(mlp.gelu_epilogue for mlp in mlps)


def test_off_the_gpu_the_model_computes_as_timms_mlp_does():
    """The CPU, training, gradients and fp32 all keep timm's two passes: the same logits with the epilogue on or off."""
    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", num_classes=4).eval()
    clips = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        fused = model(clips)
        set_gelu_epilogue(model, enabled=False)
        assert torch.equal(model(clips), fused)


def test_the_epilogue_never_applies_on_the_cpu():
    """Where torch's op is two passes anyway (the conditions on CUDA are tested in test_gpu.py)."""
    with torch.no_grad():
        assert not GeluEpilogueMlp(8, 32).eval().epilogue_applies(torch.randn(2, 8, dtype=torch.bfloat16))


def test_mlps_that_are_not_exact_gelu_are_left_alone():
    block_model = create_model("SIFAR-N-6", num_classes=4)
    block = block_model.backbone.layers[0].blocks[0]
    block.mlp = Mlp(32, 128, act_layer=nn.ReLU)
    set_gelu_epilogue(block_model)
    assert type(block.mlp) is Mlp
