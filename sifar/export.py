"""A trained model for serving outside sifar's training code: safetensors weights or an ONNX graph, each with
its setup in ``<file>.json`` beside it, and :func:`load_exported`, which rebuilds the model of a safetensors
export.

The setup is a JSON file beside the weights, not metadata inside them: it is the same for both formats, any
language or a person reads it without a safetensors or ONNX library, and it holds nested data (settings,
class names, normalization) that the safetensors header, a map of strings to strings, would hold only as
JSON inside a string.

The ONNX graph takes ``clips`` float32 ``(B, T, C, H, W)`` already normalized with the setup's mean and std
(sifar's loaders do that on the device, outside the model) and gives ``logits`` ``(B, classes)``; B is free.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from sifar import __version__
from sifar.checkpoint import (TrainedModel, load_checkpoint, read_setup_record, rebuild_model, saved_setup,
                              setup_record, trained_model)
from sifar.checkpoint_file import CheckpointError
from sifar.io import atomic_write, write_json
from sifar.models.settings import ModelSettings

Format = Literal["safetensors", "onnx"]
FORMATS: tuple[str, ...] = get_args(Format)
EXPORT_EXTRA = 'pip install -e ".[export]"'
# 20: the first opset with Gelu as one operator (Swin's MLP); LayerNormalization came in 17. onnxruntime
# runs it from 1.17 on.
ONNX_OPSET = 20
# The torch.export-based exporter (torch's default since 2.9; the TorchScript one is deprecated there) traces
# the explicit softmax(QK^T + B) V; it cannot lower Swin's "sdpa" kernel (a view of SDPA's transposed output),
# and FlexAttention does not export at all. Every kernel computes the same function from the same weights.
ONNX_ATTENTION = "eager"


def setup_path(path: str | os.PathLike) -> Path:
    """Where the setup of the export at ``path`` is: ``<path>.json``."""
    return Path(f"{path}.json")


def export_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike, format: Format,
                      ema: bool | None = None) -> TrainedModel:
    """Write the model of a training checkpoint to ``output`` as ``format`` and its setup to ``<output>.json``.

    ``ema`` picks the weights as :func:`sifar.checkpoint.load_trained` does. Both files are written to a
    temporary name and renamed, the weights first. ImportError naming the extra when ONNX export is not
    installed; CheckpointError naming the file for a file that is not a checkpoint; OSError when ``output``
    cannot be written."""
    if format == "onnx":
        _require_onnx()
    saved = load_checkpoint(checkpoint)
    model_settings, _ = saved_setup(saved)
    trained = trained_model(saved, checkpoint, ema, attention=ONNX_ATTENTION if format == "onnx" else "auto")
    data = _ENCODERS[format](trained.model.eval())
    with atomic_write(output, "wb") as handle:
        handle.write(data)
    write_json(setup_path(output), export_setup(trained, model_settings, format))
    return trained


def export_setup(trained: TrainedModel, model_settings: ModelSettings, format: Format) -> dict[str, Any]:
    """What rebuilds and feeds the exported model: its settings, clip, classes, input statistics and input."""
    clip = trained.clip
    return {
        "format": format,
        "sifar_version": __version__,
        "weights": trained.weights,
        **setup_record(model_settings, clip, trained.classes, trained.model),
        "input": {"name": "clips", "shape": ["batch", clip.num_frames, 3, clip.frame_size, clip.frame_size],
                  "dtype": "float32", "normalized": True},
        "output": {"name": "logits", "shape": ["batch", len(trained.classes)]},
    }


def load_exported(path: str | os.PathLike, attention: str = "auto") -> TrainedModel:
    """The model of a safetensors export (:func:`export_checkpoint`), rebuilt from ``<path>.json`` with the
    weights loaded strictly. CheckpointError naming the file when the setup is missing or unreadable, the
    export is ONNX, or the weights do not fit the setup."""
    setup = read_setup(path)
    if setup.get("format") != "safetensors":
        raise CheckpointError(f"{path} was exported as {setup.get('format')}; only safetensors exports load into "
                              f"PyTorch (run an ONNX export with onnxruntime)")
    try:
        state_dict = load_file(path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); export the checkpoint "
                              f"again") from err
    model_settings, clip = read_setup_record(setup, where=str(setup_path(path)))
    model = rebuild_model(model_settings, clip, setup["classes"], state_dict, setup["normalization"], path, attention)
    return TrainedModel(model.eval(), setup["classes"], clip, setup["weights"])


def read_setup(path: str | os.PathLike) -> dict[str, Any]:
    """The setup written beside the export at ``path``; CheckpointError naming the file when it is missing,
    not JSON, or lacks what rebuilds the model."""
    where = setup_path(path)
    if not where.is_file():
        raise CheckpointError(f"{where} is missing: an export's setup (model, clip, classes, normalization) is "
                              f"written beside it by sifar-tools export; keep the two files together or export again")
    try:
        setup = json.loads(where.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{where} is not JSON ({err}); export the checkpoint again") from err
    missing = [key for key in ("model_settings", "clip", "classes", "normalization", "weights")
               if not isinstance(setup, dict) or key not in setup]
    if missing:
        raise CheckpointError(f"{where} is not a sifar export setup (no {', '.join(missing)}); export again")
    return setup


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401  (the exporter's model format)
        import onnxscript  # noqa: F401  (torch.onnx's torch.export-based exporter translates with it)
    except ImportError as err:
        raise ImportError(f"exporting to ONNX needs the onnx and onnxscript packages ({err}); install the "
                          f"export extra: {EXPORT_EXTRA}") from err


def _safetensors_bytes(model: torch.nn.Module) -> bytes:
    """The weights in safetensors' format (which stores only contiguous tensors)."""
    return save({name: tensor.contiguous() for name, tensor in model.state_dict().items()})


def _onnx_bytes(model: torch.nn.Module) -> bytes:
    """The serialized ONNX graph of ``model`` (eval mode, fp32), its batch axis free."""
    example = torch.zeros(2, model.num_frames, 3, model.frame_size, model.frame_size)  # 2: 0 and 1 specialize
    program = torch.onnx.export(model, (example,), input_names=["clips"], output_names=["logits"],
                                dynamic_shapes={"frames": {0: torch.export.Dim("batch", min=1)}},
                                opset_version=ONNX_OPSET, dynamo=True, verbose=False)
    return program.model_proto.SerializeToString()


_ENCODERS = {"safetensors": _safetensors_bytes, "onnx": _onnx_bytes}
