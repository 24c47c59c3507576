"""Reading checkpoints into SIFAR models: pure conversion functions, then one strict load.

Formats read: Microsoft's Swin release (a dict with "model"; downsample at the end of stage i), timm's
Swin state dicts (downsample at the start of stage i+1), the official SIFAR release (Microsoft keys plus
``frame_pos_embed`` (1, T_padded, C)), any timm classifier's state dict, and this project's checkpoints
(keys under ``backbone.``, possibly inside a training checkpoint). Relative-position tables are resized
bicubically to the model's windows, a head of another class count is dropped, and a frame embedding of
another frame count is interpolated. Anything else that does not fit is an error naming the keys.
Files are torch's (``torch.load``, weights only) or safetensors; weights given by name (a timm
``architecture.tag`` or ``hf-hub:org/name``) are found by :mod:`sifar.models.hub_weights` and then read here.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer import checkpoint_filter_fn as swin_filter_fn
from torch import nn

from sifar.checkpoint_file import CheckpointError, load_verified
from sifar.models.hub_weights import HubWeights, NoCheckpointFileError, fetch_weights, resolve_weights
from sifar.models.super_image import SuperImageClassifier

_logger = logging.getLogger(__name__)
StateDict = dict[str, torch.Tensor]
WRAPPER_KEYS = ("model", "state_dict", "module")


@dataclass
class LoadReport:
    """What loading did: the file, and the parameters left at their fresh initialisation (and why)."""

    source: str
    fresh: dict[str, str] = field(default_factory=dict)


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """The tensors of a checkpoint file, unwrapped from training-checkpoint dicts and DDP's ``module.``."""
    try:
        obj = read_safetensors(path) if os.fspath(path).endswith(".safetensors") else load_verified(path)
    except FileNotFoundError as err:
        raise NoCheckpointFileError(f"no checkpoint file at {path}") from err
    return unwrap_state_dict(obj, str(path))


def read_safetensors(path: str | os.PathLike) -> StateDict:
    """The tensors of a safetensors file (the format of Hugging Face Hub weights), onto the CPU."""
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except SafetensorError as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from err


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> StateDict:
    """Find the state dict inside common wrappers ({"model": ...}, {"state_dict": ...})."""
    while isinstance(obj, dict):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{source} holds no state dict of tensors")
    return strip_prefix(obj, "module.")


def strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    """Drop ``prefix`` from keys that all carry it (DDP's ``module.``, this project's ``backbone.``)."""
    if all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def resize_frame_embed(embed: torch.Tensor, cells: int) -> torch.Tensor:
    """Linearly interpolate a (1, T, C) frame embedding to (1, cells, C)."""
    if embed.shape[1] == cells:
        return embed
    resized = F.interpolate(embed.transpose(1, 2), size=cells, mode="linear", align_corners=True)
    return resized.transpose(1, 2).contiguous()


def resize_rel_pos_table(table: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """Bicubically resize a square (2s-1)^2 x heads relative-position table to ``window``'s (2h-1)(2w-1) x heads."""
    target = (2 * window[0] - 1, 2 * window[1] - 1)
    if table.shape[0] == target[0] * target[1]:
        return table
    side = round(table.shape[0] ** 0.5)
    if side * side != table.shape[0]:
        raise CheckpointError(f"a relative-position table of {table.shape[0]} rows is not square")
    grid = table.T.reshape(1, -1, side, side).float()
    resized = F.interpolate(grid, size=target, mode="bicubic", align_corners=False)
    return resized.reshape(table.shape[1], -1).T.to(table.dtype).contiguous()


def resize_swin_windows(state_dict: StateDict, backbone: nn.Module) -> StateDict:
    """Resize every relative-position table to the window of the block it loads into."""
    suffix = ".relative_position_bias_table"
    resized = dict(state_dict)
    for key, table in state_dict.items():
        if key.endswith(suffix):
            try:
                attn = backbone.get_submodule(key[: -len(suffix)])
            except AttributeError:
                continue  # not in this model: reported as unexpected by the strict load
            resized[key] = resize_rel_pos_table(table, attn.window_size)
    return resized


def backbone_filter(backbone: nn.Module):
    """The timm conversion function for the backbone's family (key renames, table and patch resizing)."""
    if isinstance(backbone, SwinTransformer):
        return swin_filter_fn
    return getattr(sys.modules[type(backbone).__module__], "checkpoint_filter_fn", None)


def classifier_keys(backbone: nn.Module) -> set[str]:
    """State-dict keys of the classification head."""
    head = backbone.get_classifier()
    ids = {id(p) for p in head.parameters()}
    return {n for n, p in backbone.named_parameters() if id(p) in ids}


def convert_state_dict(state_dict: StateDict, model: SuperImageClassifier) -> tuple[StateDict, dict[str, str]]:
    """Map a checkpoint of any supported format onto ``model``'s keys and shapes (pure: no loading).

    Returns the converted state dict (keys under ``backbone.``) and the keys dropped with the reason.
    """
    backbone = model.backbone
    sd = strip_prefix(state_dict, "backbone.")
    own = backbone.state_dict()
    dropped: dict[str, str] = {}
    if "frame_pos_embed" in sd and "frame_pos_embed" in own:
        sd["frame_pos_embed"] = resize_frame_embed(sd["frame_pos_embed"], own["frame_pos_embed"].shape[1])
    if isinstance(backbone, SwinTransformer):
        sd = resize_swin_windows(sd, backbone)  # bicubic, before timm's filter sees the tables
    filter_fn = backbone_filter(backbone)
    if filter_fn is not None:
        sd = filter_fn(sd, backbone)
    for key in classifier_keys(backbone):
        if key in sd and sd[key].shape != own[key].shape:
            dropped[key] = f"class count differs ({tuple(sd[key].shape)} in checkpoint, {tuple(own[key].shape)} here)"
            del sd[key]
    return {f"backbone.{k}": v for k, v in sd.items()}, {f"backbone.{k}": v for k, v in dropped.items()}


def allowed_missing(model: SuperImageClassifier, key: str, dropped: dict[str, str]) -> str | None:
    """Why ``key`` may stay freshly initialised when absent from a checkpoint, or None if it may not."""
    if key in dropped:
        return dropped[key]
    if key.endswith("frame_pos_embed"):
        return "the checkpoint has no frame embedding"
    if key.startswith(model.new_module_prefixes()):
        return "a module image checkpoints do not have"
    return None


def load_pretrained(model: SuperImageClassifier, pretrained: str | os.PathLike | HubWeights) -> LoadReport:
    """Load a checkpoint file, or weights by name, into ``model``; CheckpointError naming missing/unexpected keys.

    Names are those :func:`sifar.models.hub_weights.resolve_weights` reads (``swin_base_patch4_window12_384.ms_in22k``,
    ``hf-hub:org/name``); their file is fetched into the Hugging Face cache, and their pretrained cfg's mean/std
    become ``model.mean``/``model.std``: the weights were trained on inputs normalised so.
    """
    source = resolve_weights(pretrained)
    if isinstance(source, Path):
        return load_file(model, source)
    path, cfg = fetch_weights(source)
    report = load_file(model, path, label=f"{source.name} ({path})")
    model.mean, model.std = tuple(cfg.get("mean", model.mean)), tuple(cfg.get("std", model.std))
    _logger.info("%s: input normalised with mean %s, std %s", source.name, model.mean, model.std)
    return report


def load_file(model: SuperImageClassifier, path: str | os.PathLike, label: str | None = None) -> LoadReport:
    """Load the checkpoint file ``path`` into ``model`` (``label`` names it in messages; default the path)."""
    label = label or str(path)
    converted, dropped = convert_state_dict(read_state_dict(path), model)
    missing, unexpected = _load(model, converted, label)
    report = LoadReport(source=label)
    bad_missing = []
    for key in missing:
        reason = allowed_missing(model, key, dropped)
        if reason is None:
            bad_missing.append(key)
        else:
            report.fresh[key] = reason
    if bad_missing or unexpected:
        hint = " (a frame embedding needs frame_embed=True)" if any("frame_pos_embed" in k for k in unexpected) else ""
        raise CheckpointError(
            f"{label} does not fit {model.name}{hint}: missing keys {_short(bad_missing)}; "
            f"unexpected keys {_short(unexpected)}"
        )
    for key, reason in report.fresh.items():
        _logger.info("%s: %s left at its initialisation: %s", label, key, reason)
    return report


def _load(model: nn.Module, state_dict: StateDict, source: str) -> tuple[list[str], list[str]]:
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(f"{source} does not fit {getattr(model, 'name', 'the model')}: {err}") from err
    return list(result.missing_keys), list(result.unexpected_keys)


def _short(keys: list[str], limit: int = 12) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")
