"""One run per output folder: a second run fails at once naming the first; a killed run leaves no lock."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from sifar.cli.data_commands import shard
from sifar.cli.train import main as train_main
from sifar.run_lock import FolderInUseError, run_lock
from sifar.train import TRAIN_LOCK


def hold_lock(folder: Path, name: str) -> subprocess.Popen:
    """Another process holding the run lock of ``folder``, until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from sifar.run_lock import run_lock
        with run_lock({str(folder)!r}, {name!r}, "test run"):
            print("held", flush=True)
            time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def stop(holder: subprocess.Popen) -> None:
    os.kill(holder.pid, signal.SIGKILL)   # as a crash would: no clean-up runs
    holder.wait(timeout=30)


def test_a_second_holder_is_refused_with_the_first_ones_name_and_a_killed_holder_leaves_no_lock(tmp_path):
    holder = hold_lock(tmp_path, ".x.lock")
    try:
        with pytest.raises(FolderInUseError, match=rf"in use by another nightly run \(pid {holder.pid} on "):
            with run_lock(tmp_path, ".x.lock", "nightly run"):
                pass
        with run_lock(tmp_path, ".y.lock", "other run"):   # another lock name in the same folder is free
            pass
    finally:
        stop(holder)
    with run_lock(tmp_path, ".x.lock", "nightly run") as path:
        assert f"pid {os.getpid()} " in path.read_text()


def test_training_into_a_folder_in_use_fails_at_once_and_touches_nothing(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("the first run's")
    holder = hold_lock(out, TRAIN_LOCK)
    try:
        result = CliRunner().invoke(train_main, ["--shards", str(tmp_path / "no-shards-needed"), "--output", str(out),
                                                 "--model", "SIFAR-N-6"])
    finally:
        stop(holder)
    assert result.exit_code == 1
    assert f"in use by another training run (pid {holder.pid} " in result.output
    assert (out / "config.json").read_text() == "the first run's" and not (out / "metrics.jsonl").exists()


def test_sharding_a_split_in_use_fails_naming_the_holder_and_other_splits_are_free(tmp_path):
    out = tmp_path / "shards"
    out.mkdir()
    (tmp_path / "train.csv").write_text("a.mp4,walk\n")
    holder = hold_lock(out, ".train.lock")
    try:
        args = ["--dataset", "csv", "--src", str(tmp_path), "--output", str(out), "--no-progress"]
        busy = CliRunner().invoke(shard, [*args, "--split", "train"])
        other = CliRunner().invoke(shard, [*args, "--split", "val"])
    finally:
        stop(holder)
    assert busy.exit_code == 1 and "in use by another shard run of split train" in busy.output
    assert "in use" not in other.output   # the val split was not locked (it fails only for its missing list)
