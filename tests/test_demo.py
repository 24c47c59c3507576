"""``sifar-tools demo`` end to end, shrunk to a few videos and one training step."""

from __future__ import annotations

import json
import math

from click.testing import CliRunner

from sifar.cli.tools import main as sifar_tools
from sifar.data.manifest import manifest_path, read_manifest


def test_demo_runs_the_whole_pipeline_and_says_where_each_result_went(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(sifar_tools, ["demo", "--output", str(out), "--videos", "20", "--epochs", "1",
                                              "--samples-per-shard", "5", "--workers", "1"])
    assert result.exit_code == 0, result.output
    run = out / "run"
    for line, path in (("super-image preview", out / "preview.png"), ("curves", run / "curves.png"),
                       ("confusion matrix", run / "eval" / "confusion.png"), ("metrics", run / "eval" / "report.json")):
        assert f"{line}: {path}" in result.output and path.is_file(), line
    assert "held-out top-1" in result.output and "(chance 10%)" in result.output and "per class: " in result.output
    held_out = [line.strip() for line in (out / "synth" / "val.csv").read_text().splitlines()[1:]]
    classes = {line.split(",")[1] for line in held_out}
    predicted = [line for line in result.output.splitlines() if " -> " in line and ".mp4)" in line]
    assert len(predicted) == len(classes) == 10   # one held-out video of each class, marked right or WRONG
    assert all(line.split()[0] in ("right", "WRONG") for line in predicted)
    assert {line.split()[1] for line in predicted} == classes
    train = read_manifest(manifest_path(out / "shards", "train"))
    assert train.num_samples > 5 and len(train.shards) == math.ceil(train.num_samples / 5)  # 5 videos a shard
    assert all(shard.samples <= 5 for shard in train.shards)
    config = json.loads((run / "config.json").read_text())
    assert config["clip"]["flip"] == "off"  # a flip would swap move_left/move_right and rotate_cw/rotate_ccw
    assert config["model"]["name"] == "SIFAR-VGG-T"
