"""Class activation maps over the super image (paper Fig. 5): Ablation-CAM and Grad-CAM.

Both weigh the channels ``A_k`` of the model's last feature map (:meth:`SuperImageClassifier.feature_map`:
the last stage, before Swin's final norm) and show ``ReLU(sum_k w_k A_k)``, upsampled to the super image.

- Ablation-CAM (Desai & Ramaswamy, WACV 2020), the paper's: ``w_k = (y_c - y_c^k) / |y_c|``, where
  ``y_c^k`` is the class score with channel ``k`` zeroed. The backbone runs once; only the head (final
  norm, pooling, classifier) runs on the ablated copies, ``chunk`` channels per pass: a feature map of C
  channels costs ``ceil(C / chunk)`` head passes (Swin-B: 1024 channels, 8 passes at chunk 128).
  The paper divides by ``y_c``; dividing by ``|y_c|`` keeps a negative logit from flipping every sign.
- Grad-CAM (Selvaraju et al., ICCV 2017): ``w_k`` is the spatial mean of ``dy_c / dA_k``; one backward
  pass through the head.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from sifar.io import atomic_write
from sifar.layout import Layout, from_super_image
from sifar.models import SuperImageClassifier

METHODS = ("ablation", "gradcam")
Head = Callable[[torch.Tensor], torch.Tensor]


class UnknownClassError(ValueError):
    """A class name the model was not trained on."""


@dataclass
class ClassActivationMap:
    """A map for one clip: the super image the model saw and the normalized heat over it."""

    image: torch.Tensor  # (3, H, W) uint8
    heatmap: torch.Tensor  # (H, W) float in [0, 1]
    class_index: int
    class_name: str
    probability: float
    method: str
    grid: Layout
    num_frames: int


def class_index(classes: Sequence[str], name: str) -> int:
    """The index of class ``name``; UnknownClassError naming close matches (or the first few classes)."""
    if name in classes:
        return list(classes).index(name)
    close = difflib.get_close_matches(name, classes, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known classes include {', '.join(classes[:5])}"
    raise UnknownClassError(f"no class named {name!r} among the model's {len(classes)} classes; {hint}")


@torch.no_grad()
def ablation_weights(head: Head, features: torch.Tensor, target: int, chunk: int = 128) -> torch.Tensor:
    """(C,) relative drops of class ``target``'s score when each channel of (1, C, h, w) ``features`` is zeroed."""
    if chunk < 1:
        raise ValueError(f"the ablation chunk must be at least one channel, got {chunk}")
    score = head(features)[0, target]
    drops = []
    for channels in torch.arange(features.shape[1], device=features.device).split(chunk):
        ablated = features.repeat(len(channels), 1, 1, 1)
        ablated[torch.arange(len(channels), device=features.device), channels] = 0
        drops.append(score - head(ablated)[:, target])
    return torch.cat(drops) / score.abs().clamp_min(torch.finfo(score.dtype).tiny)


def gradcam_weights(head: Head, features: torch.Tensor, target: int) -> torch.Tensor:
    """(C,) spatial means of the gradient of class ``target``'s score over (1, C, h, w) ``features``."""
    with torch.enable_grad():
        features = features.detach().requires_grad_()
        (grad,) = torch.autograd.grad(head(features)[0, target], features)
    return grad[0].mean((1, 2))


def weighted_map(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_k w_k A_k): (1, C, h, w) features and (C,) weights -> (h, w)."""
    return torch.einsum("chw,c->hw", features[0], weights).relu()


def upsampled_heatmap(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(h, w) -> (H, W) bilinear, scaled to [0, 1] (all zeros stays all zeros)."""
    heat = F.interpolate(cam[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    heat = heat - heat.min()
    peak = heat.max()
    return heat / peak if peak > 0 else heat


def denormalized(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(3, H, W) uint8 pixels of a normalized (3, H, W) image: the inverse of ``sifar.data.transforms.normalize``."""
    mean_t = torch.as_tensor(mean, device=image.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, device=image.device).view(-1, 1, 1)
    return (image.float() * std_t + mean_t).mul(255).round().clamp(0, 255).to(torch.uint8)


def class_activation_map(model: SuperImageClassifier, frames: torch.Tensor, classes: Sequence[str],
                         target: int | None = None, method: str = "ablation", chunk: int = 128
                         ) -> ClassActivationMap:
    """The map of class ``target`` (default: the top class) for one clip of normalized frames (1, T, C, H, W)."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(METHODS)}")
    if frames.shape[0] != 1:
        raise ValueError(f"a class activation map explains one clip, got a batch of {frames.shape[0]}")
    if target is not None and not 0 <= target < len(classes):
        raise ValueError(f"class index {target} is out of range for {len(classes)} classes")
    image = model.super_image(frames.float())
    if image.shape[0] != 1:
        raise ValueError(f"{model.name} classifies each frame alone (frame averaging): there is no super image "
                         f"to draw a class activation map over")
    model.eval()
    with torch.no_grad():
        features = model.feature_map(frames.float())
        probabilities = model.head_from_feature_map(features)[0].float().softmax(-1)
    target = int(probabilities.argmax()) if target is None else target
    if method == "ablation":
        weights = ablation_weights(model.head_from_feature_map, features, target, chunk)
    else:
        weights = gradcam_weights(model.head_from_feature_map, features, target)
    heatmap = upsampled_heatmap(weighted_map(features, weights), tuple(image.shape[-2:]))
    pixels = denormalized(image[0], model.mean, model.std)
    return ClassActivationMap(pixels.cpu(), heatmap.cpu(), target, classes[target], float(probabilities[target]),
                              method, model.grid, model.num_frames)


def overlay(image: torch.Tensor, heatmap: torch.Tensor, alpha: float = 0.5, colormap: str = "jet") -> torch.Tensor:
    """(3, H, W) uint8 image blended with the colour-mapped (H, W) heat in [0, 1] -> (3, H, W) uint8."""
    colours = torch.from_numpy(colormaps[colormap](heatmap.numpy())[..., :3]).permute(2, 0, 1).float()
    blended = (1 - alpha) * image.float() / 255 + alpha * colours
    return blended.mul(255).round().clamp(0, 255).to(torch.uint8)


def frame_cells(image: torch.Tensor, grid: Layout, num_frames: int) -> torch.Tensor:
    """(3, H, W) super image -> (T, 3, H/rows, W/cols): its frames in time order, padding cells dropped."""
    return from_super_image(image[None], *grid, num_frames=num_frames)[0]


def save_png(pixels: torch.Tensor, path: str | Path) -> None:
    """Write a (3, H, W) uint8 image as a PNG, atomically."""
    with atomic_write(path, "wb") as handle:
        Image.fromarray(np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())).save(handle, format="PNG")


def write_cam(cam: ClassActivationMap, path: str | Path | None = None, frames_dir: str | Path | None = None
              ) -> list[Path]:
    """Write the overlaid super image to ``path`` and one overlaid PNG per frame to ``frames_dir``."""
    pixels = overlay(cam.image, cam.heatmap)
    written = []
    if path is not None:
        save_png(pixels, path)
        written.append(Path(path))
    if frames_dir is not None:
        for t, frame in enumerate(frame_cells(pixels, cam.grid, cam.num_frames)):
            written.append(Path(frames_dir) / f"frame_{t:03d}.png")
            save_png(frame, written[-1])
    return written
