"""The model a run trains, as data (:class:`ModelSettings`), and the one way a run's model is built from it
and its clip: training, the pre-flight check and every checkpoint load call :func:`build_model`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sifar.config_fields import help_field, validate
from sifar.data.clip import ClipSettings
from sifar.models.factory import create_model, model_grid, resolve_config
from sifar.models.super_image import SuperImageClassifier


@dataclass(frozen=True)
class ModelSettings:
    name: str = help_field("SIFAR-B-12", "Registered model name or alias, or timm:<any timm classifier>.",
                           flag="model")
    pretrained: str | None = help_field(None, "Initial weights: a timm name with its tag (swin_base_patch4_window12_"
                                              "384.ms_in22k), hf-hub:org/name, or a file (Swin, official SIFAR or "
                                              "sifar checkpoint).")
    num_classes: int | None = help_field(None, "Classes (default: the manifest's; a disagreement is an error).",
                                         min=1)
    frame_embed: bool = help_field(False, "Per-frame position embedding (the paper's APE, used for SSV2).")
    frame_average: bool = help_field(False, "Baseline (TSN-style): classify each frame alone, average the scores.")
    drop_path: float = help_field(0.1, "Stochastic depth rate.", min=0, max=1, max_open=True)

    def __post_init__(self) -> None:
        validate(self)


def resolve_clip(model: ModelSettings, clip: ClipSettings) -> ClipSettings:
    """The clip with its frames, size and layout given: the settings' where set, else the model's (layout:
    the config's own for its frame count, else the paper's rule; 1x1 for frame averaging).

    KeyError for an unknown model; ValueError for a layout that cannot hold the frames."""
    config = resolve_config(model.name)
    num_frames = clip.num_frames or config.num_frames
    rows, cols = model_grid(config, num_frames, clip.layout, model.frame_average, model.frame_embed or None)
    return replace(clip, num_frames=num_frames, frame_size=clip.frame_size or config.frame_size,
                   layout=f"{rows}x{cols}")


def build_model(model: ModelSettings, clip: ClipSettings, num_classes: int, *, load_weights: bool = True,
                **options: Any) -> SuperImageClassifier:
    """The model of ``model`` for ``clip`` (resolved here if it is not), with ``num_classes`` outputs and its
    initial weights (``load_weights=False``: freshly initialised, e.g. before a checkpoint's are loaded).
    ``options`` reach :func:`create_model`: ``attention``, ``grad_checkpointing``."""
    clip = resolve_clip(model, clip)
    return create_model(model.name, num_classes, num_frames=clip.num_frames, layout=clip.layout,
                        frame_size=clip.frame_size, pretrained=model.pretrained if load_weights else None,
                        frame_embed=model.frame_embed or None, frame_average=model.frame_average,
                        drop_path_rate=model.drop_path, **options)
