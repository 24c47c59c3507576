"""The temporal study's rows, as data: each a backbone, the way frames reach it, and the frame orders it is
evaluated in. ``tools.temporal_study`` runs them; ``tools.temporal_report`` titles them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowSpec:
    """One row of the study: which backbone, how frames reach it, and the frame orders it is evaluated in."""

    name: str
    title: str
    backbone: str  # "swin", "cnn" or "cnn_large_kernel" (see StudySettings.model)
    layout: str | None = "3x3"
    frame_average: bool = False
    orders: tuple[str, ...] = ("normal",)


ROWS = (
    RowSpec("sifar_3x3", "SIFAR Swin, 3x3", "swin", "3x3", orders=("normal", "reverse", "shuffle")),
    RowSpec("frame_average", "Frame average (TSN-style), same Swin", "swin", None, frame_average=True,
            orders=("normal", "reverse")),
    RowSpec("sifar_2x4", "SIFAR Swin, 2x4", "swin", "2x4"),
    RowSpec("sifar_1x8", "SIFAR Swin, 1x8", "swin", "1x8"),
    RowSpec("resnet", "SIFAR ResNet-18, 3x3", "cnn", "3x3"),
    RowSpec("resnet_large_kernel", "SIFAR ResNet-18 + 7x7 block, 3x3", "cnn_large_kernel", "3x3"),
)
ROW_NAMES = tuple(row.name for row in ROWS)
