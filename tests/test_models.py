import pytest
import torch

from sifar.models import compile_model, create_model, get_config, list_configs
from sifar.models.swin import SifarSwin, _in_autocast_dtype, embed_patches
from sifar.models.window_attention import materialize, window_regions

SMALL = {"frame_size": 32}  # CPU-sized frames for the CNN configs


def test_aliases_and_official_names_resolve_to_the_same_config():
    assert get_config("SIFAR-B-12").name == "sifar_base_patch4_window12_192_3x3"
    assert get_config("sifar-b-12") is get_config("sifar_base_patch4_window12_192_3x3")
    assert get_config("SIFAR-R50-C21-11").arch["large_kernels"] == (21, 11)


def test_unknown_name_lists_the_registered_models():
    with pytest.raises(KeyError, match="sifar_base_patch4_window12_192_3x3"):
        create_model("sifar_huge", num_classes=10)


@pytest.mark.parametrize("config", list_configs(), ids=lambda c: c.name)
def test_every_config_builds_with_the_papers_geometry(config):
    with torch.device("meta"):
        model = create_model(config.name, num_classes=174)
        logits = model(torch.empty(2, config.num_frames, 3, config.frame_size, config.frame_size))
    assert logits.shape == (2, 174)
    if config.family == "swin":
        windows = [stage.blocks[0].window_size for stage in model.backbone.layers]
        last_grid = config.grid[0] * config.frame_size // 32
        expected_last = last_grid if config.arch["global_last"] else config.arch["window_size"][-1]
        assert windows[-1] == (expected_last, expected_last)  # the last stage attends globally
        assert [w[0] for w in windows[:3]] == list(config.arch["window_size"][:3])


@pytest.mark.parametrize("name, params_m", [("SIFAR-B-12", 87), ("SIFAR-B-14-16f", 87), ("SIFAR-L-14", 196)])
def test_parameter_counts(name, params_m):
    with torch.device("meta"):
        model = create_model(name, num_classes=400)
    assert int(sum(p.numel() for p in model.parameters()) / 1e6) == params_m  # the paper truncates


@pytest.mark.parametrize("name, kwargs", [
    ("SIFAR-N-6", {}),
    ("SIFAR-N-6", {"frame_embed": True, "num_frames": 4, "layout": "2x2"}),
    ("SIFAR-N-6", {"num_frames": 12}),  # 3x4, non-square windows in the last stage
    ("SIFAR-R18", SMALL),
    ("SIFAR-R50-C7", SMALL),
    ("timm:resnet18", SMALL),
    ("timm:vit_tiny_patch16_224", {"frame_size": 32, "num_frames": 4}),
    ("SIFAR-VGG-T", {}),
    ("SIFAR-VGG-T", {"frame_size": 32, "num_frames": 4, "layout": "1x4"}),
])
def test_small_models_train_on_cpu(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, **kwargs)
    frames = torch.randn(2, model.num_frames, 3, model.frame_size, model.frame_size)
    logits = model(frames)
    assert logits.shape == (2, 5)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_frame_embedding_is_added_per_frame_cell():
    model = create_model("SIFAR-N-6", num_classes=3, frame_embed=True).eval()
    backbone = model.backbone
    assert isinstance(backbone, SifarSwin)
    assert backbone.frame_pos_embed.shape == (1, 9, 32)
    frames = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        backbone.frame_pos_embed.zero_()
        before = model(frames)
        backbone.frame_pos_embed[0, 4] = torch.linspace(-1, 1, 32)  # only the centre cell (frame 5) moves
        after = model(frames)
    offsets = backbone.frame_pos_embed.detach()[0, backbone.frame_index][..., -1]  # (48, 48) tokens, 16x16 a frame
    assert offsets[16:32, 16:32].eq(1).all() and offsets.sum() == 16 * 16
    assert not torch.allclose(before, after)


def test_patches_are_embedded_as_timms_patch_embed_does():
    embed = create_model("SIFAR-N-6", num_classes=4).backbone.patch_embed
    image = torch.randn(2, 3, 192, 192)
    with torch.no_grad():
        torch.testing.assert_close(embed_patches(embed, image), embed(image), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="192x192 super image"):
        embed_patches(embed, torch.randn(1, 3, 192, 196))


def test_the_stream_enters_the_stages_in_autocasts_dtype():
    """PatchEmbed's LayerNorm returns fp32 under CUDA autocast (tests/test_gpu.py checks the whole model)."""
    x = torch.randn(2, 3)
    assert _in_autocast_dtype(x) is x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _in_autocast_dtype(x).dtype == torch.bfloat16
        assert _in_autocast_dtype(x.to("meta")).dtype == torch.float32  # no autocast for meta tensors


@pytest.mark.parametrize("impl", ["auto", "sdpa", "flex"])
def test_attention_implementations_agree_with_the_explicit_path(impl):
    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", num_classes=4, depths=(2, 2, 2, 2), attention=impl).eval()
    plain = create_model("SIFAR-N-6", num_classes=4, depths=(2, 2, 2, 2), attention="eager").eval()
    for module in model.modules():  # make the relative-position bias matter
        if hasattr(module, "relative_position_bias_table"):
            module.relative_position_bias_table.data.normal_(std=1.0)
    plain.load_state_dict(model.state_dict())
    frames = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(frames), plain(frames), atol=1e-5, rtol=1e-5)


def test_window_regions_follow_the_shift_mask():
    from timm.models.swin_transformer import SwinTransformerBlock

    block = SwinTransformerBlock(dim=8, input_resolution=(12, 12), num_heads=1, window_size=6, shift_size=3)
    mask = block.attn_mask  # (4 windows, 36, 36): 0 within a region, -100 across
    regions = window_regions(mask)
    same = regions[:, :, None] == regions[:, None, :]
    assert torch.equal(same, mask == 0)
    assert [len(r.unique()) for r in regions] == [1, 2, 2, 4]


def test_materialized_bias_is_an_opaque_copy_with_an_identity_gradient():
    table = torch.randn(5, 3, requires_grad=True)
    copy = materialize(table * 2)
    assert torch.equal(copy, table * 2)
    (copy * torch.arange(3.0)).sum().backward()
    assert torch.equal(table.grad, 2 * torch.arange(3.0).expand(5, 3))
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(str(graph_module.graph))
        return graph_module

    model = create_model("SIFAR-N-6", num_classes=4, attention="flex").eval()  # 5 Swin blocks
    clips = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        compiled = torch.compile(model, backend=record)(clips)
        assert torch.equal(compiled, model(clips))
    # each block's bias reaches the compiler as one node it cannot look into
    assert sum(graph.count("sifar.materialize") for graph in graphs) == 5


def test_unknown_attention_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown attention implementation 'fast'"):
        create_model("SIFAR-N-6", num_classes=4, attention="fast")


@pytest.mark.parametrize("name", ["SIFAR-N-6", "SIFAR-VGG-T"])
def test_activation_checkpointing_gives_the_same_gradients(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, drop_path_rate=0.0)  # no random drop path
    checkpointed = create_model(name, num_classes=4, drop_path_rate=0.0, grad_checkpointing=True)
    checkpointed.load_state_dict(model.state_dict())
    frames = torch.randn(2, 8, 3, model.frame_size, model.frame_size)
    model(frames).sum().backward()
    checkpointed(frames).sum().backward()
    for (name, a), b in zip(model.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_compiled_training_model_gives_the_eager_logits_and_gradients():
    """The compile sifar-train --compile runs (its Inductor options included), here on CPU (~1 minute)."""
    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", num_classes=4, drop_path_rate=0.0)
    frames = torch.randn(2, 8, 3, 64, 64)
    expected = model(frames)
    expected.square().mean().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    got = compile_model(model, training=True)(frames)
    got.square().mean().backward()
    torch.testing.assert_close(got, expected)
    for (name, p), expected_grad in zip(model.named_parameters(), eager_grads):
        torch.testing.assert_close(p.grad, expected_grad, msg=name)


def test_wrong_clip_shape_is_a_clear_error():
    model = create_model("SIFAR-N-6", num_classes=4)
    with pytest.raises(ValueError, match="expects 8 frames of 64x64, got 4 frames of 64x64"):
        model(torch.zeros(1, 4, 3, 64, 64))
    with pytest.raises(ValueError, match="B, T, C, H, W"):
        model(torch.zeros(1, 3, 64, 64))


def test_frame_embedding_only_for_swin():
    with pytest.raises(ValueError, match="Swin models only"):
        create_model("SIFAR-R18", num_classes=4, frame_embed=True)


def test_large_kernel_blocks_are_appended_to_the_last_stage():
    model = create_model("SIFAR-R50-C21-11", num_classes=4, frame_size=32)
    layer4 = model.backbone.layer4
    assert [layer4[-2].conv2.kernel_size, layer4[-1].conv2.kernel_size] == [(21, 21), (11, 11)]
    assert model.new_module_prefixes() == ("backbone.layer4.3.", "backbone.layer4.4.")


def test_no_weight_decay_names_exist():
    model = create_model("SIFAR-N-6", num_classes=4, frame_embed=True)
    names = dict(model.named_parameters())
    skip = model.no_weight_decay()
    assert "backbone.frame_pos_embed" in skip
    assert any("relative_position_bias_table" in n for n in skip)
    assert skip <= set(names)


def test_positional_cnn_sizes_its_head_for_the_super_image_and_refuses_what_it_cannot_do():
    model = create_model("SIFAR-VGG-T", num_classes=7, drop_path_rate=0.0)
    assert model.backbone.feature_size == (9, 9)    # 72 px super image at stride 8
    assert model.backbone.get_classifier().out_features == 7
    wide = create_model("SIFAR-VGG-T", num_classes=7, num_frames=8, layout="2x4", frame_size=32)
    assert wide.backbone.feature_size == (8, 16)
    with pytest.raises(ValueError, match="stochastic depth"):
        create_model("SIFAR-VGG-T", num_classes=7, drop_path_rate=0.1)
    with pytest.raises(ValueError, match="Swin models only"):
        create_model("SIFAR-VGG-T", num_classes=7, frame_embed=True)
    with pytest.raises(ValueError, match="does not divide into the model's stride 8"):
        create_model("SIFAR-VGG-T", num_classes=7, frame_size=30)


def test_positional_cnn_maps_and_weights_round_trip(tmp_path):
    """The CAM path (feature map, then head) gives the model's logits; its own weights load by file, and
    with another class count everything but the classifier loads."""
    torch.manual_seed(0)
    model = create_model("SIFAR-VGG-T", num_classes=5).eval()
    frames = torch.randn(2, 8, 3, 24, 24)
    torch.testing.assert_close(model.head_from_feature_map(model.feature_map(frames)), model(frames))
    path = tmp_path / "vgg.pt"
    torch.save(model.state_dict(), path)
    same = create_model("SIFAR-VGG-T", num_classes=5, pretrained=path).eval()
    torch.testing.assert_close(same(frames), model(frames))
    other = create_model("SIFAR-VGG-T", num_classes=3, pretrained=path)
    torch.testing.assert_close(other.backbone.pre_logits[2].weight, model.backbone.pre_logits[2].weight)


@pytest.mark.parametrize("name", ["SIFAR-VGG-T", "timm:resnet18"])
def test_swin_only_options_reach_only_the_families_that_have_them(name):
    with pytest.raises(ValueError, match="frame position embedding is defined for Swin models only"):
        create_model(name, 3, frame_embed=True)
    assert create_model(name, 3, attention="sdpa", frame_size=24).num_frames == 8  # a kernel choice: ignored


@pytest.mark.parametrize("name, strides", [("SIFAR-N-6", (4, 8, 16, 32)), ("SIFAR-R18", (4, 8, 16, 32)),
                                           ("SIFAR-R18-C7", (4, 8, 16, 32)), ("SIFAR-VGG-T", (1, 2, 4, 8, 8))])
def test_every_stage_map_leads_through_the_later_stages_to_the_models_logits(name, strides):
    """What a map of an earlier stage is drawn from (sifar.cam): each stage's output, (B, C, h, w) at its
    stride, run through the stages after it and the head, gives the model's own logits."""
    torch.manual_seed(0)
    model = create_model(name, 3).eval()
    frames = torch.randn(2, 8, 3, model.frame_size, model.frame_size)
    side = 3 * model.frame_size  # the 3x3 super image
    with torch.no_grad():
        logits = model(frames)
        assert len(model.stages()) == len(strides)
        for stage, stride in enumerate(strides):
            features = model.feature_map(frames, stage)
            assert features.shape[0] == 2 and features.shape[-2:] == (side // stride, side // stride), stage
            torch.testing.assert_close(model.head_from_feature_map(model.later_stages(features, stage)), logits)
        torch.testing.assert_close(model.feature_map(frames, -1), model.feature_map(frames, len(strides) - 1))
    with pytest.raises(ValueError, match=f"has {len(strides)} stages .* got {len(strides)}"):
        model.feature_map(frames, len(strides))
    with pytest.raises(ValueError, match="or -1 for the last"):
        model.stage_index(-len(strides) - 1)
