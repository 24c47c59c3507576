"""Training checkpoints: one dict with everything needed to resume, written atomically and sealed.

A checkpoint is written to a temporary file and renamed into place, so a crash or a full disk while
saving leaves the previous checkpoint intact; its SHA-256 travels inside it and is checked on every load
(:mod:`sifar.checkpoint_file`).
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sifar.checkpoint_file import CheckpointError, load_verified, sealed_bytes
from sifar.config_fields import config_from_dict
from sifar.data.clip import ClipSettings
from sifar.io import atomic_write
from sifar.models.settings import ModelSettings, build_model


EMA_HELP = "The checkpoint's EMA weights, or its raw ones [default: those training validated with]."


class CheckpointWriteError(OSError):
    """Saving failed (e.g. the disk is full); the previous checkpoint under that name is untouched."""


def rng_state() -> dict[str, Any]:
    """Every random generator a training step draws from (Python, NumPy for timm's Mixup, torch)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Atomically write ``state``; raise CheckpointWriteError naming the file if the write fails."""
    buffer = sealed_bytes(state)  # serialise first: torch's zip writer turns a failed write into a RuntimeError
    try:
        with atomic_write(path, "wb") as handle:
            handle.write(buffer.getbuffer())
    except OSError as err:
        raise CheckpointWriteError(err.errno, f"could not write checkpoint {path} ({err.strerror or err}); "
                                              f"the previous one is intact") from err


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint written by :func:`save_checkpoint` (tensors and plain data only), its
    checksum verified; CheckpointError naming the file when it is truncated, corrupt or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    checkpoint = load_verified(path)
    if not isinstance(checkpoint, dict) or "classes" not in checkpoint or not (
            "model_settings" in checkpoint or "model_info" in checkpoint):
        raise CheckpointError(f"{path} is not a sifar training checkpoint (no model settings and classes)")
    return checkpoint


@dataclass
class TrainedModel:
    """A model rebuilt from a training checkpoint, with its class names, the clip it was trained on and
    which weights were loaded (``"model"`` or ``"ema"``)."""

    model: Any
    classes: list[str]
    clip: ClipSettings
    weights: str


def load_trained(path: str | os.PathLike, ema: bool | None = None, attention: str = "auto") -> TrainedModel:
    """The model of a sifar training checkpoint (``last.pt`` / ``best.pt``) with its setup.

    ``ema``: the EMA weights (True) or the raw ones (False); None takes the ones training validated with
    (the EMA weights when it kept them, so ``best.pt`` is the best of what was measured). ``attention`` picks
    the Swin attention kernel (see ``create_model``); it changes speed, not weights.
    """
    return trained_model(load_checkpoint(path), path, ema, attention)


def trained_model(checkpoint: dict[str, Any], path: str | os.PathLike, ema: bool | None = None,
                  attention: str = "auto") -> TrainedModel:
    """:func:`load_trained` of a checkpoint already read from ``path`` (named in errors)."""
    model_settings, clip = saved_setup(checkpoint)
    has_ema = checkpoint.get("ema") is not None
    if ema is None:
        weights = checkpoint.get("validated_with", "ema" if has_ema else "model")
    else:
        weights = "ema" if ema else "model"
    if weights == "ema" and not has_ema:
        raise CheckpointError(f"{path} holds no EMA weights (the run was trained without --ema-decay)")
    model = rebuild_model(model_settings, clip, checkpoint["classes"], checkpoint[weights],
                          checkpoint.get("normalization"), path, attention)
    return TrainedModel(model, checkpoint["classes"], clip, weights)


def rebuild_model(model_settings: ModelSettings, clip: ClipSettings, classes: list[str],
                  state_dict: dict[str, torch.Tensor], normalization: dict[str, list[float]] | None,
                  path: str | os.PathLike, attention: str = "auto") -> Any:
    """The model of a saved setup with ``state_dict`` loaded strictly (no stochastic depth: it is for inference).

    ``normalization``: the input statistics of the weights training started from (None: the model's own).
    CheckpointError naming ``path`` when the weights do not fit the model the setup describes."""
    model = build_model(replace(model_settings, drop_path=0.0), clip, len(classes), load_weights=False,
                        attention=attention)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:  # missing, unexpected or mis-shaped tensors, each named by torch
        raise CheckpointError(f"{path}: its weights do not fit {model_settings.name} with {len(classes)} classes "
                              f"as its setup describes ({err})") from err
    if normalization is not None:
        model.mean, model.std = (tuple(normalization[key]) for key in ("mean", "std"))
    return model


def setup_record(model_settings: ModelSettings, clip: ClipSettings, classes: list[str], model: Any) -> dict[str, Any]:
    """What rebuilds a trained model anywhere, as saved in checkpoints and beside exports: its settings, the
    resolved clip, the class names and the input statistics of its weights (:func:`read_setup_record`)."""
    return {"model_settings": asdict(model_settings), "clip": asdict(clip), "classes": classes,
            "normalization": {"mean": list(model.mean), "std": list(model.std)}}


def read_setup_record(record: dict[str, Any], where: str = "") -> tuple[ModelSettings, ClipSettings]:
    """The model settings and clip of a :func:`setup_record` (keys a later version added are ignored)."""
    return (config_from_dict(ModelSettings, record["model_settings"], where=where, strict=False),
            config_from_dict(ClipSettings, record["clip"], where=where, strict=False))


def saved_setup(checkpoint: dict[str, Any]) -> tuple[ModelSettings, ClipSettings]:
    """The model settings and the resolved clip a checkpoint was trained with. Checkpoints of earlier
    versions kept a ``model_info`` record instead (and, before that, no clip: their config's sampling)."""
    if "model_settings" in checkpoint:
        return read_setup_record(checkpoint)
    info = checkpoint["model_info"]
    model = ModelSettings(info["name"], num_classes=len(checkpoint["classes"]), frame_embed=info["frame_embed"],
                          frame_average=info.get("frame_average", False))
    saved = checkpoint.get("clip", {"sampling": checkpoint.get("config", {}).get("sampling", "uniform")})
    clip = config_from_dict(ClipSettings, saved, strict=False)
    rows, cols = info["grid"]
    return model, replace(clip, num_frames=info["num_frames"], frame_size=info["frame_size"], layout=f"{rows}x{cols}")
