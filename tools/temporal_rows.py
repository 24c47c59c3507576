"""The temporal study's rows, as data: each a backbone, the clip it sees, how frames reach it, the frame
orders it is evaluated in and how many seeds it is trained with. ``tools.temporal_study`` runs them;
``tools.temporal_report`` titles and compares them."""

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
    frame_embed: bool = False
    num_frames: int = 8
    frame_size: int | None = None  # None: the recipe's frame size
    orders: tuple[str, ...] = ("normal",)
    seeds: int | None = None  # at most this many seeds (None: every seed the run asks for)
    cam: bool = False  # score its class activation maps by the pointing game (tools.cam_study)
    schedule: int = 1  # training length, in multiples of the recipe's epochs (the warmup stays the recipe's)
    precision: str = "auto"  # sifar-train --precision ("auto": bf16 on the GPU)
    gelu_epilogue: bool = False  # sifar-train --gelu-epilogue (the MLPs' tanh GELU in cuBLASLt's epilogues)


ROWS = (
    RowSpec("sifar_3x3", "SIFAR Swin, 3x3", "swin", "3x3", orders=("normal", "reverse", "shuffle"), cam=True),
    RowSpec("frame_average", "Frame average (TSN-style), same Swin", "swin", None, frame_average=True,
            orders=("normal", "reverse"), seeds=1),
    RowSpec("resnet", "SIFAR ResNet-18, 3x3", "cnn", "3x3", cam=True),
    RowSpec("sifar_2x4", "SIFAR Swin, 2x4", "swin", "2x4"),
    RowSpec("sifar_1x8", "SIFAR Swin, 1x8", "swin", "1x8"),
    RowSpec("sifar_3x3_frame_embed", "SIFAR Swin, 3x3 + frame embedding", "swin", "3x3", frame_embed=True),
    RowSpec("resnet_large_kernel", "SIFAR ResNet-18 + 7x7 block, 3x3", "cnn_large_kernel", "3x3"),
    # where layout can matter: 16 frames of 32 px, a square grid against a long strip whose far frames no
    # window of the early stages joins
    RowSpec("sifar16_4x4", "SIFAR Swin, 16 frames of 32 px, 4x4", "swin", "4x4", num_frames=16, frame_size=32),
    RowSpec("sifar16_2x8", "SIFAR Swin, 16 frames of 32 px, 2x8", "swin", "2x8", num_frames=16, frame_size=32),
    # is the Swin's miss on rotation direction underfitting? the 3x3 row trained twice as long
    RowSpec("sifar_3x3_long", "SIFAR Swin, 3x3, twice the steps", "swin", "3x3", seeds=1, schedule=2),
    # issue 30: fp8 linear layers (torchao) adopted only if they train as bf16 does
    RowSpec("sifar_3x3_fp8", "SIFAR Swin, 3x3, fp8 linear layers", "swin", "3x3", precision="fp8"),
    # issue 30: the tanh GELU of --gelu-epilogue made a default only if it trains as the exact GELU does
    RowSpec("sifar_3x3_gelu_epilogue", "SIFAR Swin, 3x3, GELU in the GEMM epilogues", "swin", "3x3",
            gelu_epilogue=True),
)
ROW_NAMES = tuple(row.name for row in ROWS)
ROWS_BY_NAME = {row.name: row for row in ROWS}
