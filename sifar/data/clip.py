"""The clip a model is trained on: how many frames, at what size, sampled how.

Training saves it in every checkpoint (``"clip"``), and evaluation and prediction sample from it, so a
model trained on dense clips is evaluated and served on dense clips unless told otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from sifar.data.sampling import Mode


@dataclass(frozen=True)
class ClipSettings:
    num_frames: int = 8
    frame_size: int = 224
    sampling: Mode = "uniform"  # uniform: one frame per segment (the paper); dense: frames ``stride`` apart
    stride: int = 4

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ClipSettings:
        """Settings from a saved dict (keys this version does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def loader_options(self) -> dict[str, Any]:
        """The keyword arguments of ``build_loader`` that sample this clip."""
        return asdict(self)
