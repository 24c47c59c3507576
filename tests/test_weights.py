"""Weight loading from every supported format, each written by the test itself."""

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer

from reference_official_sifar import OfficialSifar
from sifar.models import CheckpointError, create_model, load_pretrained
from sifar.models.weights import resize_frame_embed, unwrap_state_dict

NANO = dict(embed_dim=32, depths=(2, 2, 2, 2), heads=(1, 2, 4, 8))


def nano(num_classes=10, **kwargs):
    return create_model("SIFAR-N-6", num_classes, depths=NANO["depths"], **kwargs).eval()


def microsoft_swin_state_dict(window=7, num_classes=1000):
    """An ImageNet Swin checkpoint in Microsoft's layout (downsample at the end of each stage)."""
    ref = OfficialSifar(1, 1, 224, NANO["embed_dim"], NANO["depths"], NANO["heads"], (window,) * 4, num_classes,
                        ape=False)
    return ref.state_dict()


def test_official_sifar_checkpoint_gives_the_same_logits(tmp_path):
    torch.manual_seed(0)
    official = OfficialSifar(8, 3, 64, NANO["embed_dim"], NANO["depths"], NANO["heads"], (6, 6, 6, 6), 10).eval()
    path = tmp_path / "sifar_official.pth"
    torch.save({"model": official.state_dict(), "epoch": 29}, path)
    model = nano(frame_embed=True)
    report = load_pretrained(model, path)
    assert report.fresh == {}
    frames = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        expected = official(frames.flatten(1, 2))  # the official input: frames stacked on channels
        got = model(frames)
    assert (expected - got).abs().max() < 1e-4


def test_official_checkpoint_needs_the_frame_embedding(tmp_path):
    official = OfficialSifar(8, 3, 64, NANO["embed_dim"], NANO["depths"], NANO["heads"], (6, 6, 6, 6), 10)
    torch.save({"model": official.state_dict()}, tmp_path / "ssv2.pth")
    with pytest.raises(CheckpointError, match="frame_pos_embed.*frame_embed=True|frame_embed=True"):
        load_pretrained(nano(), tmp_path / "ssv2.pth")


def test_microsoft_imagenet_swin_resizes_windows_and_drops_the_head(tmp_path):
    torch.manual_seed(0)
    state = microsoft_swin_state_dict(window=7, num_classes=1000)
    torch.save({"model": state}, tmp_path / "swin_imagenet.pth")
    model = nano(num_classes=10, frame_embed=True)
    report = load_pretrained(model, tmp_path / "swin_imagenet.pth")
    assert set(report.fresh) == {"backbone.head.fc.weight", "backbone.head.fc.bias", "backbone.frame_pos_embed"}
    # stage 0 block 0 had a 13x13 table (window 7); the model's window is 6 (11x11), the last stage's 6 too
    table = model.backbone.layers[0].blocks[0].attn.relative_position_bias_table
    assert table.shape == (11 * 11, 1)
    # Microsoft's stage-0 downsample is timm's stage-1 downsample
    torch.testing.assert_close(model.backbone.layers[1].downsample.reduction.weight,
                               state["layers.0.downsample.reduction.weight"])
    torch.testing.assert_close(model.backbone.layers[0].blocks[1].mlp.fc2.weight,
                               state["layers.0.blocks.1.mlp.fc2.weight"])


def test_bicubic_window_resize_keeps_a_constant_table(tmp_path):
    state = microsoft_swin_state_dict(window=7)
    for key in state:
        if key.endswith("relative_position_bias_table"):
            state[key] = torch.full_like(state[key], 0.25)
    torch.save(state, tmp_path / "flat.pth")
    model = nano(num_classes=1000)
    load_pretrained(model, tmp_path / "flat.pth")
    for block in model.backbone.layers[0].blocks:
        torch.testing.assert_close(block.attn.relative_position_bias_table,
                                   torch.full_like(block.attn.relative_position_bias_table, 0.25))


def test_timm_swin_state_dict(tmp_path):
    torch.manual_seed(0)
    timm_swin = SwinTransformer(img_size=192, embed_dim=32, depths=NANO["depths"], num_heads=NANO["heads"],
                                window_size=6, num_classes=10)
    torch.save(timm_swin.state_dict(), tmp_path / "timm_swin.pth")
    model = nano(num_classes=10)
    assert load_pretrained(model, tmp_path / "timm_swin.pth").fresh == {}
    frames = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        from sifar.layout import to_super_image
        torch.testing.assert_close(model(frames), timm_swin.eval()(to_super_image(frames, 3, 3)))


def test_own_checkpoint_round_trip_including_ddp_prefix(tmp_path):
    torch.manual_seed(0)
    source = nano(frame_embed=True)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"model": state, "optimizer": {}, "epoch": 3}, tmp_path / "last.pt")
    target = nano(frame_embed=True)
    load_pretrained(target, tmp_path / "last.pt")
    frames = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(source(frames), target(frames))


def test_frame_count_change_interpolates_the_frame_embedding(tmp_path):
    source = create_model("SIFAR-N-6", 10, num_frames=16, frame_embed=True)  # 4x4 -> 16 cells
    torch.save(source.state_dict(), tmp_path / "16f.pt")
    target = nano(frame_embed=True)  # 3x3 -> 9 cells
    target_default = create_model("SIFAR-N-6", 10, frame_embed=True)
    load_pretrained(target_default, tmp_path / "16f.pt")
    embed = target_default.backbone.frame_pos_embed
    assert embed.shape == (1, 9, 32)
    torch.testing.assert_close(embed[0, 0], source.backbone.frame_pos_embed[0, 0])
    torch.testing.assert_close(embed[0, -1], source.backbone.frame_pos_embed[0, -1])
    assert target is not None


def test_resize_frame_embed_is_linear():
    embed = torch.arange(4.0).view(1, 4, 1)
    assert resize_frame_embed(embed, 7).flatten().tolist() == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5, 3])


def test_cnn_sifar_from_an_imagenet_resnet(tmp_path):
    import timm

    resnet = timm.create_model("resnet50", num_classes=1000)
    torch.save(resnet.state_dict(), tmp_path / "resnet50.pth")
    model = create_model("SIFAR-R50-C21", num_classes=7, frame_size=32)
    report = load_pretrained(model, tmp_path / "resnet50.pth")
    assert any(k.startswith("backbone.layer4.3.") for k in report.fresh)
    assert "backbone.fc.weight" in report.fresh
    torch.testing.assert_close(model.backbone.conv1.weight, resnet.conv1.weight)


def test_a_checkpoint_of_another_architecture_names_the_keys(tmp_path):
    other = create_model("SIFAR-N-6", 10, embed_dim=48)
    torch.save(other.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="wide.pt"):
        load_pretrained(nano(), tmp_path / "wide.pt")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = nano().state_dict()
    state.pop("backbone.layers.2.blocks.1.mlp.fc1.weight")
    state["backbone.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(nano(), tmp_path / "broken.pt")
    assert "layers.2.blocks.1.mlp.fc1.weight" in str(err.value) and "extra.weight" in str(err.value)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.txt is not a readable PyTorch checkpoint"):
        load_pretrained(nano(), tmp_path / "notes.txt")
    with pytest.raises(CheckpointError, match="no checkpoint file at"):
        load_pretrained(nano(), tmp_path / "missing.pt")
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_pretrained(nano(), tmp_path / "empty.pt")


def test_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    source = nano()
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    model = nano()
    assert load_pretrained(model, tmp_path / "w.safetensors").fresh == {}
    torch.testing.assert_close(model.backbone.head.fc.weight, source.backbone.head.fc.weight)
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cut.safetensors is not a readable safetensors file"):
        load_pretrained(model, tmp_path / "cut.safetensors")


def test_create_model_loads_pretrained(tmp_path):
    source = nano()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = create_model("SIFAR-N-6", 10, pretrained=tmp_path / "w.pt", depths=NANO["depths"]).eval()
    frames = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(frames), source(frames))


def test_unwrap_nested_state_dict():
    tensor = torch.zeros(1)
    assert unwrap_state_dict({"state_dict": {"module.a": tensor}}) == {"a": tensor}


def test_rel_pos_table_resize_is_bicubic():
    import torch.nn.functional as F

    from sifar.models.weights import resize_rel_pos_table

    table = torch.randn(13 * 13, 3)
    resized = resize_rel_pos_table(table, (12, 12))
    assert resized.shape == (23 * 23, 3)
    expected = F.interpolate(table.T.reshape(1, 3, 13, 13), size=(23, 23), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resized, expected.reshape(3, -1).T)
    assert resize_rel_pos_table(table, (7, 7)) is table
