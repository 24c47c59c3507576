"""Classify video files directly: decode once with ffmpeg, sample and crop as evaluation does, average views.

:func:`explain` shows what the model looks at in one video (class activation maps, :mod:`sifar.cam`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sifar.cam import ClassActivationMap, class_activation_map
from sifar.data.ffmpeg import DecodeSettings, decode_video
from sifar.data.decoders import JpegDecoder
from sifar.data.sampling import eval_indices
from sifar.data.transforms import eval_transform, normalize
from sifar.models import SuperImageClassifier
from sifar.precision import autocast_for


@dataclass
class Prediction:
    video: str
    classes: list[str]
    probabilities: list[float]

    def as_dict(self) -> dict:
        return {"video": self.video, "top": [{"class": c, "probability": round(p, 6)}
                                             for c, p in zip(self.classes, self.probabilities)]}


def video_views(path: str | Path, num_frames: int, frame_size: int, clips: int, crops: int) -> torch.Tensor:
    """(clips*crops, T, C, H, W) uint8 views of a video file, exactly as evaluation samples them."""
    decoded = decode_video(path, DecodeSettings(short_side=frame_size))
    if not decoded.frames:
        raise ValueError(f"{path}: no video frames could be decoded")
    decoder = JpegDecoder()
    views = []
    for indices in eval_indices(len(decoded.frames), num_frames, clips):
        frames = decoder.frames(dict(enumerate(decoded.frames)), indices)
        views.append(eval_transform(frames, frame_size, crops))
    return torch.cat(views)


@torch.no_grad()
def predict(model: SuperImageClassifier, classes: list[str], path: str | Path, device: torch.device,
            topk: int = 5, clips: int = 1, crops: int = 3, precision: str = "auto") -> Prediction:
    """Top-k classes of one video, softmax averaged over its views."""
    views = video_views(path, model.num_frames, model.frame_size, clips, crops)
    model.eval()
    with autocast_for(device, precision):
        logits = model(normalize(views.to(device), model.mean, model.std))
    probs = logits.float().softmax(-1).mean(0)
    top = probs.topk(min(topk, probs.numel()))
    return Prediction(str(path), [classes[i] for i in top.indices.tolist()], top.values.tolist())


def explain(model: SuperImageClassifier, classes: list[str], path: str | Path, device: torch.device,
            target: int | None = None, method: str = "ablation", chunk: int = 128) -> ClassActivationMap:
    """Class activation map of a video's centre view (one clip, one centre crop) for class ``target`` (default: top)."""
    views = video_views(path, model.num_frames, model.frame_size, clips=1, crops=1)
    frames = normalize(views.to(device), model.mean, model.std)
    return class_activation_map(model, frames, classes, target, method, chunk)
