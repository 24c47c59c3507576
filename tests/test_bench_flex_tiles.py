"""The FlexAttention tile sweep's settings and bookkeeping on the CPU (the timings need a GPU: the device)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch.nn.attention.flex_attention as flex

from sifar.models.window_attention import FLEX_KERNEL_OPTIONS
from sifar.models import create_model
from tools.bench_flex_tiles import INFER_SETTINGS, MODES, TRAIN_SETTINGS, floor_ms, setting_totals
from tools.bench_window_attention import attention_floor_ms, selected_blocks

SPARSE_BLOCK = 128  # FlexAttention's default block-mask granularity: every tile must divide it


def option_name(key: str) -> str:
    return key.removeprefix("fwd_").removeprefix("bwd_")


@pytest.mark.parametrize("name, setting", [*INFER_SETTINGS.items(), *TRAIN_SETTINGS.items()])
def test_every_setting_names_real_kernel_options_and_tiles_flex_accepts(name, setting):
    """A misspelt option would be timed as the default; a tile must be a power of two dividing the mask's
    blocks, or FlexAttention refuses it at compile time on the GPU."""
    if not hasattr(flex, "FlexKernelOptions"):
        pytest.skip("torch before 2.9 does not list FlexAttention's kernel options")
    options = {**FLEX_KERNEL_OPTIONS, **setting}
    assert {option_name(key) for key in options} <= set(flex.FlexKernelOptions.__annotations__), name
    for key in ("BLOCK_M", "BLOCK_N", "BLOCK_M1", "BLOCK_N1", "BLOCK_M2", "BLOCK_N2"):
        tile = options[key]
        assert tile >= 16 and tile & (tile - 1) == 0 and SPARSE_BLOCK % tile == 0, (name, key, tile)


def test_each_mode_starts_with_the_tiles_it_is_compared_with():
    """The first setting is the reference of the printed ratios: the forward's 64 x 64 tiles before session 22."""
    for settings, _batch in MODES.values():
        assert next(iter(settings.values())) == {"BLOCK_N": 64}
    assert FLEX_KERNEL_OPTIONS["BLOCK_N"] == 32  # what session 22 adopted


def test_setting_totals_weigh_each_block_and_show_a_failed_setting_as_nan():
    rows = [{"setting": "a", "blocks": 9, "gpu_ms": 1.0}, {"setting": "a", "blocks": 2, "gpu_ms": 0.5},
            {"setting": "b", "blocks": 9, "gpu_ms": 0.5}, {"setting": "b", "block": "stage3", "error": "refused"}]
    totals = setting_totals(rows)
    assert totals["a"] == 10.0 and math.isnan(totals["b"])


def test_an_unknown_setting_stops_naming_it_and_the_modes_settings():
    result = subprocess.run([sys.executable, "-m", "tools.bench_flex_tiles", "--mode", "train", "--settings",
                             "8 warps,9 warps"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--settings: unknown ['9 warps']; train has" in result.stderr and "'8 warps'" in result.stderr


def test_the_floor_covers_the_blocks_swept_each_times_its_number():
    model = create_model("SIFAR-B-12", num_classes=10)
    every, some = selected_blocks(model, None), selected_blocks(model, "stage2,stage3")
    assert [label for label, _block, _count in some] == ["stage2", "stage3"]
    stage2, stage3 = (block for _label, block, _count in some)
    assert floor_ms(some, 32, True) == pytest.approx(9 * attention_floor_ms(stage2, 32, True)
                                                     + 2 * attention_floor_ms(stage3, 32, True))
    assert floor_ms(every, 96, False) > floor_ms(some, 96, False)
