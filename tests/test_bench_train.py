"""tools/bench_train.py's run plan (the measurements themselves need a GPU: tests/test_gpu.py, the device)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tools.bench_train import planned_runs


def plan(runs: str = "", models: str = "SIFAR-B-12", variants: str = "official,flex-bf16-compile",
         modes: str = "train,infer") -> list[tuple[str, str, str]]:
    args = SimpleNamespace(runs=runs, models=models, variants=variants, modes=modes)
    return [(model, variant.name, mode) for model, variant, mode in planned_runs(args)]


def test_without_runs_every_model_mode_and_variant_is_measured():
    assert plan() == [("SIFAR-B-12", "official", "train"), ("SIFAR-B-12", "flex-bf16-compile", "train"),
                      ("SIFAR-B-12", "official", "infer"), ("SIFAR-B-12", "flex-bf16-compile", "infer")]


def test_runs_measure_just_the_items_given_in_their_order():
    assert plan("SIFAR-L-14-16f/flex-bf16-compile/train,SIFAR-B-12/official/infer") == [
        ("SIFAR-L-14-16f", "flex-bf16-compile", "train"), ("SIFAR-B-12", "official", "infer")]


@pytest.mark.parametrize("item, message", [
    ("SIFAR-B-12/officia/train", "is not MODEL/VARIANT/MODE"),
    ("SIFAR-B-12/official/training", "is not MODEL/VARIANT/MODE"),
    ("SIFAR-B-12/official", "is not MODEL/VARIANT/MODE"),
    ("SIFAR-B-99/official/train", "unknown model 'SIFAR-B-99'"),
])
def test_a_bad_item_stops_before_any_measurement_naming_it(item, message):
    with pytest.raises(SystemExit, match=message) as stopped:
        plan(item)
    assert item in str(stopped.value)
