"""Classify clips with a trained model: :class:`Predictor`, for video files and URLs and for frames already
in memory (a camera's array, PIL images), sampled and cropped as evaluation does, softmax averaged over the
views. A video file is not decoded whole: only the frames its clip samples (:mod:`sifar.data.video_frames`).

:func:`explain` shows what the model looks at in one video (class activation maps, :mod:`sifar.cam`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch

from sifar.cam import ClassActivationMap, class_activation_map
from sifar.checkpoint import EMA_HELP, TrainedModel, load_trained
from sifar.config_fields import help_field, validate
from sifar.data.clip import ClipSettings, ViewSettings
from sifar.data.sampling import eval_indices
from sifar.data.transforms import device_clips, eval_transform
from sifar.data.video_frames import index_frames, read_frames
from sifar.distributed import local_device
from sifar.precision import PRECISION_HELP, Precision, autocast_for

Frames = Union[np.ndarray, torch.Tensor, Sequence[Any]]  # (T, H, W, 3) uint8, or T PIL images / (H, W, 3) arrays
ClipInput = Union[str, os.PathLike, Frames]


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


def video_views(path: str | os.PathLike, clip: ClipSettings, clips: int, crops: int) -> torch.Tensor:
    """(clips*crops, T, C, H, W) uint8 views of a video file or URL, sampled as evaluation samples ``clip``:
    only the sampled frames are decoded."""
    index = index_frames(path)
    samples = eval_indices(index.count, clip.num_frames, clips, clip.sampling, clip.stride)
    decoded = read_frames(path, [i for indices in samples for i in indices], clip.frame_size, index)
    return torch.cat([eval_transform([decoded[i] for i in indices], clip.frame_size, crops) for indices in samples])


def frame_views(frames: Frames, clip: ClipSettings, clips: int, crops: int) -> torch.Tensor:
    """The same views of frames already in memory: a uint8 (T, H, W, 3) array or tensor, or T PIL images or
    (H, W, 3) uint8 arrays, in time order."""
    stacked = as_frame_tensor(frames)
    samples = eval_indices(len(stacked), clip.num_frames, clips, clip.sampling, clip.stride)
    return torch.cat([eval_transform(stacked[indices], clip.frame_size, crops) for indices in samples])


def as_frame_tensor(frames: Frames) -> torch.Tensor:
    """(T, H, W, 3) uint8 from an array, a tensor or a sequence of PIL images / arrays; ValueError otherwise."""
    if not isinstance(frames, (np.ndarray, torch.Tensor)):
        if len(frames) == 0:
            raise ValueError("no frames given")
        frames = np.stack([np.asarray(frame.convert("RGB") if hasattr(frame, "convert") else frame)
                           for frame in frames])
    tensor = torch.as_tensor(frames)
    if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[-1] != 3 or len(tensor) == 0:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) RGB, got {tuple(tensor.shape)} {tensor.dtype}")
    return tensor


class Predictor:
    """A trained model ready to classify clips as it was evaluated: the checkpoint's clip (frames, size,
    sampling) and the settings' views, top-k class names with their probabilities.

    >>> predictor = Predictor.from_checkpoint("runs/k400/best.pt")
    >>> predictor.predict("video.mp4").classes[0]                 # a file, or a URL ffmpeg reads
    >>> predictor.predict(frames)                                 # uint8 (T, H, W, 3), or T PIL images
    >>> predictor.predict_batch(["a.mp4", "b.mp4"], batch_size=8) # several inputs through the model at once
    """

    def __init__(self, trained: TrainedModel, device: str | torch.device = "auto",
                 settings: PredictSettings = PredictSettings()) -> None:
        self.trained, self.settings = trained, settings
        self.device = device if isinstance(device, torch.device) else local_device(device)
        trained.model.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto",
                        settings: PredictSettings = PredictSettings()) -> Predictor:
        """The model of a sifar checkpoint with the weights ``settings.ema`` picks (default: those training
        validated with). Swin attention runs as sdpa: FlexAttention compiles a kernel for each new shape,
        seconds each, which a few clips never pay back."""
        return cls(load_trained(path, settings.ema, attention="sdpa"), device, settings)

    @classmethod
    def from_exported(cls, path: str | os.PathLike, device: str | torch.device = "auto",
                      settings: PredictSettings = PredictSettings()) -> Predictor:
        """The model of a safetensors export (``sifar-tools export``) with the setup beside it."""
        from sifar.export import load_exported  # safetensors export and its setup: only this door needs them

        return cls(load_exported(path, attention="sdpa"), device, settings)

    @property
    def classes(self) -> list[str]:
        return self.trained.classes

    def views(self, clip_input: ClipInput) -> torch.Tensor:
        """(views, T, C, H, W) uint8 of one input: a video file or URL, or frames in memory."""
        views = self.settings.views
        if isinstance(clip_input, (str, os.PathLike)):
            return video_views(clip_input, self.trained.clip, views.clips, views.crops)
        return frame_views(clip_input, self.trained.clip, views.clips, views.crops)

    def predict(self, clip_input: ClipInput) -> Prediction:
        """Top-k classes of one input, softmax averaged over its views."""
        return self.predict_batch([clip_input])[0]

    @torch.no_grad()
    def predict_batch(self, inputs: Sequence[ClipInput], batch_size: int = 8) -> list[Prediction]:
        """Top-k classes of each input; ``batch_size`` inputs' views go through the model at once."""
        predictions = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            views = [self.views(clip_input) for clip_input in chunk]
            probabilities = self._probabilities(torch.cat(views)).split([len(v) for v in views])
            predictions += [self._top(clip_input, probs.mean(0)) for clip_input, probs in zip(chunk, probabilities)]
        return predictions

    def _probabilities(self, views: torch.Tensor) -> torch.Tensor:
        model = self.trained.model
        with autocast_for(self.device, self.settings.precision):
            logits = model(device_clips(views, self.device, model.mean, model.std))
        return logits.float().softmax(-1).cpu()

    def _top(self, clip_input: ClipInput, probabilities: torch.Tensor) -> Prediction:
        top = probabilities.topk(min(self.settings.topk, probabilities.numel()))
        return Prediction(describe(clip_input), [self.classes[i] for i in top.indices.tolist()], top.values.tolist())


def describe(clip_input: ClipInput) -> str:
    """How a prediction names its input: the path or URL, or the frames' shape."""
    if isinstance(clip_input, (str, os.PathLike)):
        return os.fspath(clip_input)
    return f"{len(clip_input)} frames in memory"


def explain(trained: TrainedModel, path: str | Path, device: torch.device, target: int | None = None,
            method: str = "ablation", chunk: int = 128, stage: int = -1) -> ClassActivationMap:
    """Class activation map of a video's centre view (one clip, one centre crop) for class ``target`` (default:
    top), weighing backbone stage ``stage``'s feature map (-1: the last)."""
    model = trained.model
    views = video_views(path, trained.clip, clips=1, crops=1)
    frames = device_clips(views, device, model.mean, model.std)
    return class_activation_map(model, frames, trained.classes, target, method, chunk, stage)
