"""tools/loss_curves.py: issue 30's loss-curve test, on metrics files written by the trainer's own logger."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from sifar.metrics_log import MetricsLog
from tools.loss_curves import compare_curves, loss_curve, main, t_quantile_975

STEPS = 600


def write_run(root: Path, name: str, seed: int, offset: float = 0.0, log_interval: int = 1) -> Path:
    """A run whose loss decays from 2.3 with its seed's own level (run-to-run noise) and per-step noise."""
    rng = random.Random(seed)
    level = rng.gauss(0.0, 0.03)
    log = MetricsLog(root / name, tensorboard=False, log_interval=log_interval)
    log.path.parent.mkdir(parents=True)
    for step in range(1, STEPS + 1):
        loss = 0.8 + 1.5 * math.exp(-step / 200) + level + offset + rng.gauss(0.0, 0.05)
        log.step(step, loss=loss, wait_s=0.0)
    return log.path


def group(root: Path, name: str, offset: float = 0.0, seeds: range = range(3)) -> str:
    return f"{name}=" + ",".join(str(write_run(root, f"{name}-s{seed}", seed, offset)) for seed in seeds)


def run_cli(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_the_comparison_is_written_with_its_curves(tmp_path):
    result = run_cli("--group", group(tmp_path, "a"), "--group", group(tmp_path, "b", seeds=range(3, 6)),
                     "--steps", str(STEPS), "--unpaired", "--json", str(tmp_path / "c.json"))
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "c.json").read_text())
    assert len(found["curves"]["a"]) == 3 and len(found["curves"]["a"][0]) == STEPS // 100
    assert found["groups"]["b"][0].endswith("b-s3/metrics.jsonl")
    assert found["comparison"]["verdict"] in result.output and found["comparison"]["paired_final"] == []


def simulated_group(rng: random.Random, runs: int, offset: float) -> list[list[float]]:
    """Curves of ``runs`` runs: a level per run (seed-to-seed noise, sd 0.03) and noise per point."""
    curves = []
    for _ in range(runs):
        level = rng.gauss(0.0, 0.03)
        curves.append([1.0 + 1.5 * math.exp(-i / 5) + level + offset + rng.gauss(0.0, 0.005) for i in range(30)])
    return curves


@pytest.mark.parametrize("offset, verdict, least_share", [
    (0.0, "equal within run-to-run noise", 0.85),  # the same setting: called equal nearly always
    (0.12, "different beyond run-to-run noise", 0.9),  # five seed spreads apart: called different
])
def test_the_verdicts_rate_of_being_right(offset, verdict, least_share):
    rng = random.Random(0)
    verdicts = [compare_curves(simulated_group(rng, 3, 0.0), simulated_group(rng, 3, offset), 100, paired=False).verdict
                for _ in range(200)]
    assert verdicts.count(verdict) / len(verdicts) >= least_share


def test_a_curve_shifted_by_several_seed_spreads_differs(tmp_path):
    result = run_cli("--group", group(tmp_path, "bf16"), "--group", group(tmp_path, "fp8", offset=0.15),
                     "--steps", str(STEPS))
    assert result.exit_code == 0, result.output
    assert "different beyond run-to-run noise" in result.output
    assert "last tenth: +0.1500" in result.output
    # the same seeds in both groups: each same-seed difference is the offset
    assert "same seed, last tenth: +0.1500, +0.1500, +0.1500" in result.output


def test_a_small_offset_inside_the_seed_spread_is_not_called_a_difference(tmp_path):
    result = run_cli("--group", group(tmp_path, "bf16"), "--group", group(tmp_path, "fp8", offset=0.005),
                     "--steps", str(STEPS))
    assert "equal within run-to-run noise" in result.output


def test_a_thinned_log_bins_by_step_number(tmp_path):
    full = loss_curve(write_run(tmp_path, "full", 0), 100, STEPS)
    thinned = loss_curve(write_run(tmp_path, "thin", 0, log_interval=10), 100, STEPS)
    assert len(thinned) == len(full)
    assert all(abs(a - b) < 0.05 for a, b in zip(full, thinned))  # every tenth step's loss, same curve


def test_a_run_shorter_than_the_steps_asked_is_named(tmp_path):
    path = write_run(tmp_path, "short", 0)
    result = CliRunner().invoke(main, ["--group", f"a={path},{path}", "--group", f"b={path},{path}",
                                       "--steps", str(STEPS + 100)])
    assert result.exit_code != 0
    assert str(path) in result.output and f"up to {STEPS}" in result.output


def test_a_missing_metrics_file_is_named(tmp_path):
    path = write_run(tmp_path, "a", 0)
    missing = tmp_path / "b" / "metrics.jsonl"
    result = CliRunner().invoke(main, ["--group", f"a={path},{path}", "--group", f"b={missing},{path}",
                                       "--steps", "100"])
    assert result.exit_code != 0 and f"{missing} does not exist" in result.output


@pytest.mark.parametrize("groups, message", [
    (["a=x.jsonl"], "exactly two --group"),
    (["a", "b=y.jsonl"], "is not NAME=METRICS"),
])
def test_bad_groups_are_refused(groups, message):
    args = [arg for g in groups for arg in ("--group", g)]
    result = CliRunner().invoke(main, args + ["--steps", "10"])
    assert result.exit_code != 0 and message in result.output


def test_one_run_a_group_has_no_noise_to_compare_against():
    with pytest.raises(Exception, match="two or more runs"):
        compare_curves([[1.0, 0.9]], [[1.0, 0.9], [1.1, 1.0]], 100, paired=False)


def test_paired_groups_need_as_many_runs(tmp_path):
    a = group(tmp_path, "a")
    two = "b=" + ",".join(str(write_run(tmp_path, f"b-s{s}", s)) for s in range(2))
    result = CliRunner().invoke(main, ["--group", a, "--group", two, "--steps", str(STEPS)])
    assert result.exit_code != 0 and "as many runs" in result.output
    assert run_cli("--group", a, "--group", two, "--steps", str(STEPS), "--unpaired").exit_code == 0


@pytest.mark.parametrize("degrees, table", [(2, 4.303), (3, 3.182), (4, 2.776), (10, 2.228), (30, 2.042)])
def test_t_quantile_matches_the_tables(degrees, table):
    assert t_quantile_975(degrees) == pytest.approx(table, rel=0.01 if degrees == 2 else 0.002)
