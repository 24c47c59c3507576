"""Data: datasets' shipped formats, shard writing, frame sampling, transforms and the streaming loader."""

from __future__ import annotations

from typing import Any

from sifar.data.clip import ClipSettings

__all__ = ["ClipSettings", "LoaderSettings", "build_loader"]


def __getattr__(name: str) -> Any:
    # The loader pulls in torch; shard writing, formats and synth do not need it, so import it on first use.
    if name == "build_loader":
        from sifar.data.loader import build_loader

        return build_loader
    if name == "LoaderSettings":
        from sifar.data.pipeline import LoaderSettings

        return LoaderSettings
    raise AttributeError(f"module 'sifar.data' has no attribute {name!r}")
