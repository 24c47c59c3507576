"""Weights by name through the real timm and huggingface_hub code, offline, from a cache the test writes.

A test that fetches points HF_HOME (and TORCH_HOME) at its own folder with HF_HUB_OFFLINE=1, and lays weights
out as huggingface_hub's cache does (``hub/models--org--name/{blobs,snapshots,refs}``): no network is used.
"""

import hashlib
import importlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg, save_for_hf

from sifar.models import CheckpointError, create_model, load_pretrained
from sifar.models.hub_weights import HubWeights, fetch_weights, resolve_weights

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a snapshot's commit id: 40 hex digits


@contextmanager
def hub_environment(tmp_path: Path, offline: bool = True) -> Iterator[Path]:
    """An empty Hugging Face hub cache under a new HF_HOME (and TORCH_HOME), as at program start.

    huggingface_hub reads HF_HOME and HF_HUB_OFFLINE into its constants when imported, long before a test
    runs; reloading that module reads them again, as a program started with them set would.
    """
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HOME", str(tmp_path / "hf"))
        env.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
        env.setenv("TORCH_HOME", str(tmp_path / "torch"))
        for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
            env.delenv(name, raising=False)
        importlib.reload(huggingface_hub.constants)
        assert huggingface_hub.constants.HF_HUB_CACHE == str(tmp_path / "hf" / "hub")
        try:
            yield tmp_path / "hf" / "hub"
        finally:
            env.undo()
            importlib.reload(huggingface_hub.constants)


@pytest.fixture
def hub_cache(tmp_path):
    """The hub cache of an offline program (HF_HUB_OFFLINE=1)."""
    with hub_environment(tmp_path) as cache:
        yield cache


def cache_repo(hub_cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Add ``files`` to the cache as a download would: blobs named by hash, snapshot links, refs/main."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    for folder in (snapshot, repo / "blobs", repo / "refs"):
        folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        blob = repo / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
        shutil.copyfile(source, blob)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def safetensors_file(path: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path


def distinct_test_resnet() -> dict[str, torch.Tensor]:
    """test_resnet's weights, each tensor unlike a fresh initialisation."""
    torch.manual_seed(0)
    return {k: torch.randn_like(v) + 3 if v.is_floating_point() else v
            for k, v in timm.create_model("test_resnet").state_dict().items()}


def test_timm_name_loads_the_cached_weights_and_their_normalisation(hub_cache, tmp_path):
    weights = distinct_test_resnet()
    snapshot = cache_repo(hub_cache, "timm/test_resnet.r160_in1k",
                          {"model.safetensors": safetensors_file(tmp_path / "w.safetensors", weights)})
    model = create_model("timm:test_resnet", 7, pretrained="test_resnet.r160_in1k")
    own = model.backbone.state_dict()
    assert own["fc.weight"].shape == (7, weights["fc.weight"].shape[1])  # a head for 7 classes, left fresh
    for key, tensor in weights.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(own[key], tensor, msg=key)

    model.mean, model.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    report = load_pretrained(model, "test_resnet.r160_in1k")
    cfg = get_pretrained_cfg("test_resnet.r160_in1k")
    assert (model.mean, model.std) == (cfg.mean, cfg.std) == ((0.5,) * 3, (0.5,) * 3)
    assert set(report.fresh) == {"backbone.fc.weight", "backbone.fc.bias"}
    assert report.source == f"test_resnet.r160_in1k ({snapshot / 'model.safetensors'})"


def test_safetensors_is_preferred_and_pytorch_model_bin_read_where_alone(hub_cache, tmp_path):
    name = "test_resnet.r160_in1k"
    model = create_model("timm:test_resnet", 1000)
    from_bin = {k: v + 1 if v.is_floating_point() else v for k, v in model.backbone.state_dict().items()}
    torch.save(from_bin, tmp_path / "pytorch_model.bin")
    snapshot = cache_repo(hub_cache, f"timm/{name}", {"pytorch_model.bin": tmp_path / "pytorch_model.bin"})
    assert fetch_weights(resolve_weights(name))[0] == snapshot / "pytorch_model.bin"
    assert load_pretrained(model, name).fresh == {}  # read by torch.load
    torch.testing.assert_close(model.backbone.conv1[0].weight, from_bin["conv1.0.weight"])

    from_safetensors = distinct_test_resnet()
    cache_repo(hub_cache, f"timm/{name}",
               {"model.safetensors": safetensors_file(tmp_path / "model.safetensors", from_safetensors)})
    assert fetch_weights(resolve_weights(name))[0] == snapshot / "model.safetensors"
    load_pretrained(model, name)
    torch.testing.assert_close(model.backbone.conv1[0].weight, from_safetensors["conv1.0.weight"])


def test_hf_hub_repository_of_timm_weights(hub_cache, tmp_path):
    exported = timm.create_model("test_resnet")
    with torch.no_grad():
        exported.conv1[0].weight.fill_(0.25)
    normalisation = {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    save_for_hf(exported, tmp_path / "export", model_config={"pretrained_cfg": normalisation},
                safe_serialization=True)
    cache_repo(hub_cache, "sifar-tests/tiny-resnet", {
        name: tmp_path / "export" / name for name in ("config.json", "model.safetensors")})

    model = create_model("timm:test_resnet", 5, pretrained="hf-hub:sifar-tests/tiny-resnet")
    assert torch.all(model.backbone.conv1[0].weight == 0.25)
    torch.testing.assert_close(model.backbone.layer1[0].conv1.weight, exported.layer1[0].conv1.weight)
    assert (model.mean, model.std) == (normalisation["mean"], normalisation["std"])


@pytest.mark.parametrize("name, num_classes, size", [
    ("swin_base_patch4_window12_384.ms_in22k", 21841, 384),
    ("swin_base_patch4_window7_224.ms_in22k_ft_in1k", 1000, 224),
])
def test_the_papers_swin_weights_resolve_to_their_cached_file(hub_cache, tmp_path, name, num_classes, size):
    """The paper's ImageNet Swin-B names go to timm's hub repository and its cached model.safetensors.

    A real Swin-B file is 350 MB, too big to write in a test: a small stand-in file checks the resolution
    to the cached path, not a load into a model (loading converted Swin weights is tested in test_weights).
    """
    snapshot = cache_repo(hub_cache, f"timm/{name}", {
        "model.safetensors": safetensors_file(tmp_path / "stand_in.safetensors", {"x": torch.zeros(1)})})
    weights = resolve_weights(name)
    assert weights.pretrained_cfg["hf_hub_id"] == f"timm/{name}"
    path, cfg = fetch_weights(weights)
    assert path == snapshot / "model.safetensors"
    assert (cfg["num_classes"], cfg["input_size"]) == (num_classes, (3, size, size))
    assert (cfg["mean"], cfg["std"]) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_timm_weights_published_only_at_a_url_come_from_the_torch_hub_cache(hub_cache, tmp_path):
    name = "legacy_seresnet18.in1k"  # one of the few timm weights with no hub repository
    url = get_pretrained_cfg(name).url
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError, match=f"{name}: .*torch.hub cache and HF_HUB_OFFLINE is set.*{url}"):
        fetch_weights(resolve_weights(name))
    torch.save({"w": torch.zeros(1)}, checkpoints / os.path.basename(url))
    assert fetch_weights(resolve_weights(name))[0] == checkpoints / os.path.basename(url)


def test_a_failed_url_download_names_the_url_and_the_cache(tmp_path):
    url = (tmp_path / "nowhere" / "weights.pth").as_uri()  # urllib's error for a missing file, with no network
    with hub_environment(tmp_path, offline=False), pytest.raises(FileNotFoundError) as err:
        fetch_weights(HubWeights("no_weights", {"url": url}))
    assert str(err.value).startswith(f"no_weights: could not download {url} into {tmp_path}/torch/hub/checkpoints")


def test_unknown_name_names_the_close_matches():
    with pytest.raises(ValueError) as err:
        resolve_weights("swin_base_patch4_window12_384_in22k")
    assert "'swin_base_patch4_window12_384_in22k' is neither a checkpoint file nor timm pretrained weights" in str(
        err.value)
    assert "swin_base_patch4_window12_384.ms_in22k" in str(err.value)
    with pytest.raises(ValueError, match="timm.list_pretrained"):
        resolve_weights("nothing_like_any_model")


def test_known_architecture_with_an_unknown_tag_lists_its_tags():
    with pytest.raises(ValueError) as err:
        resolve_weights("swin_base_patch4_window12_384.in22k")
    message = str(err.value)
    assert "'swin_base_patch4_window12_384.in22k'" in message
    for tag in ("ms_in1k", "ms_in22k", "ms_in22k_ft_in1k"):
        assert f"swin_base_patch4_window12_384.{tag}" in message


def test_a_bare_architecture_takes_timms_default_tag():
    assert resolve_weights("resnet50").name == f"resnet50.{get_pretrained_cfg('resnet50').tag}"


def test_unknown_names_fail_before_the_model_is_built():
    with pytest.raises(ValueError, match="swin_bse"):
        create_model("SIFAR-N-6", 10, pretrained="swin_bse_patch4_window7_224.ms_in22k", layout="not a layout")


@pytest.mark.parametrize("path", ["swin_base_patch4_window12_384.ms_in22k.pth", "weights/swin_base", "w.safetensors"])
def test_a_path_with_no_file_is_not_read_as_a_name(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"no checkpoint file at {path} .*read as a path") as err:
        resolve_weights(path)
    assert isinstance(err.value, CheckpointError)  # as before names were read


def test_a_path_object_is_never_a_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file at .*swin_base_patch4_window12_384.ms_in22k$"):
        create_model("SIFAR-N-6", 10, pretrained=tmp_path / "swin_base_patch4_window12_384.ms_in22k")


def test_an_existing_file_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("resnet50.a1_in1k").touch()
    assert resolve_weights("resnet50.a1_in1k") == Path("resnet50.a1_in1k")


@pytest.mark.parametrize("name, repo_id", [
    ("swin_base_patch4_window12_384.ms_in22k", "timm/swin_base_patch4_window12_384.ms_in22k"),
    ("hf-hub:sifar-tests/not-cached@v1", "sifar-tests/not-cached --revision v1"),
])
def test_offline_and_not_cached_names_the_cache_and_the_way_out(hub_cache, name, repo_id):
    with pytest.raises(FileNotFoundError) as err:
        fetch_weights(resolve_weights(name))
    message = str(err.value)
    assert message.startswith(f"{name}: the weights are not in the Hugging Face cache {hub_cache} ")
    assert "HF_HUB_OFFLINE is set" in message and f"`hf download {repo_id}`" in message


def test_hf_hub_names_are_checked_before_any_download():
    assert resolve_weights("hf-hub:org/name") == HubWeights("hf-hub:org/name")
    with pytest.raises(ValueError, match="org//name"):
        resolve_weights("hf-hub:org//name")
