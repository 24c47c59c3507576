"""One registry of SIFAR model configs, keyed by the official release's names, with the paper's aliases.

A config is data: the backbone family and architecture, the clip it expects (frames, layout, frame size).
``sifar.models.create_model`` is the one door that turns a config into a module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sifar.layout import Layout, parse_layout


@dataclass(frozen=True)
class ModelConfig:
    """What a registered name means: backbone family + architecture, and the clip it is built for."""

    name: str
    family: str  # "swin", "resnet" or "timm" (any timm image classifier)
    num_frames: int
    frame_size: int
    arch: dict[str, Any] = field(default_factory=dict)
    layout: Layout | None = None  # None: the paper's grid rule for num_frames
    aliases: tuple[str, ...] = ()
    description: str = ""

    @property
    def grid(self) -> Layout:
        return parse_layout(self.layout, self.num_frames)


_CONFIGS: dict[str, ModelConfig] = {}
_ALIASES: dict[str, str] = {}
_BUILDERS: dict[str, Callable[..., Any]] = {}


def register_family(family: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``builder(config, num_classes, **overrides) -> backbone`` for configs of ``family``."""

    def wrap(builder: Callable[..., Any]) -> Callable[..., Any]:
        _BUILDERS[family] = builder
        return builder

    return wrap


def register_config(config: ModelConfig) -> ModelConfig:
    """Add a config under its name and aliases (names are matched case-insensitively)."""
    for key in (config.name, *config.aliases):
        if key.lower() in _ALIASES:
            raise ValueError(f"model name {key!r} is registered twice")
        _ALIASES[key.lower()] = config.name
    _CONFIGS[config.name] = config
    return config


def get_config(name: str) -> ModelConfig:
    """The config registered under ``name`` or one of its aliases; a clear error lists close names."""
    canonical = _ALIASES.get(name.lower())
    if canonical is None:
        known = ", ".join(sorted(_CONFIGS))
        raise KeyError(f"unknown model {name!r}; registered models: {known} (or 'timm:<any timm model>')")
    return _CONFIGS[canonical]


def get_builder(family: str) -> Callable[..., Any]:
    return _BUILDERS[family]


def list_configs() -> list[ModelConfig]:
    """Every registered config, in registration order."""
    return list(_CONFIGS.values())
