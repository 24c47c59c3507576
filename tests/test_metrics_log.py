"""Where training numbers go: metrics.jsonl thinned by the log interval, TensorBoard when asked and installed,
curves.png on demand."""

import json

import pytest

from sifar.metrics_log import TENSORBOARD_MISSING, MetricsLog, tensorboard_installed, use_tensorboard


@pytest.mark.parametrize("asked, installed, used", [
    (None, True, True), (None, False, False), (True, True, True), (True, False, False), (False, True, False),
])
def test_tensorboard_is_used_when_installed_unless_switched_off(asked, installed, used):
    assert use_tensorboard(asked, installed) is used


@pytest.mark.skipif(tensorboard_installed(), reason="checks the notice of a machine without tensorboard")
def test_asking_for_tensorboard_without_it_says_how_to_install_it_in_one_line(tmp_path, capsys):
    MetricsLog(tmp_path, tensorboard=None)
    assert capsys.readouterr().err == ""  # not asked: nothing to say
    MetricsLog(tmp_path, tensorboard=True)
    err = capsys.readouterr().err
    assert err == TENSORBOARD_MISSING + "\n" and 'pip install -e ".[tb]"' in err
    assert not (tmp_path / "tensorboard").exists()


@pytest.mark.skipif(not tensorboard_installed(), reason="tensorboard is not installed (the tb extra)")
def test_with_tensorboard_installed_scalars_are_written_unless_switched_off(tmp_path):
    log = MetricsLog(tmp_path / "on")
    log.step(1, loss=1.0)
    log.finish({})
    assert list((tmp_path / "on" / "tensorboard").glob("events.*"))
    MetricsLog(tmp_path / "off", tensorboard=False).finish({})
    assert not (tmp_path / "off" / "tensorboard").exists()


def test_the_log_interval_keeps_every_nth_step_and_every_epoch(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False, log_interval=3)
    for step in range(1, 8):
        log.step(step, loss=1.0 / step)
    log.epoch(1, top1=50.0)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == [3, 6]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1]


def test_a_thinned_log_still_sums_the_seconds_waited_for_data(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False, log_interval=2)
    for step in range(1, 6):
        log.step(step, loss=1.0, wait_s=0.25 * step)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["wait_s"]) for r in records] == [(2, 0.75), (4, 1.75)]   # 0.25 + 0.5, 0.75 + 1.0


def test_plot_writes_the_curves_so_far(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    log.step(1, loss=2.0)
    log.plot()
    assert (tmp_path / "curves.png").stat().st_size > 0
