"""sifar-tools export: safetensors and ONNX exports of small real checkpoints, reloaded and run."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sifar import __version__
from sifar.checkpoint import load_trained, save_checkpoint
from sifar.checkpoint_file import CheckpointError
from sifar.cli.tools import main as tools_main
from sifar.data.clip import ClipSettings
from sifar.export import export_checkpoint, load_exported, setup_path
from sifar.models.settings import ModelSettings, build_model, resolve_clip
from sifar.predict import Predictor

CLASSES = ["wave", "jump", "run", "sit", "clap"]
NORMALIZATION = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}


def write_checkpoint(path: Path, name: str, with_ema: bool = True) -> Path:
    """A checkpoint with the keys training writes that rebuild the model; EMA weights unlike the raw ones."""
    settings = ModelSettings(name)
    clip = resolve_clip(settings, ClipSettings(frame_size=32))
    raw, ema = (build_model(settings, clip, len(CLASSES), load_weights=False).state_dict() for _ in range(2))
    save_checkpoint({"model": raw, "ema": ema if with_ema else None, "model_settings": asdict(settings),
                     "clip": asdict(clip), "classes": CLASSES, "normalization": NORMALIZATION,
                     "validated_with": "ema" if with_ema else "model"}, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    return {"swin": write_checkpoint(root / "swin.pt", "SIFAR-N-6"),
            "resnet": write_checkpoint(root / "resnet.pt", "SIFAR-R18", with_ema=False)}


def export(*args: str):
    return CliRunner().invoke(tools_main, ["export", *args])


@torch.no_grad()
def logits(model: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    return model.eval()(clips)


def clips_for(model: torch.nn.Module, batch: int) -> torch.Tensor:
    return torch.randn(batch, model.num_frames, 3, model.frame_size, model.frame_size)


@pytest.mark.parametrize("ema, weights", [(None, "ema"), (False, "model")])
def test_safetensors_export_reloads_the_checkpoints_model(checkpoints, tmp_path, ema, weights):
    output = tmp_path / "swin.safetensors"
    flag = [] if ema is None else ["--no-ema"]
    result = export(str(checkpoints["swin"]), "--format", "safetensors", "--output", str(output), *flag)
    assert result.exit_code == 0, result.output
    assert f"{weights} weights" in result.output and str(setup_path(output)) in result.output

    setup = json.loads(setup_path(output).read_text())
    trained = load_trained(checkpoints["swin"], ema=ema)
    assert setup["weights"] == weights and setup["classes"] == CLASSES and setup["normalization"] == NORMALIZATION
    assert setup["sifar_version"] == __version__ and setup["model_settings"]["name"] == "SIFAR-N-6"
    assert setup["clip"] == asdict(trained.clip) and setup["input"]["shape"] == ["batch", 8, 3, 32, 32]

    exported = load_exported(output)
    assert (exported.classes, exported.clip, exported.weights) == (CLASSES, trained.clip, weights)
    assert (exported.model.mean, exported.model.std) == (trained.model.mean, trained.model.std)
    clips = clips_for(trained.model, 2)
    torch.testing.assert_close(logits(exported.model, clips), logits(trained.model, clips), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["swin", "resnet"])
def test_onnx_export_gives_pytorchs_logits_at_any_batch(checkpoints, tmp_path, name):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the export extra)")
    output = tmp_path / f"{name}.onnx"
    result = export(str(checkpoints[name]), "--format", "onnx", "--output", str(output))
    assert result.exit_code == 0, result.output
    assert json.loads(setup_path(output).read_text())["format"] == "onnx"
    with pytest.raises(CheckpointError, match="was exported as onnx; only safetensors exports load into PyTorch"):
        load_exported(output)

    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["clips"] and session.get_outputs()[0].name == "logits"
    model = load_trained(checkpoints[name]).model  # the default kernel: the graph must compute the same function
    for batch in (1, 3):
        clips = clips_for(model, batch)
        (onnx_logits,) = session.run(None, {"clips": clips.numpy()})
        expected = logits(model, clips)
        assert onnx_logits.shape == (batch, len(CLASSES))
        assert (torch.from_numpy(onnx_logits) - expected).abs().max().item() < 1e-4


def test_an_export_into_a_missing_folder_creates_it(checkpoints, tmp_path):
    output = tmp_path / "new" / "deeper" / "model.safetensors"
    assert export(str(checkpoints["resnet"]), "--format", "safetensors", "--output", str(output)).exit_code == 0
    assert output.is_file() and setup_path(output).is_file()


def test_an_output_that_cannot_be_written_is_named_and_leaves_nothing(checkpoints, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = export(str(checkpoints["resnet"]), "--format", "safetensors", "--output", str(blocker / "m.safetensors"))
    assert result.exit_code == 1 and f"could not write {blocker / 'm.safetensors'}" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("hello")
    result = export(str(bogus), "--format", "safetensors", "--output", str(tmp_path / "m.safetensors"))
    assert result.exit_code == 1 and f"{bogus} is not a readable PyTorch checkpoint" in result.output
    assert not (tmp_path / "m.safetensors").exists()


def test_an_unknown_format_is_a_usage_error(checkpoints, tmp_path):
    result = export(str(checkpoints["resnet"]), "--format", "tflite", "--output", str(tmp_path / "m"))
    assert result.exit_code == 2 and "Invalid value for '--format'" in result.output
    assert "'safetensors', 'onnx'" in result.output


def test_ema_weights_asked_of_a_run_without_them_are_refused(checkpoints, tmp_path):
    result = export(str(checkpoints["resnet"]), "--format", "safetensors", "--output", str(tmp_path / "m"), "--ema")
    assert result.exit_code == 1 and "holds no EMA weights" in result.output


def test_onnx_without_its_packages_names_the_extra(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if it were not installed
    output = tmp_path / "m.onnx"
    result = export(str(checkpoints["resnet"]), "--format", "onnx", "--output", str(output))
    assert result.exit_code == 1 and 'pip install -e ".[export]"' in result.output
    assert not output.exists()


def test_load_exported_names_a_missing_setup_and_weights_that_do_not_fit(checkpoints, tmp_path):
    swin, resnet = tmp_path / "swin.safetensors", tmp_path / "resnet.safetensors"
    export_checkpoint(checkpoints["swin"], swin, "safetensors")
    export_checkpoint(checkpoints["resnet"], resnet, "safetensors")

    setup_path(resnet).replace(setup_path(swin))  # the Swin weights beside a ResNet setup
    with pytest.raises(CheckpointError, match=f"{swin}: its weights do not fit SIFAR-R18 with 5 classes"):
        load_exported(swin)
    with pytest.raises(CheckpointError, match=f"{setup_path(resnet)} is missing"):
        load_exported(resnet)
    setup_path(resnet).write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{setup_path(resnet)} is not JSON"):
        load_exported(resnet)
    setup_path(resnet).write_text("{}")
    with pytest.raises(CheckpointError, match=f"{setup_path(resnet)} is not a sifar export setup"):
        load_exported(resnet)


def test_a_predictor_from_an_export_predicts_as_from_its_checkpoint(checkpoints, tmp_path):
    output = tmp_path / "swin.safetensors"
    assert export(str(checkpoints["swin"]), "--format", "safetensors", "--output", str(output)).exit_code == 0
    frames = torch.randint(0, 256, (10, 40, 48, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    from_export = Predictor.from_exported(output, "cpu").predict(frames)
    from_checkpoint = Predictor.from_checkpoint(checkpoints["swin"], "cpu").predict(frames)
    assert from_export.classes == from_checkpoint.classes
    assert from_export.probabilities == pytest.approx(from_checkpoint.probabilities, abs=1e-6)
