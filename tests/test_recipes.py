"""The paper's recipes in configs/: every file reads as a training config, builds its model, costs what the
paper's tables say, and carries the paper's training values."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from timm.models import get_pretrained_cfg

from sifar.config_fields import config_from_dict, read_config_file
from sifar.models.flops import count_cost
from sifar.models.hub_weights import HubWeights, resolve_weights
from sifar.models.settings import resolve_clip
from sifar.train_config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(p for p in CONFIGS.rglob("*.yaml") if "_base" not in p.parts)

# GFLOPs of one view (multiply-adds), Tables 1, 3 and 4; the CNN rows of Table 7 and SIFAR-L-12 on 16 frames
# (Table 5) have no figure in the paper.
PAPER_GFLOPS = {("SIFAR-B-7", 8): 138, ("SIFAR-B-12", 8): 106, ("SIFAR-B-14", 8): 147, ("SIFAR-B-12-16f", 16): 189,
                ("SIFAR-B-14-16f", 16): 263, ("SIFAR-L-14-16f", 16): 576, ("SIFAR-B-12-384", 8): 423,
                ("SIFAR-L-12-384", 8): 944}
DATASETS = {"k400", "ssv2", "mit", "jester", "diving48"}


def recipe(path: Path) -> TrainConfig:
    return config_from_dict(TrainConfig, read_config_file(path))


@functools.cache
def gflops(name: str, num_frames: int, layout: str, frame_size: int) -> float:
    return count_cost(name, num_frames=num_frames, layout=layout, frame_size=frame_size).gflops


def test_every_dataset_of_the_paper_has_recipes():
    assert {p.parent.name for p in RECIPES} == DATASETS
    assert len(RECIPES) >= 36


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_recipe_builds_its_model_at_the_papers_cost(path):
    config = recipe(path)
    clip = resolve_clip(config.model, config.clip)   # the model exists and takes the clip
    expected = PAPER_GFLOPS.get((config.model.name, clip.num_frames))
    if expected is not None:
        measured = gflops(config.model.name, clip.num_frames, clip.layout, clip.frame_size)
        assert abs(measured - expected) / expected < 0.03, (measured, expected)
    else:
        assert config.model.name.startswith("SIFAR-R") or config.model.name == "SIFAR-L-12", config.model.name


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_recipe_has_the_papers_training_values_and_cites_its_row(path):
    config, dataset = recipe(path), path.parent.name
    optim = config.optim
    assert (optim.epochs, optim.warmup_epochs) == ((15, 5) if dataset == "mit" else (30, 5))
    assert (optim.lr, optim.scale_lr, optim.weight_decay) == (1e-4, False, 0.05)
    assert (optim.mixup, optim.cutmix, optim.smoothing, config.model.drop_path) == (0.8, 1.0, 0.1, 0.1)
    assert (config.clip.sampling, config.clip.flip) == ("uniform", "auto")   # auto: off for ssv2 and jester
    assert config.loader.batch_size * 8 in (96, 144, 192)   # the paper's batches, over 8 GPUs
    swin = not config.model.name.startswith("SIFAR-R")
    assert config.model.frame_embed == (swin and dataset == "ssv2")   # Table 8b: APE on SSV2 only
    assert re.search(r"paper Tables? \d", path.read_text().splitlines()[0]), "the first line cites the table"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_recipes_initial_weights_exist_by_name_or_come_from_the_k400_recipe(path):
    """SSV2 rows start from the same model's K400 run (the paper's choice); the others from timm weights."""
    pretrained = recipe(path).model.pretrained
    if path.parent.name == "ssv2":
        assert pretrained == f"runs/k400/{path.stem}/best.pt"
        assert recipe(CONFIGS / "k400" / f"{path.stem}.yaml").model.name == recipe(path).model.name
    else:
        assert resolve_weights(pretrained) == HubWeights(pretrained, get_pretrained_cfg(pretrained).to_dict())
