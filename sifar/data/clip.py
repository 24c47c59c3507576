"""The clip a model sees: how many frames, at what size, in which grid, sampled how, flipped or not.

A training run's settings may leave the frames, size and layout to the model (None);
:func:`sifar.models.settings.resolve_clip` fills them in once, and that resolved clip is saved in every
checkpoint (``"clip"``). Evaluation and prediction sample from it, so a model trained on dense clips is
evaluated and served on dense clips unless told otherwise. Normalization is not here: it belongs to the
weights (timm's ``pretrained_cfg`` mean and std), and the model carries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

from sifar.config_fields import help_field, validate
from sifar.data.sampling import Mode

Flip = Literal["auto", "on", "off"]
FORCED_FLIP: dict[str, bool | None] = {"auto": None, "on": True, "off": False}  # None: the dataset decides


@dataclass(frozen=True)
class ClipSettings:
    num_frames: int | None = help_field(None, "Frames per clip (default: the model's).", min=1)
    frame_size: int | None = help_field(None, "Frame side in pixels (default: the model's).", min=1)
    layout: str | None = help_field(None, "Super-image grid ROWSxCOLS (default: the model's, else the paper's "
                                          "rule).")
    sampling: Mode = help_field("uniform", "Frame sampling: uniform (one frame per segment, the paper's) or "
                                           "dense (frames --stride apart).")
    stride: int = help_field(4, "Frames between sampled frames in dense sampling.", min=1)
    flip: Flip = help_field("auto", "Training's horizontal flip (auto: off for ssv2 and jester, whose labels "
                                    "name left and right).")

    def __post_init__(self) -> None:
        validate(self)

    @property
    def resolved(self) -> bool:
        """Whether the frames and size are given (a loader needs them)."""
        return self.num_frames is not None and self.frame_size is not None

    def flip_setting(self) -> bool | None:
        """True / False when the flip is forced, None when the dataset decides (``auto``)."""
        return FORCED_FLIP[self.flip]


def check_crops(crops: int, name: str = "crops") -> None:
    """ValueError ``"<name>: ..."`` unless ``crops`` is a number of spatial views evaluation takes."""
    if crops not in (1, 3):
        raise ValueError(f"{name}: 1 (centre) or 3 (top-left, centre, bottom-right), got {crops}")


@dataclass(frozen=True)
class ViewSettings:
    """The views of each video that evaluation and prediction average their softmax over."""

    clips: int = help_field(1, "Temporal clips per video when evaluating.", min=1)
    crops: int = help_field(3, "Spatial crops per clip when evaluating: 1 (centre) or 3 (top-left, centre, "
                               "bottom-right).")

    def __post_init__(self) -> None:
        validate(self, partial(check_crops, self.crops))
