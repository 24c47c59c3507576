"""Class activation maps over the super image (paper Fig. 5): Ablation-CAM and Grad-CAM.

Both weigh the channels ``A_k`` of a stage's feature map (:meth:`SuperImageClassifier.feature_map`: by default
the last stage, before Swin's final norm) and show ``ReLU(sum_k w_k A_k)``, upsampled to the super image. The
"head" they probe is what follows that map: the later stages (:meth:`SuperImageClassifier.later_stages`), the
final norm, pooling and classifier.

Which stage matters for small objects: the last stage has stride 32, so a 64 px frame of a super image gets
2x2 positions there, and a map upsampled from them peaks at those positions' centres (or at the frame's
edge) wherever the object is. An earlier stage (stride 16: 4x4 positions a frame; stride 8: 8x8) can point
at an object a few pixels wide (docs/CAM.md measures both).

- Ablation-CAM (Desai & Ramaswamy, WACV 2020), the paper's: ``w_k = (y_c - y_c^k) / |y_c|``, where
  ``y_c^k`` is the class score with channel ``k`` zeroed. The backbone runs once; only the head runs on
  the ablated copies, ``chunk`` channels per pass: a feature map of C
  channels costs ``ceil(C / chunk)`` head passes (Swin-B: 1024 channels, 8 passes at chunk 128).
  The paper divides by ``y_c``; dividing by ``|y_c|`` keeps a negative logit from flipping every sign.
- Grad-CAM (Selvaraju et al., ICCV 2017): ``w_k`` is the spatial mean of ``dy_c / dA_k``; one backward
  pass through the head.

Padding cells (a 3x3 grid holding 8 frames has one) hold no image, yet a Swin that attends globally lets
their tokens gather evidence from all frames, and the map can peak there. They are masked: zeroed in the
feature-resolution map (so their heat does not bleed into the frames beside them when upsampled), zero in the
returned heatmap, and left out of its scaling to [0, 1].

The pointing game checks a map against known object boxes: a frame scores when its hottest pixel lies
inside the box (:func:`pointing_hits`); a uniformly random point scores the box's share of the frame
(:func:`box_share`).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from sifar.io import atomic_write
from sifar.layout import Layout, frame_cell_map, from_super_image
from sifar.models import SuperImageClassifier

METHODS = ("ablation", "gradcam")
Head = Callable[[torch.Tensor], torch.Tensor]
Box = Sequence[int]  # [x0, y0, x1, y1] pixels of a frame, x1 and y1 exclusive


class UnknownClassError(ValueError):
    """A class name the model was not trained on."""


@dataclass
class ClassActivationMap:
    """A map for one clip: the super image the model saw and the normalized heat over it."""

    image: torch.Tensor  # (3, H, W) uint8
    heatmap: torch.Tensor  # (H, W) float in [0, 1] over the frame cells, 0 on padding cells
    class_index: int
    class_name: str
    probabilities: torch.Tensor  # (classes,) the clip's softmax
    method: str
    grid: Layout
    num_frames: int
    stage: int = -1  # the backbone stage whose feature map was weighed (:meth:`SuperImageClassifier.stages`)

    @property
    def probability(self) -> float:
        """The explained class's probability."""
        return float(self.probabilities[self.class_index])


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


def frame_mask(grid: Layout, num_frames: int, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool over a super image of ``size``: True in the cells holding frames, False in padding cells."""
    return frame_cell_map(*grid, *size) < num_frames


def upsampled_heatmap(cam: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """(h, w) -> (H, W) of the bool ``frames`` mask (:func:`frame_mask`), bilinear, scaled to [0, 1] over the
    frame cells and 0 in padding cells (all zeros stays all zeros). Positions of the (h, w) map that see no
    frame pixel are zeroed first, so that padding heat does not bleed into neighbouring frames."""
    sees_frames = F.adaptive_max_pool2d(frames[None, None].float(), tuple(cam.shape))[0, 0] > 0
    coarse = cam.float() * sees_frames
    heat = F.interpolate(coarse[None, None], size=tuple(frames.shape), mode="bilinear", align_corners=False)[0, 0]
    heat = (heat - heat[frames].min()) * frames
    peak = heat.max()
    return heat / peak if peak > 0 else heat


def denormalized(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(..., 3, H, W) uint8 pixels of normalized images: the inverse of ``sifar.data.transforms.normalize``."""
    mean_t = torch.as_tensor(mean, device=image.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, device=image.device).view(-1, 1, 1)
    return (image.float() * std_t + mean_t).mul(255).round().clamp(0, 255).to(torch.uint8)


def class_activation_map(model: SuperImageClassifier, frames: torch.Tensor, classes: Sequence[str],
                         target: int | None = None, method: str = "ablation", chunk: int = 128, stage: int = -1
                         ) -> ClassActivationMap:
    """The map of class ``target`` (default: the top class) for one clip of normalized frames (1, T, C, H, W)."""
    if frames.shape[0] != 1:
        raise ValueError(f"a class activation map explains one clip, got a batch of {frames.shape[0]}")
    return class_activation_maps(model, frames, classes, [target], method, chunk, stage)[0]


def class_activation_maps(model: SuperImageClassifier, frames: torch.Tensor, classes: Sequence[str],
                          targets: Sequence[int | None] | None = None, method: str = "ablation", chunk: int = 128,
                          stage: int = -1) -> list[ClassActivationMap]:
    """The maps of a batch of clips of normalized frames (B, T, C, H, W), each for its class in ``targets``
    (None: the clip's top class), weighing the feature map of backbone stage ``stage`` (-1: the last). The
    backbone runs once over the batch; the weights are each clip's own."""
    targets = [None] * frames.shape[0] if targets is None else list(targets)
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(METHODS)}")
    if len(targets) != frames.shape[0]:
        raise ValueError(f"{len(targets)} target classes for {frames.shape[0]} clips")
    for target in targets:
        if target is not None and not 0 <= target < len(classes):
            raise ValueError(f"class index {target} is out of range for {len(classes)} classes")
    image = model.super_image(frames.float())
    if image.shape[0] != frames.shape[0]:
        raise ValueError(f"{model.name} classifies each frame alone (frame averaging): there is no super image "
                         f"to draw a class activation map over")
    stage = model.stage_index(stage)
    model.eval()

    def head(stage_features: torch.Tensor) -> torch.Tensor:
        return model.head_from_feature_map(model.later_stages(stage_features, stage))

    with torch.no_grad():
        features = model.feature_map(frames.float(), stage)
        last_features = model.later_stages(features, stage)
        probabilities = model.head_from_feature_map(last_features).float().softmax(-1)
    if not head_pools_positions(model, last_features):
        warnings.warn(f"{model.name}'s head weighs each position of the feature map separately (it does not pool "
                      f"them): {method} maps, which give each channel one weight for all positions, do not show "
                      f"where it looks (docs/CAM.md)", stacklevel=2)
    in_frames = frame_mask(model.grid, model.num_frames, tuple(image.shape[-2:])).to(features.device)
    pixels = denormalized(image, model.mean, model.std).cpu()
    maps = []
    for i, target in enumerate(targets):
        target = int(probabilities[i].argmax()) if target is None else target
        clip_features = features[i:i + 1]
        if method == "ablation":
            weights = ablation_weights(head, clip_features, target, chunk)
        else:
            weights = gradcam_weights(head, clip_features, target)
        heatmap = upsampled_heatmap(weighted_map(clip_features, weights), in_frames)
        maps.append(ClassActivationMap(pixels[i], heatmap.cpu(), target, classes[target], probabilities[i].cpu(),
                                       method, model.grid, model.num_frames, stage))
    return maps


def head_pools_positions(model: SuperImageClassifier, features: torch.Tensor) -> bool:
    """Whether the model's head ignores where in the (B, C, h, w) feature map a feature is, as heads that pool
    over positions (Swin's, ResNet's) do: its logits do not change when the positions are reversed.
    Ablation-CAM and Grad-CAM give each channel one weight for all positions, which assumes such a head."""
    with torch.no_grad():
        logits = model.head_from_feature_map(features).float()
        moved = model.head_from_feature_map(features.flip(-2, -1)).float()
    return torch.allclose(moved, logits, rtol=1e-3, atol=1e-4 * float(logits.abs().max()) + 1e-6)


def overlay(image: torch.Tensor, heatmap: torch.Tensor, alpha: float = 0.5, colormap: str = "jet") -> torch.Tensor:
    """(3, H, W) uint8 image blended with the colour-mapped (H, W) heat in [0, 1] -> (3, H, W) uint8."""
    colours = torch.from_numpy(colormaps[colormap](heatmap.numpy())[..., :3]).permute(2, 0, 1).float()
    blended = (1 - alpha) * image.float() / 255 + alpha * colours
    return blended.mul(255).round().clamp(0, 255).to(torch.uint8)


def frame_cells(image: torch.Tensor, grid: Layout, num_frames: int) -> torch.Tensor:
    """(C, H, W) super image -> (T, C, H/rows, W/cols): its frames in time order, padding cells dropped."""
    return from_super_image(image[None], *grid, num_frames=num_frames)[0]


def frame_heatmaps(cam: ClassActivationMap) -> torch.Tensor:
    """(T, H/rows, W/cols): the heat over each frame's cell, in time order, padding cells dropped."""
    return frame_cells(cam.heatmap[None], cam.grid, cam.num_frames)[:, 0]


def pointing_hits(heat: torch.Tensor, boxes: Sequence[Box | None]) -> list[bool | None]:
    """The pointing game on (T, h, w) per-frame heat: whether each frame's hottest pixel (the first in
    row-major order) lies inside its box; None where the box is None (the object is invisible: not counted).
    A frame without any heat points nowhere: a miss."""
    if len(boxes) != len(heat):
        raise ValueError(f"{len(boxes)} boxes for {len(heat)} frames")
    hits: list[bool | None] = []
    for frame, box in zip(heat, boxes):
        if box is None:
            hits.append(None)
            continue
        y, x = divmod(int(frame.argmax()), frame.shape[1])
        x0, y0, x1, y1 = box
        hits.append(bool(frame.max() > 0) and x0 <= x < x1 and y0 <= y < y1)
    return hits


def box_share(box: Box, height: int, width: int) -> float:
    """The share of a ``height x width`` frame that ``box`` covers: what a uniformly random point scores."""
    x0, y0, x1, y1 = box
    return max(0, x1 - x0) * max(0, y1 - y0) / (height * width)


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
