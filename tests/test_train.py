"""Trainer, evaluator and predictor end to end on tiny real shards (synth -> shard), on CPU."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf
from click.testing import CliRunner

from sifar.checkpoint import CheckpointWriteError, load_checkpoint, load_trained, save_checkpoint
from sifar.cli.evaluate import main as eval_main
from sifar.cli.predict import main as predict_main
from sifar.cli.train import main as train_main
from sifar.data.clip import ClipSettings
from sifar.data.pipeline import LoaderSettings
from sifar.data.ffmpeg import DecodeSettings
from sifar.data.sharding import ShardJob, shard_dataset
from sifar.data.synth import SynthConfig, make_dataset
from sifar.data.transforms import normalize
from sifar.predict import PredictSettings, Predictor, video_views
from sifar.models.float8 import FP8_NON_FINITE_ADVICE
from sifar.train import LaggedLosses, NonFiniteLossError
from sifar.config_fields import ConfigError
from sifar.train_config import TrainConfig

TINY = ["--model", "SIFAR-N-6", "--frame-size", "32", "--batch-size", "4", "--workers", "0",
        "--warmup-epochs", "0.5", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    synth = SynthConfig(out=root / "synth", videos=30, frames=12, width=48, height=48, workers=2, val_fraction=0.3)
    make_dataset(synth, progress=False)
    shards = root / "shards"
    for split in ("train", "val"):
        shard_dataset(ShardJob(dataset="csv", src=synth.out, out=shards, split=split, workers=2, progress=False,
                               decode=DecodeSettings(short_side=0)))
    return {"shards": shards, "videos": synth.out / "videos"}


def run_train(args: list[str]):
    return CliRunner().invoke(train_main, args, catch_exceptions=False)


def step_losses(output: Path) -> list[tuple[int, float]]:
    lines = [json.loads(l) for l in (output / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if r["kind"] == "step"]


def test_train_writes_checkpoints_metrics_and_plots(data, tmp_path):
    out = tmp_path / "run"
    result = run_train(["--shards", str(data["shards"]), "--val-shards", str(data["shards"]), "--output", str(out),
                        "--epochs", "1", "--ema-decay", "0.9", *TINY])
    assert result.exit_code == 0, result.output
    for name in ("last.pt", "best.pt", "config.json", "metrics.jsonl", "curves.png", "best_confusion.png",
                 "best_report.json", "summary.json"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["optim"]["lr"] == 1e-3 and config["model"]["name"] == "SIFAR-N-6"
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert steps and all({"loss", "lr", "clips_per_s", "data_wait"} <= set(r) for r in steps)
    epoch = next(r for r in records if r["kind"] == "epoch")
    assert epoch["num_samples"] == json.loads((data["shards"] / "val.json").read_text())["num_samples"]


def test_a_runs_config_json_reproduces_it_and_options_override_a_config_file(data, tmp_path):
    first, again, third = tmp_path / "first", tmp_path / "again", tmp_path / "third"
    common = ["--epochs", "1", "--steps-per-epoch", "3"]
    assert run_train(["--shards", str(data["shards"]), "--output", str(first), *common, *TINY]).exit_code == 0
    assert run_train(["--config", str(first / "config.json"), "--output", str(again)]).exit_code == 0
    saved, redone = (json.loads((out / "config.json").read_text()) for out in (first, again))
    assert {**saved, "output": None} == {**redone, "output": None}
    assert step_losses(again) == step_losses(first)   # the same run again, step for step

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"shards: {data['shards']}\nmodel:\n  name: SIFAR-N-6\nclip:\n  frame_size: 32\n"
                      "loader:\n  batch_size: 4\n  workers: 0\noptim:\n  lr: 1e-3  # text to YAML 1.1\n"
                      "  epochs: 5\n  warmup_epochs: 0.5\n")
    assert run_train(["--config", str(recipe), "--output", str(third), "--epochs", "1",
                      "--steps-per-epoch", "2"]).exit_code == 0
    config = json.loads((third / "config.json").read_text())
    assert (config["optim"]["epochs"], config["optim"]["lr"], config["loader"]["batch_size"]) == (1, 1e-3, 4)


@pytest.mark.parametrize("text, args, message", [
    ("optim:\n  lrr: 1\n", [], "bad.yaml: optim.lrr: no such setting"),
    ("optim:\n  lr: -1\n", [], "bad.yaml: lr: -1.0 is not in the range x>0"),
    ("[1, 2]\n", [], "bad.yaml holds list, not a mapping of settings"),
    ("optim:\n  epochs: 2\n", ["--shards", "s"], "--output is required (on the command line or in --config)"),
])
def test_a_bad_config_file_is_named_before_any_work(tmp_path, text, args, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = CliRunner().invoke(train_main, ["--config", str(bad), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


def test_resume_takes_a_checkpoint_path_and_refuses_a_missing_one(data, tmp_path):
    common = ["--shards", str(data["shards"]), "--epochs", "1", "--steps-per-epoch", "4", "--save-every", "100", *TINY]
    first, moved = tmp_path / "first", tmp_path / "moved"
    assert run_train([*common, "--output", str(first), "--max-steps", "2"]).exit_code == 0
    assert run_train([*common, "--output", str(moved), "--resume", str(first / "last.pt")]).exit_code == 0
    assert [step for step, _ in step_losses(moved)] == [3, 4]   # went on from the other run's step 2
    missing = CliRunner().invoke(train_main, [*common, "--output", str(tmp_path / "x"), "--resume",
                                              str(tmp_path / "none.pt")])
    assert missing.exit_code == 1 and f"--resume {tmp_path / 'none.pt'}: no checkpoint there" in missing.output
    assert not (tmp_path / "x").exists()
    assert run_train([*common, "--output", str(first), "--no-resume", "--max-steps", "1"]).exit_code == 0
    assert [step for step, _ in step_losses(first)] == [1]   # started over


def test_object_storage_is_refused_where_a_local_folder_is_written(data, trained):
    trained_run = CliRunner().invoke(train_main, ["--shards", str(data["shards"]), "--output", "s3://bucket/run",
                                                  *TINY])
    assert trained_run.exit_code == 2 and "'--output': s3://bucket/run is object storage" in trained_run.output
    evaluated = CliRunner().invoke(eval_main, ["--shards", str(data["shards"]), "--checkpoint", str(trained),
                                               "--output", "gs://bucket/eval"])
    assert evaluated.exit_code == 2 and "'--output': gs://bucket/eval is object storage" in evaluated.output
    assert not Path("s3:").exists() and not Path("gs:").exists()


@pytest.mark.parametrize("command, name", [(train_main, "sifar-train"), (eval_main, "sifar-eval"),
                                           (predict_main, "sifar-predict")])
def test_every_command_says_its_version(command, name):
    result = CliRunner().invoke(command, ["--version"])
    assert result.exit_code == 0 and result.output.startswith(f"{name}, version ")


def test_a_model_trained_from_weights_by_name_is_served_with_their_normalization(data, tmp_path):
    """Weights whose inputs were normalised otherwise than ImageNet's (an hf-hub: repository's own mean and
    std): training, and every later load of its checkpoints, normalise as they expect."""
    from test_hub_weights import cache_repo, hub_environment

    normalization = {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    out = tmp_path / "run"
    with hub_environment(tmp_path / "hub") as cache:
        save_for_hf(timm.create_model("test_resnet"), tmp_path / "export", safe_serialization=True,
                    model_config={"pretrained_cfg": normalization})
        cache_repo(cache, "sifar-tests/tiny-resnet", {name: tmp_path / "export" / name
                                                      for name in ("config.json", "model.safetensors")})
        result = run_train(["--shards", str(data["shards"]), "--output", str(out), "--model", "timm:test_resnet",
                            "--pretrained", "hf-hub:sifar-tests/tiny-resnet", "--frame-size", "32", "--epochs", "1",
                            "--steps-per-epoch", "1", "--batch-size", "4", "--workers", "0"])
        assert result.exit_code == 0, result.output
    served = load_trained(out / "last.pt")
    assert (served.model.mean, served.model.std) == (normalization["mean"], normalization["std"])


def test_resume_continues_the_loss_curve_step_for_step(data, tmp_path):
    common = ["--shards", str(data["shards"]), "--epochs", "2", "--steps-per-epoch", "3", "--save-every", "100",
              *TINY]
    straight = tmp_path / "straight"
    assert run_train([*common, "--output", str(straight)]).exit_code == 0
    broken = tmp_path / "broken"
    first = run_train([*common, "--output", str(broken), "--max-steps", "4"])  # stops mid-epoch 2
    assert first.exit_code == 0, first.output
    assert len(step_losses(broken)) == 4
    second = run_train([*common, "--output", str(broken)])
    assert second.exit_code == 0, second.output
    expected, resumed = step_losses(straight), step_losses(broken)
    assert [s for s, _ in resumed] == [1, 2, 3, 4, 5, 6]
    assert [l for _, l in resumed] == pytest.approx([l for _, l in expected], rel=1e-5, abs=1e-6)


def test_eval_reports_and_frame_order_options(data, tmp_path):
    out = tmp_path / "run"
    assert run_train(["--shards", str(data["shards"]), "--output", str(out), "--epochs", "1", *TINY]).exit_code == 0
    for flag in ([], ["--reverse-frames"], ["--shuffle-frames"]):
        result = CliRunner().invoke(eval_main, ["--shards", str(data["shards"]), "--checkpoint", str(out / "last.pt"),
                                                "--crops", "3", "--clips", "2", "--workers", "0", *flag])
        assert result.exit_code == 0, result.output
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["num_samples"] == json.loads((data["shards"] / "val.json").read_text())["num_samples"]
    assert report["clips"] == 2 and report["crops"] == 3
    assert (out / "eval" / "reverse_report.json").exists() and (out / "eval" / "shuffle_confusion.png").exists()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    assert run_train(["--shards", str(data["shards"]), "--output", str(out), "--epochs", "1", *TINY]).exit_code == 0
    return out / "last.pt"


def run_eval(shards: Path, checkpoint: Path, *extra: str):
    return CliRunner().invoke(eval_main, ["--shards", str(shards), "--checkpoint", str(checkpoint), "--workers", "0",
                                          "--output", str(checkpoint.parent / "eval"), *extra])


def test_eval_counts_against_the_manifest_and_names_the_shards_that_came_up_short(data, trained, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(data["shards"], shards)
    listed = json.loads((shards / "val.json").read_text())["num_samples"]
    whole = run_eval(shards, trained)
    assert whole.exit_code == 0, whole.output
    assert f"on {listed} videos of {listed} listed (0 skipped" in whole.output
    report = json.loads((trained.parent / "eval" / "report.json").read_text())
    counted = (report["expected"], report["evaluated"], report["skipped"], report["short_shards"])
    assert counted == (listed, listed, 0, [])

    (shards / "val-000000.tar").write_bytes(b"")   # emptied: nothing to read, no error from the reader
    short = run_eval(shards, trained)
    assert short.exit_code == 1
    assert f"evaluated 0 of the {listed} videos the manifest lists" in short.output
    assert f"val-000000.tar: 0 of {listed} read" in short.output and "--allow-partial" in short.output
    report = json.loads((trained.parent / "eval" / "report.json").read_text())   # written all the same
    assert (report["expected"], report["evaluated"]) == (listed, 0)
    accepted = run_eval(shards, trained, "--allow-partial")
    assert accepted.exit_code == 0 and f"on 0 videos of {listed} listed" in accepted.output


def test_eval_of_the_training_split_reads_each_video_once_as_evaluation_does(data, trained):
    """`--split train` names which videos, not how they are read: the same centre views, every video once (a
    training stream would resample shards, crop at random and stop at whole batches)."""
    listed = json.loads((data["shards"] / "train.json").read_text())["num_samples"]
    for views in (["--crops", "1"], ["--clips", "2", "--crops", "3"]):  # before: a short training stream; refused
        result = run_eval(data["shards"], trained, "--split", "train", "--batch-size", "4", *views)
        assert result.exit_code == 0, result.output
        assert f"on {listed} videos of {listed} listed (0 skipped" in result.output
        report = json.loads((trained.parent / "eval" / "report.json").read_text())
        assert (report["expected"], report["evaluated"], report["short_shards"]) == (listed, listed, [])


def test_training_warns_once_per_short_validation_shard_and_lists_it(data, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(data["shards"], shards)
    (shards / "val-000000.tar").write_bytes(b"")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="validation read 0 of") as caught:
        result = run_train(["--shards", str(shards), "--val-shards", str(shards), "--output", str(out),
                            "--epochs", "2", "--steps-per-epoch", "1", *TINY])
    assert result.exit_code == 0, result.output
    assert len([w for w in caught if "validation read" in str(w.message)]) == 1   # once, not once per epoch
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(url).name for url in summary["val_short_shards"]] == ["val-000000.tar"]
    epochs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"epoch"' in l]
    assert all(r["evaluated"] == 0 and r["expected"] > 0 for r in epochs if r["kind"] == "epoch")


@pytest.mark.parametrize("option, value, message", [("--crops", "2", "1 (centre) or 3"),
                                                     ("--batch-size", "0", "0 is not in the range x>=1"),
                                                     ("--sampling", "sparse", "'sparse' is not one of")])
def test_eval_options_come_from_its_settings_and_are_checked_where_they_enter(trained, option, value, message):
    result = CliRunner().invoke(eval_main, ["--shards", "unused", "--checkpoint", str(trained), option, value])
    assert result.exit_code == 2 and f"'{option}'" in result.output and message in result.output, result.output


@pytest.mark.parametrize("option, value, message", [("--crops", "2", "1 (centre) or 3"),
                                                     ("--clips", "0", "0 is not in the range x>=1"),
                                                     ("--topk", "0", "0 is not in the range x>=1")])
def test_predict_options_come_from_its_settings_and_are_checked_where_they_enter(trained, option, value, message):
    result = CliRunner().invoke(predict_main, ["unused.mp4", "--checkpoint", str(trained), option, value])
    assert result.exit_code == 2 and f"'{option}'" in result.output and message in result.output, result.output


def test_eval_refuses_shards_whose_class_list_differs_from_the_checkpoints(data, trained, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(data["shards"], shards)
    manifest = json.loads((shards / "val.json").read_text())
    manifest["classes"] = manifest["classes"][::-1]   # the same names in another order
    (shards / "val.json").write_text(json.dumps(manifest))
    result = run_eval(shards, trained)
    assert result.exit_code == 1 and "the class lists differ: class 0 is" in result.output


def test_predict_prints_classes_and_rejects_non_videos(data, tmp_path):
    out = tmp_path / "run"
    assert run_train(["--shards", str(data["shards"]), "--output", str(out), "--epochs", "1", *TINY]).exit_code == 0
    video = next(data["videos"].rglob("*.mp4"))
    result = CliRunner().invoke(predict_main, [str(video), "--checkpoint", str(out / "last.pt"), "--json",
                                               "--topk", "3"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.output.strip().splitlines()[-1])["top"]
    assert len(top) == 3 and sum(t["probability"] for t in top) <= 1.0 + 1e-6
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    bad = CliRunner().invoke(predict_main, [str(text), "--checkpoint", str(out / "last.pt")])
    assert bad.exit_code == 1 and "notes.mp4 is not a readable video" in bad.output


def test_a_model_trained_on_dense_clips_with_ema_is_evaluated_and_served_as_it_was_validated(data, tmp_path):
    out = tmp_path / "run"
    trained_args = ["--shards", str(data["shards"]), "--val-shards", str(data["shards"]), "--output", str(out),
                    "--epochs", "1", "--sampling", "dense", "--ema-decay", "0.5", *TINY]
    assert run_train(trained_args).exit_code == 0
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["clip"]["sampling"] == "dense" and checkpoint["validated_with"] == "ema"
    validated = json.loads((out / "summary.json").read_text())["best_top1"]

    def evaluated(*extra: str) -> dict:
        result = CliRunner().invoke(eval_main, ["--shards", str(data["shards"]), "--checkpoint", str(out / "last.pt"),
                                                "--crops", "1", "--workers", "0", "--output", str(tmp_path / "e"),
                                                *extra])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / "e" / "report.json").read_text())

    default = evaluated()
    assert (default["weights"], default["clip"]["sampling"]) == ("ema", "dense")
    assert default["top1"] == pytest.approx(validated, abs=1e-3)   # what training measured, measured again
    assert (evaluated("--no-ema")["weights"], evaluated("--sampling", "uniform")["clip"]["sampling"]) == (
        "model", "uniform")

    served = load_trained(out / "last.pt")
    assert (served.weights, served.clip.sampling) == ("ema", "dense")
    ema = checkpoint["ema"]
    assert all(torch.equal(value, ema[name]) for name, value in served.model.state_dict().items())
    video = next(data["videos"].rglob("*.mp4"))
    views = video_views(video, ClipSettings(8, 32, "3x3", "dense"), clips=1, crops=3)
    with torch.no_grad():
        expected = served.model(normalize(views, served.model.mean, served.model.std)).softmax(-1).mean(0)
    prediction = Predictor(served, "cpu", PredictSettings(topk=1)).predict(video)
    assert prediction.probabilities[0] == pytest.approx(float(expected.max()), rel=1e-5)
    assert served.clip == ClipSettings(8, 32, "3x3", "dense")


def test_demo_model_trains_channels_last_and_evaluates(data, tmp_path):
    out = tmp_path / "vgg"
    common = ["--shards", str(data["shards"]), "--output", str(out), "--epochs", "1", "--model", "SIFAR-VGG-T",
              "--batch-size", "4", "--workers", "0"]
    refused = CliRunner().invoke(train_main, common)   # the default drop path 0.1 has nothing to drop
    assert refused.exit_code == 2 and "--drop-path 0" in refused.output   # refused before any work
    result = run_train([*common, "--drop-path", "0", "--channels-last"])
    assert result.exit_code == 0, result.output
    weights = torch.load(out / "last.pt", map_location="cpu", weights_only=False)["model"]
    first_conv = weights["backbone.stages.0.0.weight"]
    assert first_conv.is_contiguous(memory_format=torch.channels_last) and not first_conv.is_contiguous()
    evaluated = CliRunner().invoke(eval_main, ["--shards", str(data["shards"]), "--checkpoint", str(out / "last.pt"),
                                               "--workers", "0"])
    assert evaluated.exit_code == 0, evaluated.output


def test_class_count_that_disagrees_with_the_manifest(data, tmp_path):
    result = CliRunner().invoke(train_main, ["--shards", str(data["shards"]), "--output", str(tmp_path / "r"),
                                             "--num-classes", "3", *TINY])
    assert result.exit_code == 1 and "disagrees with the manifest" in result.output


def test_layout_that_cannot_hold_the_frames(data, tmp_path):
    result = CliRunner().invoke(train_main, ["--shards", str(data["shards"]), "--output", str(tmp_path / "r"),
                                             "--layout", "2x2", *TINY])
    assert result.exit_code == 2 and "layout 2x2 has 4 cells, too few for 8 frames" in result.output


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "'--batch-size': 0 is not in the range x>=1"),
    ("--accum-steps", "0", "'--accum-steps': 0 is not in the range x>=1"),
    ("--num-frames", "0", "'--num-frames': 0 is not in the range x>=1"),   # was: silently the model's 8
    ("--frame-size", "0", "'--frame-size': 0 is not in the range x>=1"),   # was: silently the model's 64
    ("--lr", "0", "'--lr': 0.0 is not in the range x>0"),
    ("--drop-path", "1", "'--drop-path': 1.0 is not in the range 0<=x<1"),
    ("--device", "tpu", "'--device': expected auto, cpu, cuda or cuda:N, got 'tpu'"),   # was: silently the CPU
    ("--crops", "2", "'--crops': 1 (centre) or 3"),
    ("--frame-size", "33", "'--model': SIFAR-N-6 cannot take 8 frames of 33 px"),   # was: an einops traceback
])
def test_options_are_checked_where_they_enter(data, tmp_path, option, value, message):
    out = tmp_path / "run"
    args = ["--shards", str(data["shards"]), "--output", str(out), *TINY]
    result = CliRunner().invoke(train_main, [*args, option, value])
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)   # no traceback
    assert not out.exists()   # refused before anything was written


def test_configs_made_in_python_are_checked_the_same_way():
    with pytest.raises(ConfigError, match="batch_size: 0 is not in the range x>=1"):
        TrainConfig(shards="s", output="o", loader=LoaderSettings(batch_size=0))
    with pytest.raises(ConfigError, match="device: expected auto, cpu, cuda or cuda:N"):
        TrainConfig(shards="s", output="o", device="gpu0")
    with pytest.raises(ConfigError, match="sampling: 'sparse' is not one of uniform, dense"):
        TrainConfig(shards="s", output="o", clip=ClipSettings(sampling="sparse"))
    assert TrainConfig(shards="s", output="o", device="cuda:1", clip=ClipSettings(num_frames=None)).device == "cuda:1"


def test_unwritable_output_folder(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(train_main, ["--shards", str(data["shards"]), "--output", str(blocker / "run"),
                                             *TINY])
    assert result.exit_code == 1 and "is not writable" in result.output


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(train_main, ["--shards", str(data["shards"]), "--output", str(out), "--epochs", "1",
                                             "--steps-per-epoch", "4", "--save-every", "1", *TINY, "--lr", "1e30",
                                             "--warmup-epochs", "0", "--mixup", "0", "--cutmix", "0"])
    assert result.exit_code == 1, result.output
    assert "loss is" in result.output and "last good checkpoint" in result.output
    kept = torch.load(out / "last.pt", weights_only=True)
    losses = step_losses(out)
    assert kept["state"]["step"] == len(losses) >= 1
    assert all(torch.isfinite(torch.tensor(l)) for _, l in losses)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the pinned-memory copy needs a CUDA GPU (CI is CPU-only)"))])
def test_lagged_losses_report_each_step_one_step_later_and_stop_at_a_non_finite_one(device):
    def push(step, *values, epoch=0):
        return losses.push([torch.tensor(v, device=device) for v in values], {"step": step, "epoch": epoch})

    losses = LaggedLosses()
    assert losses.resolve() is None
    assert push(1, 2.0, 1.5) is None
    assert push(2, 1.0) == {"step": 1, "epoch": 0, "loss": 1.5}  # a step's last micro-batch loss
    assert losses.resolve() == {"step": 2, "epoch": 0, "loss": 1.0}
    assert losses.resolve() is None
    push(3, float("nan"), 1.0, epoch=1)
    with pytest.raises(NonFiniteLossError, match="loss is nan at epoch 1, step 3"):
        push(4, 1.0)


def test_a_non_finite_loss_of_an_fp8_run_says_what_to_try():
    losses = LaggedLosses(FP8_NON_FINITE_ADVICE)
    losses.push([torch.tensor(float("inf"))], {"step": 7, "epoch": 0})
    with pytest.raises(NonFiniteLossError, match=r"loss is inf at epoch 0, step 7; .*--precision bf16"):
        losses.resolve()


def test_resume_with_other_settings_is_refused(data, tmp_path):
    out = tmp_path / "run"
    common = ["--shards", str(data["shards"]), "--output", str(out), "--epochs", "1", "--steps-per-epoch", "1"]
    assert run_train([*common, *TINY]).exit_code == 0
    other = [*TINY[:-2], "--lr", "1e-3"]
    other[other.index("4")] = "2"  # another batch size
    before = (out / "config.json").read_text()
    result = CliRunner().invoke(train_main, [*common, *other])
    assert result.exit_code == 1 and "cannot resume" in result.output and "batch_size" in result.output
    assert (out / "config.json").read_text() == before   # the refused settings were not written
    for option, value in (("--epochs", "3"), ("--lr", "5e-4"), ("--warmup-epochs", "0")):
        longer = run_train([*common, *TINY, option, value])   # the restored schedule would ignore it: refused
        assert longer.exit_code == 1 and "cannot resume" in longer.output
        assert option[2:].replace("-", "_") in longer.output


def test_a_damaged_checkpoint_fails_naming_the_file_and_what_to_do(data, trained, tmp_path):
    damaged = {"truncated.pt": trained.read_bytes()[:trained.stat().st_size // 3], "notes.pt": b"hello world\n"}
    flipped = bytearray(trained.read_bytes())
    flipped[len(flipped) // 2] ^= 0x10
    damaged["flipped.pt"] = bytes(flipped)
    reasons = {"truncated.pt": "is truncated", "notes.pt": "is not a readable PyTorch checkpoint",
               "flipped.pt": "is corrupt: its contents do not match the SHA-256"}
    for name, data_bytes in damaged.items():
        path = tmp_path / name
        path.write_bytes(data_bytes)
        result = run_eval(data["shards"], path)
        assert result.exit_code == 1 and f"{path} {reasons[name]}" in result.output, result.output
        assert "Traceback" not in result.output
    run = tmp_path / "run"
    common = ["--shards", str(data["shards"]), "--val-shards", str(data["shards"]), "--output", str(run), "--epochs",
              "1", "--steps-per-epoch", "1", *TINY]
    assert run_train(common).exit_code == 0
    (run / "last.pt").write_bytes(damaged["flipped.pt"])
    resumed = CliRunner().invoke(train_main, common)
    assert resumed.exit_code == 1 and f"cannot resume: {run / 'last.pt'} is corrupt" in resumed.output
    assert f"copy {run / 'best.pt'} over it" in resumed.output and "--no-resume" in resumed.output


def test_a_resume_after_a_crash_logs_each_step_once_and_max_steps_counts_every_step(data, tmp_path):
    common = ["--shards", str(data["shards"]), "--epochs", "2", "--steps-per-epoch", "3", "--save-every", "100",
              *TINY]
    straight = tmp_path / "straight"
    assert run_train([*common, "--output", str(straight)]).exit_code == 0
    broken = tmp_path / "broken"
    assert run_train([*common, "--output", str(broken), "--max-steps", "4"]).exit_code == 0
    assert run_train([*common, "--output", str(broken), "--max-steps", "4"]).exit_code == 0   # done: no 5th step
    assert [s for s, _ in step_losses(broken)] == [1, 2, 3, 4]
    # a crash after the checkpoint of step 4: steps 5 and 6 logged, a line cut short, a checkpoint half written
    logged = (straight / "metrics.jsonl").read_text().splitlines()
    later = [line for line in logged if json.loads(line).get("step") in (5, 6)]
    with open(broken / "metrics.jsonl", "a") as handle:
        handle.write("\n".join(later) + '\n{"time": 17, "kind": "st')
    (broken / ".last.pt.k2x9.tmp").write_bytes(b"half a checkpoint")
    assert run_train([*common, "--output", str(broken)]).exit_code == 0
    resumed, expected = step_losses(broken), step_losses(straight)
    assert [s for s, _ in resumed] == [1, 2, 3, 4, 5, 6]   # each step once
    assert [l for _, l in resumed] == pytest.approx([l for _, l in expected], rel=1e-5, abs=1e-6)
    assert not list(broken.glob("*.tmp"))


def test_a_training_process_killed_mid_run_resumes_with_each_step_once(data, tmp_path):
    common = ["--shards", str(data["shards"]), "--epochs", "3", "--steps-per-epoch", "6", "--save-every", "2", *TINY]
    straight = tmp_path / "straight"
    assert run_train([*common, "--output", str(straight)]).exit_code == 0
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "sifar.cli.train", *common, "--output", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and len(step_lines(killed)) < 3:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)   # no clean-up runs: as a crash, an OOM kill or a pre-emption
    assert process.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    assert run_train([*common, "--output", str(killed)]).exit_code == 0
    resumed, expected = step_losses(killed), step_losses(straight)
    assert [s for s, _ in resumed] == list(range(1, 19))   # each step once
    assert [l for _, l in resumed] == pytest.approx([l for _, l in expected], rel=1e-5, abs=1e-6)
    assert not list(killed.glob(".*.tmp")) and not list(killed.glob("*.tmp"))


def step_lines(output: Path) -> list[str]:
    metrics = output / "metrics.jsonl"
    return [line for line in metrics.read_text().splitlines() if '"kind": "step"' in line] if metrics.exists() else []


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "weights": torch.zeros(10)}, path)
    script = (
        "import resource, signal, torch, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"  # writes past 4 KiB fail like a full disk
        "from sifar.checkpoint import save_checkpoint, CheckpointWriteError\n"
        "try:\n"
        f"    save_checkpoint({{'step': 2, 'weights': torch.zeros(100_000)}}, {str(path)!r})\n"
        "except CheckpointWriteError as err:\n"
        "    print(err); sys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 3, result.stderr
    assert "could not write checkpoint" in result.stdout and "previous one is intact" in result.stdout
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind
    assert CheckpointWriteError.__mro__[1] is OSError


def _torchrun(nproc: int, command: str, args: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --no-python <command>``: the installed command itself, as the README launches it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = Path(sys.executable).with_name(command)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
              "--no-python", str(script) if script.exists() else shutil.which(command), *args]
    return subprocess.run(launch, capture_output=True, text=True, env=env, timeout=600)


def test_ddp_training_and_evaluation_with_two_processes(data, tmp_path):
    out = tmp_path / "ddp"
    trained = _torchrun(2, "sifar-train", ["--shards", str(data["shards"]), "--output", str(out), "--epochs", "1",
                                           "--steps-per-epoch", "2", *TINY])
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert len(step_losses(out)) == 2
    eval_args = ["--shards", str(data["shards"]), "--checkpoint", str(out / "last.pt"), "--workers", "1",
                 "--batch-size", "3", "--crops", "1"]
    two = _torchrun(2, "sifar-eval", [*eval_args, "--output", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    one = CliRunner().invoke(eval_main, [*eval_args, "--output", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    report_two = json.loads((tmp_path / "two" / "report.json").read_text())
    report_one = json.loads((tmp_path / "one" / "report.json").read_text())
    assert report_two["num_samples"] == report_one["num_samples"] > 0
    assert report_two["confusion"] == report_one["confusion"]


def test_padded_evaluation_runs_one_batch_shape_and_counts_the_same(data):
    """pad (on by default on GPUs, where each new shape is compiled) pads workers' partial batches, outputs
    dropped."""
    from sifar.data import ClipSettings, LoaderSettings, build_loader
    from sifar.evaluate import evaluate
    from sifar.models import create_model

    torch.manual_seed(0)
    model = create_model("SIFAR-N-6", num_classes=10, frame_size=32).eval()
    loader = build_loader(str(data["shards"]), ClipSettings(8, 32), LoaderSettings(batch_size=3, workers=2),
                          training=False, split="val", crops=3)
    shapes: list[int] = []
    model.register_forward_pre_hook(lambda _module, args: shapes.append(args[0].shape[0]))
    plain = evaluate(model, loader, torch.device("cpu"), 10)  # no padding on CPU by default
    plain_shapes, shapes[:] = sorted(set(shapes)), []
    padded = evaluate(model, loader, torch.device("cpu"), 10, pad=True)
    assert len(plain_shapes) > 1, "the loader should end each worker on a partial batch"
    assert set(shapes) == {3 * 3}  # 3 videos x 3 crops, always
    assert torch.equal(padded.confusion, plain.confusion) and padded.top5_correct == plain.top5_correct


def test_fp16_training_scales_the_loss_and_resumes_with_the_saved_scale(data, tmp_path):
    check_fp16_training_resumes_with_its_scale(data, tmp_path / "run")


def check_fp16_training_resumes_with_its_scale(data, out: Path, *options: str) -> None:
    """Train 2 fp16 steps (clipped gradients: unscaled first), then one more from a checkpoint whose loss scale was
    changed: the scale comes back from the checkpoint, and every loss is finite. tests/test_gpu.py runs it on CUDA."""
    common = ["--shards", str(data["shards"]), "--output", str(out), "--epochs", "2", "--steps-per-epoch", "2",
              "--precision", "fp16", "--clip-grad", "1.0", *TINY, *options]
    first = run_train([*common, "--max-steps", "2"])
    assert first.exit_code == 0, first.output
    assert "precision: fp16 autocast with a gradient scaler" in first.output
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["scaler"]["scale"] > 0
    checkpoint["scaler"].update(scale=1024.0, _growth_tracker=1)  # as if it had backed off
    save_checkpoint(checkpoint, out / "last.pt")
    assert run_train([*common, "--max-steps", "3"]).exit_code == 0
    # restored, not started afresh (65536): one more step grew its tracker, or an overflow halved it
    assert load_checkpoint(out / "last.pt")["scaler"]["scale"] in (1024.0, 512.0)
    assert all(math.isfinite(loss) for _, loss in step_losses(out))


def test_curves_are_plotted_at_each_epochs_end_so_a_killed_run_has_them(data, tmp_path):
    """A 2-epoch run stopped in its second epoch by --max-steps, killed as soon as curves.png appears: that is
    before summary.json, which the run's end writes before its own plot."""
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "sifar.cli.train", "--shards", str(data["shards"]), "--output",
                                str(out), "--epochs", "2", "--steps-per-epoch", "3", "--max-steps", "4", *TINY],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not (out / "curves.png").exists():
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert (out / "curves.png").exists() and not (out / "summary.json").exists()


def test_the_log_interval_thins_the_step_records(data, tmp_path):
    out = tmp_path / "run"
    result = run_train(["--shards", str(data["shards"]), "--output", str(out), "--epochs", "1",
                        "--steps-per-epoch", "5", "--log-interval", "2", "--no-tensorboard", *TINY])
    assert result.exit_code == 0, result.output
    assert [s for s, _ in step_losses(out)] == [2, 4]
    assert not (out / "tensorboard").exists()
