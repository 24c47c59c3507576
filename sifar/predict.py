"""Classify video files directly: decode once with ffmpeg, sample and crop as evaluation does, average views.

:func:`explain` shows what the model looks at in one video (class activation maps, :mod:`sifar.cam`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from sifar.cam import ClassActivationMap, class_activation_map
from sifar.checkpoint import EMA_HELP, TrainedModel
from sifar.config_fields import help_field, validate
from sifar.data.clip import ClipSettings, ViewSettings
from sifar.data.ffmpeg import DecodeSettings, decode_video
from sifar.data.decoders import JpegDecoder
from sifar.data.sampling import eval_indices
from sifar.data.transforms import device_clips, eval_transform
from sifar.precision import PRECISION_HELP, Precision, autocast_for


@dataclass(frozen=True)
class PredictSettings:
    """How videos are classified: the views averaged, the classes reported, the weights, the precision. The
    clip (frames, size, sampling) is the checkpoint's own."""

    topk: int = help_field(5, "Classes to report per video.", min=1)
    views: ViewSettings = field(default_factory=ViewSettings)
    ema: bool | None = help_field(None, EMA_HELP)
    precision: Precision = help_field("auto", PRECISION_HELP)

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class Prediction:
    video: str
    classes: list[str]
    probabilities: list[float]

    def as_dict(self) -> dict:
        return {"video": self.video, "top": [{"class": c, "probability": round(p, 6)}
                                             for c, p in zip(self.classes, self.probabilities)]}


def video_views(path: str | Path, clip: ClipSettings, clips: int, crops: int) -> torch.Tensor:
    """(clips*crops, T, C, H, W) uint8 views of a video file, exactly as evaluation samples ``clip``."""
    decoded = decode_video(path, DecodeSettings(short_side=clip.frame_size))
    if not decoded.frames:
        raise ValueError(f"{path}: no video frames could be decoded")
    decoder = JpegDecoder()
    views = []
    for indices in eval_indices(len(decoded.frames), clip.num_frames, clips, clip.sampling, clip.stride):
        frames = decoder.frames(dict(enumerate(decoded.frames)), indices)
        views.append(eval_transform(frames, clip.frame_size, crops))
    return torch.cat(views)


@torch.no_grad()
def predict(trained: TrainedModel, path: str | Path, device: torch.device,
            settings: PredictSettings = PredictSettings()) -> Prediction:
    """Top-k classes of one video, sampled as the model was trained, softmax averaged over its views."""
    model, classes = trained.model, trained.classes
    views = video_views(path, trained.clip, settings.views.clips, settings.views.crops)
    model.eval()
    with autocast_for(device, settings.precision):
        logits = model(device_clips(views, device, model.mean, model.std))
    probs = logits.float().softmax(-1).mean(0)
    top = probs.topk(min(settings.topk, probs.numel()))
    return Prediction(str(path), [classes[i] for i in top.indices.tolist()], top.values.tolist())


def explain(trained: TrainedModel, path: str | Path, device: torch.device, target: int | None = None,
            method: str = "ablation", chunk: int = 128) -> ClassActivationMap:
    """Class activation map of a video's centre view (one clip, one centre crop) for class ``target`` (default: top)."""
    model = trained.model
    views = video_views(path, trained.clip, clips=1, crops=1)
    frames = device_clips(views, device, model.mean, model.std)
    return class_activation_map(model, frames, trained.classes, target, method, chunk)
