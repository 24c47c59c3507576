"""tools/bench_train.py's run plan (the measurements themselves need a GPU: tests/test_gpu.py, the device)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tools.bench_train import VARIANTS, end_to_end_choices, planned_runs


def planned(runs: str = "", models: str = "SIFAR-B-12", variants: str = "official,flex-bf16-compile",
            modes: str = "train,infer"):
    return planned_runs(SimpleNamespace(runs=runs, models=models, variants=variants, modes=modes))


def plan(*args: str) -> list[tuple[str, str, str]]:
    return [(model, variant.name, mode) for model, variant, mode in planned(*args)]


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


def test_steady_train_speed_reads_the_trainers_metrics_after_the_skipped_steps(tmp_path):
    from tools.bench_train import steady_train_speed

    metrics = tmp_path / "metrics.jsonl"  # as sifar-train writes it, an epoch record among the steps
    records = [{"kind": "step", "step": step, "time": 100.0 * min(step, 3) + max(0, step - 3), "wait_s": 0.25}
               for step in range(1, 7)]  # two slow steps (compilation), then one a second, a quarter of it waiting
    records.insert(4, {"kind": "epoch", "epoch": 0, "time": 301.5})
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    clips_per_s, wait = steady_train_speed(metrics, batch=32, skip=2)
    assert clips_per_s == 32.0 and wait == 0.25


def test_end_to_end_compares_only_variants_the_commands_run():
    """The end-to-end commands run the library's defaults: not the benchmark's own tiles or compile options, fp8 or
    the kernel and block candidates (attention, training's GELU epilogue, window order, fused norms), or inference's
    GELU as a pass of its own."""
    assert {v.name for v in VARIANTS if v.as_the_commands_run} == {
        "official", "sdpa-bf16", "sdpa-bf16-compile", "flex-bf16-compile"}


def test_end_to_end_runs_the_planned_default_variants_or_the_one_named_that_the_commands_can_run():
    runs = ("SIFAR-B-12/official/train,SIFAR-B-12/flex-bf16-compile/train,SIFAR-B-12/flex-bf16-compile-geluaux-dgelu/"
            "train,SIFAR-B-12/flex-fp8-compile/train")
    assert end_to_end_choices("", "SIFAR-B-12", planned(runs)) == ["official", "flex-bf16-compile"]
    assert end_to_end_choices("flex-bf16-compile-geluaux-dgelu", "SIFAR-B-12", planned(runs)) == [
        "flex-bf16-compile-geluaux-dgelu"]
    geluaux = next(v for v in VARIANTS if v.name == "flex-bf16-compile-geluaux-dgelu")
    assert geluaux.commands_can_run and not geluaux.as_the_commands_run and geluaux.train_flags == ["--gelu-epilogue"]


@pytest.mark.parametrize("name, runs, message", [
    ("flex-fp8-compile", "SIFAR-B-12/flex-fp8-compile/train", "the commands run only official, "),
    ("flex-bf16-compile-timmnorm", "SIFAR-B-12/flex-bf16-compile-timmnorm/infer", "the commands run only official, "),
    ("flex-bf16-compile-autotuned-linears", "SIFAR-B-12/flex-bf16-compile-autotuned-linears/infer",
     "the commands run only official, "),
    ("flex-bf16-compile-fusednorm-train", "SIFAR-B-12/flex-bf16-compile-fusednorm-train/train",
     "the commands run only official, "),
    ("no-such-variant", "SIFAR-B-12/official/train", "--e2e-variant 'no-such-variant': the commands run only"),
    ("flex-bf16-compile-geluaux-dgelu", "SIFAR-B-12/flex-bf16-compile/train",
     "add SIFAR-B-12/flex-bf16-compile-geluaux-dgelu/train to the run"),
    ("", "SIFAR-B-12/flex-bf16-compile/infer", "add SIFAR-B-12/flex-bf16-compile/train to the run"),
])
def test_an_end_to_end_variant_without_its_step_or_that_the_commands_cannot_run_stops_before_the_gpu(name, runs,
                                                                                                     message):
    with pytest.raises(SystemExit, match=message):
        end_to_end_choices(name, "SIFAR-B-12", planned(runs))
