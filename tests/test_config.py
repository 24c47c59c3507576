"""Configuration as composed data: sections, one flat option per setting, config files read back exactly."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sifar.config_fields import (ConfigError, config_from_dict, flat_values, help_field, merge, nest_flags,
                                 read_config_file, settings_of)
from sifar.data.clip import ClipSettings
from sifar.data.pipeline import LoaderSettings
from sifar.data.sampling import MODES
from sifar.models.settings import ModelSettings
from sifar.train_config import OptimSettings, TrainConfig


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["SIFAR-B-12", "SIFAR-N-6", "timm:resnet18"]), layout=st.sampled_from([None, "3x3", "2x4"]),
       sampling=st.sampled_from(MODES), batch=st.integers(1, 512), epochs=st.integers(1, 100),
       lr=st.floats(1e-7, 1.0), warmup=st.floats(0, 10), clip_grad=st.one_of(st.none(), st.floats(0.01, 10)),
       flip=st.sampled_from(["auto", "on", "off"]))
def test_a_config_reads_back_equal_from_its_json_and_as_yaml(name, layout, sampling, batch, epochs, lr, warmup,
                                                              clip_grad, flip):
    """config.json is a valid --config: JSON read by the YAML reader (which takes ``1e-06`` for a string) gives
    the same config back."""
    config = TrainConfig(shards="s", output="o", model=ModelSettings(name),
                         clip=ClipSettings(layout=layout, sampling=sampling, flip=flip),
                         loader=LoaderSettings(batch_size=batch),
                         optim=OptimSettings(epochs=epochs, lr=lr, warmup_epochs=warmup, clip_grad=clip_grad))
    text = json.dumps(asdict(config), indent=2)
    assert config_from_dict(TrainConfig, yaml.safe_load(text)) == config
    assert config_from_dict(TrainConfig, json.loads(text)) == config


def test_every_setting_has_one_flat_name():
    flags = [s.flag for s in settings_of(TrainConfig)]
    assert len(flags) == len(set(flags))
    assert {"model", "lr", "batch_size", "num_frames", "workers", "seed"} <= set(flags)
    values = flat_values(TrainConfig(shards="s", output="o", model=ModelSettings("SIFAR-N-6")))
    assert (values["model"], values["lr"], values["batch_size"]) == ("SIFAR-N-6", 1e-4, 32)


def test_flat_options_nest_into_sections_and_override_a_file():
    given_here = nest_flags(TrainConfig, {"model": "SIFAR-N-6", "lr": 0.01, "seed": 3})
    assert given_here == {"model": {"name": "SIFAR-N-6"}, "optim": {"lr": 0.01}, "seed": 3}
    from_file = {"optim": {"lr": 0.5, "epochs": 7}, "model": {"name": "SIFAR-B-12", "drop_path": 0.2}}
    config = config_from_dict(TrainConfig, merge(from_file, given_here))
    assert (config.optim.lr, config.optim.epochs, config.model.name, config.model.drop_path, config.seed) == (
        0.01, 7, "SIFAR-N-6", 0.2, 3)


@dataclass(frozen=True)
class Inner:
    lr: float = help_field(0.1, "inner")


@dataclass(frozen=True)
class Outer:
    lr: float = help_field(0.1, "outer")
    inner: Inner = field(default_factory=Inner)


def test_two_settings_of_one_name_are_refused_when_the_options_are_made():
    with pytest.raises(TypeError, match=r"settings share the names \['lr'\]"):
        settings_of(Outer)


@pytest.mark.parametrize("values, message", [
    ({"optim": {"lrr": 0.1}}, "optim.lrr: no such setting (known here: epochs, warmup_epochs, lr,"),
    ({"optimizer": {}}, "optimizer: no such setting"),
    ({"optim": 0.1}, "optim: a section of settings, got 0.1"),
    ({"optim": {"lr": "fast"}}, "optim.lr: a number, got 'fast'"),
    ({"optim": {"lr": -1}}, "lr: -1.0 is not in the range x>0"),
    ({"clip": {"sampling": "sparse"}}, "sampling: 'sparse' is not one of uniform, dense"),
    ({"loader": {"decoder": "opencv"}}, "decoder: 'opencv' is not one of auto, libjpeg, simplejpeg, pillow"),
])
def test_bad_settings_are_named(values, message):
    with pytest.raises(ConfigError) as caught:
        config_from_dict(TrainConfig, values)
    assert message in str(caught.value)


def test_records_of_other_versions_read_leniently():
    saved = {"num_frames": 8, "frame_size": 32, "sampling": "dense", "stride": 2, "from_the_future": 1}
    assert config_from_dict(ClipSettings, saved, strict=False) == ClipSettings(8, 32, sampling="dense", stride=2)


def test_config_files(tmp_path):
    good = tmp_path / "run.yaml"
    good.write_text("# a recipe\noptim:\n  lr: 1e-3   # YAML 1.1 reads this as text\n  epochs: 2\n")
    assert config_from_dict(TrainConfig, read_config_file(good)).optim.lr == 1e-3
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_config_file(empty) == {}
    listed = tmp_path / "list.yaml"
    listed.write_text("- lr: 1\n")
    with pytest.raises(ConfigError, match="list.yaml holds list, not a mapping of settings"):
        read_config_file(listed)
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: {lr: [\n")
    with pytest.raises(ConfigError, match="broken.yaml cannot be read"):
        read_config_file(broken)
    with pytest.raises(ConfigError, match="missing.yaml cannot be read"):
        read_config_file(tmp_path / "missing.yaml")


def test_a_config_file_starts_from_its_bases(tmp_path):
    (tmp_path / "_base").mkdir()
    (tmp_path / "_base" / "recipe.yaml").write_text("optim: {epochs: 30, lr: 1.0e-4}\nmodel: {drop_path: 0.1}\n")
    (tmp_path / "_base" / "dataset.yaml").write_text("base: recipe.yaml\noptim: {epochs: 15}\n")
    (tmp_path / "row.yaml").write_text("base: [_base/dataset.yaml]\nmodel: {name: SIFAR-N-6}\n")
    assert read_config_file(tmp_path / "row.yaml") == {"optim": {"epochs": 15, "lr": 1e-4},
                                                      "model": {"drop_path": 0.1, "name": "SIFAR-N-6"}}
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="a.yaml is its own base"):
        read_config_file(tmp_path / "a.yaml")
    (tmp_path / "orphan.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml cannot be read"):
        read_config_file(tmp_path / "orphan.yaml")
