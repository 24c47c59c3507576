"""A run's checkpoint: what it holds (:func:`checkpoint_state`), and how a run continues from it
(:func:`restore`), refusing a resume that could not be exact and cleaning up after killed writes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sifar.checkpoint import load_checkpoint, rng_state, setup_record
from sifar.checkpoint_file import CheckpointError
from sifar.config_fields import config_from_dict, flat_values
from sifar.data.clip import ClipSettings
from sifar.models.settings import ModelSettings
from sifar.train_config import TrainConfig


@dataclass(frozen=True)
class RunSetup:
    """What rebuilds a run's model anywhere: its settings (classes resolved), the resolved clip, the classes."""

    model: ModelSettings
    clip: ClipSettings
    classes: list[str]


@dataclass
class TrainState:
    """Where training is: epoch, optimizer steps taken, batches of the current epoch consumed, best top-1."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    best_top1: float = -1.0


def remove_unfinished_checkpoints(output: Path) -> None:
    """Delete the temporary files of checkpoint writes that a killed run left (``.last.pt.*.tmp``)."""
    for path in output.glob(".*.pt.*.tmp"):
        path.unlink(missing_ok=True)


def checkpoint_state(model, optimizer, scheduler, ema, scaler, state: TrainState, config: TrainConfig,
                     setup: RunSetup) -> dict[str, Any]:
    """Everything a checkpoint holds: weights, optimizer, schedule, EMA, the fp16 loss scale (empty unless
    fp16), where training is, the run's config, the setup that rebuilds the model (its settings, the resolved
    clip, the class names), the RNG states."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict(),
        "state": dataclasses.asdict(state),
        "config": dataclasses.asdict(config),
        **setup_record(setup.model, setup.clip, setup.classes, model),
        "validated_with": "ema" if ema is not None else "model",
        "rng": rng_state(),
    }


RESUME_MUST_MATCH = ("model", "num_frames", "layout", "frame_size", "frame_embed", "frame_average", "batch_size",
                     "accum_steps")
# The restored scheduler and optimizer carry the schedule and the weight decay they were made with: a resume
# that changed them would silently keep the old ones, so it is refused.
RESUME_SCHEDULE = ("epochs", "warmup_epochs", "lr", "scale_lr", "min_lr", "warmup_lr", "weight_decay",
                   "steps_per_epoch")


def check_resume_config(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """ValueError naming each setting that differs from the saved run's (compared by option name, so a
    checkpoint whose config was saved flat, by an earlier version, compares the same)."""
    saved_values = flat_values(config_from_dict(TrainConfig, saved, strict=False)) if _sectioned(saved) else saved
    current = flat_values(config)
    changed = [k for k in RESUME_MUST_MATCH + RESUME_SCHEDULE if saved_values.get(k) != current[k]]
    if changed:
        details = ", ".join(f"{k}: {saved_values.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"cannot resume from {path}: the run was started with other settings ({details}); "
                         f"resume with the same ones, or start another --output (--pretrained {path} to go on "
                         f"from its weights with a new schedule), or --no-resume")


def _sectioned(saved: dict[str, Any]) -> bool:
    return isinstance(saved.get("optim"), dict)


def restore(path: Path, model, optimizer, scheduler, ema, scaler, config: TrainConfig) -> tuple[TrainState, dict]:
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as err:
        best = path.with_name("best.pt")
        advice = (f"copy {best} over it to go on from the best epoch, or pass --no-resume to start over"
                  if best.is_file() else "pass --no-resume to start over")
        raise CheckpointError(f"cannot resume: {err} ({advice})") from err
    check_resume_config(checkpoint["config"], config, path)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    if ema is not None and checkpoint["ema"] is not None:
        ema.module.load_state_dict(checkpoint["ema"])
    if scaler.is_enabled() and checkpoint.get("scaler"):  # empty when saved without fp16, absent before it
        scaler.load_state_dict(checkpoint["scaler"])
    return TrainState(**checkpoint["state"]), checkpoint["rng"]
