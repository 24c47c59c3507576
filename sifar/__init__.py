"""sifar: video action recognition with super images (Fan, Chen, Panda, ICLR 2022)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Predictor", "PredictSettings", "__version__"]


def __getattr__(name: str) -> Any:
    # The predictor pulls in torch and timm; the command lines' --version and --help need neither.
    if name in ("Predictor", "PredictSettings"):
        from sifar import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'sifar' has no attribute {name!r}")
