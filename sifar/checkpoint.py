"""Training checkpoints: one dict with everything needed to resume, written atomically and sealed.

A checkpoint is written to a temporary file and renamed into place, so a crash or a full disk while
saving leaves the previous checkpoint intact; its SHA-256 travels inside it and is checked on every load
(:mod:`sifar.checkpoint_file`).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sifar.checkpoint_file import CheckpointError, load_verified, sealed_bytes
from sifar.data.clip import ClipSettings
from sifar.io import atomic_write


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
    if not isinstance(checkpoint, dict) or "model_info" not in checkpoint or "classes" not in checkpoint:
        raise CheckpointError(f"{path} is not a sifar training checkpoint (no model_info and classes)")
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

    ``ema``: the EMA weights (True) or the raw ones (False); None takes the ones training validated with (the EMA weights when
    it kept them, so ``best.pt`` is the best of what was measured). ``attention`` picks the Swin attention
    kernel (see ``create_model``); it changes speed, not weights.
    """
    from sifar.models import create_model

    checkpoint = load_checkpoint(path)
    info, classes = checkpoint["model_info"], checkpoint["classes"]
    model = create_model(info["name"], len(classes), num_frames=info["num_frames"], layout=tuple(info["grid"]),
                         frame_size=info["frame_size"], frame_embed=info["frame_embed"] or None,
                         frame_average=info.get("frame_average", False), drop_path_rate=0.0, attention=attention)
    has_ema = checkpoint.get("ema") is not None
    if ema is None:
        weights = checkpoint.get("validated_with", "ema" if has_ema else "model")
    else:
        weights = "ema" if ema else "model"
    if weights == "ema" and not has_ema:
        raise CheckpointError(f"{path} holds no EMA weights (the run was trained without --ema-decay)")
    model.load_state_dict(checkpoint["ema" if weights == "ema" else "model"])
    return TrainedModel(model, classes, saved_clip(checkpoint), weights)


def saved_clip(checkpoint: dict[str, Any]) -> ClipSettings:
    """The clip a checkpoint was trained on (checkpoints from before it was saved: their config's sampling)."""
    if "clip" in checkpoint:
        return ClipSettings.from_dict(checkpoint["clip"])
    info = checkpoint["model_info"]
    return ClipSettings(info["num_frames"], info["frame_size"], checkpoint.get("config", {}).get("sampling", "uniform"))
