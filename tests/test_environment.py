"""``sifar-tools env`` names what a bug report needs; the loader says once when it decodes whole frames."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from sifar.cli.tools import main as tools_main
from sifar.data.decoders import REGION_DECODER_INSTALL, region_decoding_available
from shard_files import write_split


def test_env_names_each_item_a_bug_report_needs():
    result = CliRunner().invoke(tools_main, ["env"])
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines()]
    assert names[:9] == ["python", "torch", "torchvision", "timm", "webdataset", "huggingface_hub", "torchao",
                         "nvmath-python", "sifar"]
    assert "ffmpeg" in names and "jpeg" in names
    assert "cuda" in names or "cuda:0" in names
    ffmpeg = next(line for line in result.output.splitlines() if line.startswith("ffmpeg"))
    assert "ffmpeg version" in ffmpeg
    if not region_decoding_available():
        assert REGION_DECODER_INSTALL in result.output


def test_env_json_parses_with_every_item():
    result = CliRunner().invoke(tools_main, ["env", "--json"])
    assert result.exit_code == 0, result.output
    env = json.loads(result.output)
    assert set(env) >= {"python", "packages", "sifar", "ffmpeg", "jpeg_decoder", "cuda"}
    assert set(env["packages"]) == {"torch", "torchvision", "timm", "webdataset", "huggingface_hub", "torchao",
                                    "nvmath-python"}
    assert env["jpeg_decoder"]["region_decoder_built"] == region_decoding_available()
    assert env["ffmpeg"]["path"] and isinstance(env["cuda"]["devices"], list)


@pytest.mark.skipif(region_decoding_available(), reason="the region decoder is built: nothing to warn about")
def test_the_loader_says_once_per_process_that_it_decodes_whole_frames(tmp_path):
    write_split(tmp_path, "train", shards=2, per_shard=4, num_frames=8)
    script = f"""
from sifar.data import build_loader
from sifar.data.clip import ClipSettings
from sifar.data.pipeline import LoaderSettings
for _ in range(2):
    loader = build_loader({str(tmp_path)!r}, ClipSettings(num_frames=4, frame_size=16), LoaderSettings(batch_size=2,
                          workers=2), training=True, split="train")
    next(iter(loader))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("JPEG decoder: simplejpeg") == 1  # not per loader, not per worker
    assert REGION_DECODER_INSTALL in result.stderr
