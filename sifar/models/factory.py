"""``create_model``: the one door from a name to a video classifier."""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from sifar.layout import Layout, parse_layout
from sifar.models.frame_average import FrameAverageClassifier, frame_average_grid
from sifar.models.hub_weights import HubWeights, resolve_weights
from sifar.models.registry import ModelConfig, get_builder, get_config, register_family
from sifar.models.super_image import SuperImageClassifier

TIMM_PREFIX = "timm:"


@register_family("timm")
def build_timm(config: ModelConfig, num_classes: int, grid: Layout, frame_size: int, **overrides: Any):
    """Any timm image classifier, sized for the super image where the model takes an input size."""
    name = config.arch["timm_name"]
    if not timm.is_model(name):
        raise KeyError(f"timm has no model named {name!r}")
    super_size = (grid[0] * frame_size, grid[1] * frame_size)
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=super_size, **overrides)
    except TypeError:  # convolutional models take any input size and no img_size argument
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **overrides)


def _family_options(builder: Callable[..., Any], config: ModelConfig, **options: Any) -> dict[str, Any]:
    """The options only some families have, for the builders that take them: ``attention`` picks a kernel
    (ignored by families without attention windows); ``frame_embed`` where the family has none is an error."""
    accepted = inspect.signature(builder).parameters
    if options.get("frame_embed") and "frame_embed" not in accepted:
        raise ValueError(f"{config.name}: the frame position embedding is defined for Swin models only")
    return {name: value for name, value in options.items() if name in accepted}


def resolve_config(name: str) -> ModelConfig:
    """A registered config, or an ad-hoc one for ``timm:<model>`` (8 frames, 3x3, 224 by default)."""
    if name.startswith(TIMM_PREFIX):
        timm_name = name[len(TIMM_PREFIX):]
        return ModelConfig(name=name, family="timm", num_frames=8, frame_size=224, arch={"timm_name": timm_name})
    return get_config(name)


def model_grid(config: ModelConfig, num_frames: int, layout: str | Layout | None, frame_average: bool = False,
               frame_embed: bool | None = None) -> Layout:
    """The super image's grid: the layout given, else the config's own for its frame count, else the paper's
    rule; a frame-averaging model's is 1x1. ValueError for a layout too small for the frames."""
    if frame_average:
        return frame_average_grid(layout, frame_embed)
    if layout is None and num_frames == config.num_frames:
        layout = config.layout
    return parse_layout(layout, num_frames)


def create_model(
    name: str,
    num_classes: int,
    num_frames: int | None = None,
    pretrained: str | os.PathLike | HubWeights | None = None,
    *,
    layout: str | Layout | None = None,
    frame_size: int | None = None,
    frame_embed: bool | None = None,
    attention: str = "auto",
    grad_checkpointing: bool = False,
    frame_average: bool = False,
    **overrides: Any,
) -> SuperImageClassifier:
    """Build the model registered as ``name`` (or ``timm:<any timm classifier>``).

    ``num_frames``, ``layout`` and ``frame_size`` default to the config's; a layout of None follows the
    paper's grid rule. ``frame_embed`` adds the per-frame position embedding (Swin only; the paper uses it
    for SSV2). ``attention`` picks the Swin window-attention kernel: "auto" (flex on GPUs, sdpa on CPUs), "flex"
    (FlexAttention, bias and shift mask inside the kernel), "sdpa" (timm's fused path) or "eager" (the official
    code's explicit softmax).
    ``pretrained`` is a checkpoint file in any format ``sifar.models.load_pretrained`` reads, or weights by name:
    a timm name with its pretrained tag as ``timm.list_pretrained()`` lists them (the paper's ImageNet-21K Swin:
    ``swin_base_patch4_window12_384.ms_in22k``) or ``hf-hub:org/name`` (a Hub repository of timm weights). Named
    weights come through timm and huggingface_hub into the Hugging Face cache (``HF_HOME``; ``HF_HUB_OFFLINE=1``
    reads only the cache) and set the model's ``mean``/``std`` to theirs. A name timm does not know, or a path
    with no file, fails before the model is built.
    ``frame_average`` builds the TSN-style baseline instead: the backbone sized for one frame (a 1x1 grid)
    classifies every frame alone and the logits are averaged over time (:class:`FrameAverageClassifier`).
    Other keyword arguments reach the backbone (e.g. ``drop_path_rate``, ``window_size``).
    """
    config = resolve_config(name)
    weights = resolve_weights(pretrained) if pretrained else None
    num_frames = num_frames or config.num_frames
    grid = model_grid(config, num_frames, layout, frame_average, frame_embed)
    frame_size = frame_size or config.frame_size
    builder = get_builder(config.family)
    family_options = _family_options(builder, config, frame_embed=frame_embed, attention=attention)
    backbone = builder(config, num_classes, grid=grid, frame_size=frame_size, **family_options, **overrides)
    mean = tuple(getattr(backbone, "pretrained_cfg", {}).get("mean", IMAGENET_DEFAULT_MEAN))
    std = tuple(getattr(backbone, "pretrained_cfg", {}).get("std", IMAGENET_DEFAULT_STD))
    classifier = FrameAverageClassifier if frame_average else SuperImageClassifier
    model = classifier(backbone, num_frames, grid, frame_size, name=config.name, mean=mean, std=std)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    if weights is not None:
        from sifar.models.weights import load_pretrained

        load_pretrained(model, weights)
    return model
