"""The temporal study's planning and report (tools/temporal_study.py, tools/temporal_report.py): which runs it
starts, and what it concludes from runs' results; plus one tiny run of the whole study on the CPU."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import click
import pytest

from tools.temporal_report import comparison, model_seed_sd, pooled_seed_sd, results_rows, rows_of, write_report
from tools.temporal_rows import ROWS_BY_NAME
from tools.temporal_study import (GPU_SETTINGS, Job, RunOptions, epoch_throughput, main, parse_job, planned_jobs,
                                  seed_list, selected_rows, train_config)


def test_runs_are_planned_seed_major_and_rows_keep_their_seed_limit():
    rows = selected_rows("sifar_3x3,frame_average,resnet")
    jobs = planned_jobs(rows, [0, 1, 2])
    assert [j.name for j in jobs] == ["sifar_3x3@0", "frame_average@0", "resnet@0", "sifar_3x3@1", "resnet@1",
                                      "sifar_3x3@2", "resnet@2"]
    assert parse_job("resnet@2") == Job(ROWS_BY_NAME["resnet"], 2)


def test_a_longer_schedule_row_trains_more_epochs_after_the_same_warmup(tmp_path):
    run = RunOptions(device="cpu", workers=1)
    base, long = (train_config(ROWS_BY_NAME[name], 0, GPU_SETTINGS, "shards", tmp_path, run).optim
                  for name in ("sifar_3x3", "sifar_3x3_long"))
    assert long.epochs == 2 * base.epochs == 2 * GPU_SETTINGS.epochs
    assert (long.warmup_epochs, long.lr, long.min_lr) == (base.warmup_epochs, base.lr, base.min_lr)


def test_the_issue_30_rows_differ_from_the_3x3_row_only_in_their_training_option(tmp_path):
    run = RunOptions(device="cpu", workers=1)
    base, fp8, gelu = (train_config(ROWS_BY_NAME[name], 0, GPU_SETTINGS, "shards", tmp_path, run)
                       for name in ("sifar_3x3", "sifar_3x3_fp8", "sifar_3x3_gelu_epilogue"))
    assert (base.precision, base.gelu_epilogue) == ("auto", False)
    assert replace(fp8, precision="auto") == base and replace(gelu, gelu_epilogue=False) == base


def test_throughput_is_the_median_over_epochs_of_each_epochs_last_step(tmp_path):
    steps = [(0, 90.0, 0.2), (0, 100.0, 0.1), (1, 120.0, 0.3), (2, 50.0, 0.0), (3, 130.0, 0.5)]
    lines = [json.dumps({"kind": "step", "epoch": e, "clips_per_s": c, "data_wait": w, "loss": 1.0 - i / 10})
             for i, (e, c, w) in enumerate(steps)]
    (tmp_path / "metrics.jsonl").write_text("\n".join([*lines, json.dumps({"kind": "eval", "top1": 0.5})]) + "\n")
    # the epochs' last steps: 100, 120, 50, 130 clips/s -> 110 (the middle two averaged); waits 0.1, 0.3, 0, 0.5
    assert epoch_throughput(tmp_path) == {"epoch_clips_per_s": 110.0, "data_wait": 0.2, "final_loss": 0.6}


@pytest.mark.parametrize("text", ["resnet", "nope@1", "resnet@x"])
def test_a_bad_job_is_refused(text):
    with pytest.raises(click.BadParameter, match="ROW@SEED"):
        parse_job(text)


def test_bad_rows_and_seeds_are_refused():
    with pytest.raises(click.BadParameter, match="unknown rows"):
        selected_rows("sifar_3x3,sifar_9x9")
    with pytest.raises(click.BadParameter, match="integers"):
        seed_list("0,one")
    assert seed_list("2,0,2") == [2, 0]


def run(row, seed, top1, held_out=5000, **orders):
    normal = {"top1": top1, "top5": 100.0, "motion_top1": 99.0, "direction_in_pair": 98.0, "clips_per_s": 1.0,
              "per_motion": {}}
    spec = ROWS_BY_NAME[row]
    layout = "1x1 per frame" if spec.frame_average else spec.layout
    return {"row": row, "seed": seed, "title": spec.title, "model": GPU_SETTINGS.model(spec.backbone), "layout": layout,
            "frame_average": spec.frame_average, "frame_embed": spec.frame_embed, "num_frames": spec.num_frames,
            "frame_size": 64, "train_s": 10.0, "epoch_clips_per_s": 100.0, "held_out": held_out,
            "device": "test", "params_m": 9.1,
            "orders": {"normal": normal, **{o: {**normal, "top1": v} for o, v in orders.items()}}}


def results_of(*runs):
    return {"settings": {"videos": 1, "frames_per_video": 16, "frame_size": 64, "seed": 0, "epochs": 1,
                         "steps_per_epoch": 1, "batch_size": 1, "swin_lr": 1e-4, "cnn_lr": 1e-3, "min_lr": 1e-5,
                         "warmup_epochs": 1, "weight_decay": 0.05, "drop_path": 0.1, "clip_grad": 5.0,
                         "resident": True},
            "commands": ["python -m tools.temporal_study"], "runs": {f"{r['row']}@{r['seed']}": r for r in runs}}


def test_a_difference_outside_two_standard_errors_holds_and_a_tight_one_inside_rules_out_a_point():
    results = results_of(*(run("sifar_3x3", s, v) for s, v in enumerate([98.0, 98.2, 97.9])),
                         *(run("sifar_2x4", s, v) for s, v in enumerate([96.0, 96.3, 95.8])),
                         *(run("sifar_1x8", s, v) for s, v in enumerate([97.9, 98.3, 97.8])))
    rows = rows_of(results)
    clear = comparison(rows, "sifar_3x3", "sifar_2x4")
    assert clear["verdict"] == "holds" and clear["difference"] == pytest.approx(2.0, abs=0.01)
    assert clear["one_point_resolvable"]
    assert comparison(rows, "sifar_3x3", "sifar_1x8")["verdict"] == "no 1-point difference"  # +0.03 ± 0.3
    assert comparison(rows, "sifar_2x4", "sifar_3x3")["verdict"] == "**does not hold**"
    assert comparison(rows, "resnet", "resnet_large_kernel") is None


def test_a_small_held_out_set_cannot_resolve_one_point_however_close_the_seeds():
    results = results_of(*(run("resnet", s, 90.0, held_out=400) for s in range(3)),
                         *(run("resnet_large_kernel", s, 91.0, held_out=400) for s in range(3)))
    found = comparison(rows_of(results), "resnet_large_kernel", "resnet")
    assert found["verdict"] == "not resolved" and not found["one_point_resolvable"]


def test_the_report_writes_results_json_and_the_section_with_failed_runs_named(tmp_path):
    failed = {"row": "sifar_1x8", "seed": 0, "title": "x", "error": "Traceback\nRuntimeError: out of memory"}
    def scores(ablation: float, gradcam: float) -> dict[str, dict[str, float]]:
        return {m: {"pointing_accuracy": a, "random_baseline": 30.0, "frames_counted": 3900}
                for m, a in (("ablation", ablation), ("gradcam", gradcam))}

    game = {"clips": 520, "device": "cuda", "stages": {"3": {"positions_per_frame": "2x2", **scores(20.0, 25.0)},
                                                        "0": {"positions_per_frame": "16x16", **scores(84.0, 71.0)}}}
    results = results_of({**run("sifar_3x3", 0, 97.5, reverse=3.0, shuffle=40.0), "pointing": game},
                         run("frame_average", 0, 48.0), failed)
    (tmp_path / "RESULTS.md").write_text("# Results\n\nkept text\n")
    write_report(results, tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "kept text" in text and "failed: RuntimeError: out of memory" in text
    assert ("(520 held-out clips, 3900 frames with the object visible, a random point 30.0%, maps on cuda): stage 3 "
            "(2x2 positions a frame) ablation 20.0%, gradcam 25.0%; stage 0 (16x16 positions a frame) ablation 84.0%, "
            "gradcam 71.0%; goal >= 80% with Ablation-CAM: met at stage 0 (84.0%)") in text
    assert "goal >= 97% on >= 5000: met" in text and "goal reversed <= 15% with the motion named: met" in text
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["row"], r["seed"], r["top1"], r["held_out"]) for r in rows] == [("sifar_3x3", 0, 97.5, 5000),
                                                                              ("frame_average", 0, 48.0, 5000)]
    assert rows == results_rows(results) and (tmp_path / "temporal_study.png").stat().st_size > 0


def test_the_committed_docs_are_what_the_report_makes_of_the_committed_runs(tmp_path):
    """docs/results.json, docs/RESULTS.md's study section and its plot come from docs/temporal_study/results.json
    (the H100 study's own file) through the report, unedited."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    results = json.loads((docs / "temporal_study" / "results.json").read_text())
    write_report(results, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads((docs / "results.json").read_text())
    made = (tmp_path / "RESULTS.md").read_text()
    section = made[made.index("<!-- temporal-study:begin"):made.index("<!-- temporal-study:end -->")]
    assert section in (docs / "RESULTS.md").read_text()
    assert len(results["runs"]) == 26 and all(run["held_out"] == 5200 for run in results["runs"].values())


def test_the_quick_study_trains_and_reports_two_runs_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["temporal_study"])
    with pytest.raises(SystemExit) as done:
        main(["--quick", "--output", str(tmp_path / "ts"), "--docs", str(tmp_path / "docs"), "--device", "cpu",
              "--runs", "sifar_3x3@0,resnet@0", "--parallel", "2", "--workers", "0"])
    assert done.value.code == 0
    results = json.loads((tmp_path / "ts" / "results.json").read_text())
    assert sorted(results["runs"]) == ["resnet@0", "sifar_3x3@0"]
    assert all("error" not in r and r["held_out"] == 20 for r in results["runs"].values())
    assert set(results["runs"]["sifar_3x3@0"]["orders"]) == {"normal", "reverse", "shuffle"}
    for run in results["runs"].values():  # both rows play the pointing game on the held-out clips
        game = run["pointing"]
        assert game["clips"] == 20 and game["device"] == "cpu" and list(game["stages"]) == ["3", "1", "0"]
        for found in game["stages"].values():
            assert found["ablation"]["frames_counted"] == found["gradcam"]["frames_counted"] > 0
            assert 0 < found["ablation"]["random_baseline"] < 100
    assert (tmp_path / "ts" / "runs" / "sifar_3x3-s0" / "cam" / "cam_strips.png").is_file()
    rows = json.loads((tmp_path / "docs" / "results.json").read_text())["rows"]
    assert [row["pointing"] is not None for row in rows] == [True, True]
    assert "Pointing game, SIFAR Swin, 3x3 seed 0 (20 held-out clips" in (tmp_path / "docs" / "RESULTS.md").read_text()
    assert (tmp_path / "docs" / "results.json").is_file()


def test_rows_of_one_seed_borrow_the_seed_spread_pooled_over_rows_with_several():
    spread = results_of(*(run("sifar_3x3", s, v) for s, v in enumerate([97.0, 99.0, 98.0])),
                        run("sifar_1x8", 0, 96.6), run("sifar_2x4", 0, 98.0))
    rows = rows_of(spread)
    assert pooled_seed_sd(rows.values()) == model_seed_sd(rows, "SIFAR-M-12") == pytest.approx(1.0)
    found = comparison(rows, "sifar_3x3", "sifar_1x8")  # 1.4 points: within 2 * sqrt(1/3 + 1) = 2.3
    assert found["verdict"] == "not resolved" and found["standard_error"] == pytest.approx(1.15, abs=0.01)
    assert pooled_seed_sd(rows_of(results_of(run("resnet", 0, 90.0))).values()) is None


def test_each_model_keeps_its_own_seed_spread_and_a_tight_tie_rules_out_one_point():
    """ResNets at the ceiling vary by hundredths: pooled with the Swin's half point they would shrink its error."""
    results = results_of(*(run("sifar_3x3", s, v) for s, v in enumerate([85.4, 85.8, 85.9])),
                         *(run("sifar_2x4", s, v) for s, v in enumerate([85.8, 86.5, 87.6])),
                         *(run("resnet", s, v) for s, v in enumerate([99.96, 99.90, 99.94])),
                         *(run("resnet_large_kernel", s, v) for s, v in enumerate([99.96, 99.92, 99.90])))
    rows = rows_of(results)
    swin, resnet = model_seed_sd(rows, "SIFAR-M-12"), model_seed_sd(rows, "SIFAR-R18")
    assert swin > 10 * resnet and swin > pooled_seed_sd(rows.values())
    layouts = comparison(rows, "sifar_3x3", "sifar_2x4")
    assert layouts["standard_error"] == pytest.approx(swin * (2 / 3) ** 0.5, abs=0.01)
    assert layouts["verdict"] == "not resolved"  # -0.93 inside 2 SE of the Swin's own spread
    tie = comparison(rows, "resnet_large_kernel", "resnet")
    assert tie["verdict"] == "no 1-point difference" and 2 * tie["standard_error"] < 0.1
