import pytest
from click.testing import CliRunner

from sifar.cli.tools import main
from sifar.models.flops import count_cost

# The paper's Table 1 (GFLOPs as multiply-adds) and Table 3 (parameters).
TABLE_1 = {"SIFAR-B-7": 138, "SIFAR-B-12": 106, "SIFAR-B-14": 147, "SIFAR-B-12-16f": 189, "SIFAR-B-14-16f": 263,
           "SIFAR-B-12-384": 423, "SIFAR-L-14-16f": 576, "SIFAR-L-12-384": 944}


@pytest.mark.parametrize("name, gflops", TABLE_1.items())
def test_flops_match_the_paper_within_3_percent(name, gflops):
    cost = count_cost(name)
    assert abs(cost.gflops - gflops) / gflops < 0.03
    assert int(cost.params_m) in (87, 196)


def test_flops_command():
    result = CliRunner().invoke(main, ["flops", "SIFAR-B-12"])
    assert result.exit_code == 0, result.output
    assert "106.2 GFLOPs, 87.3M parameters" in result.output


def test_flops_command_with_another_layout():
    result = CliRunner().invoke(main, ["flops", "SIFAR-N-6", "--num-frames", "8", "--layout", "2x4"])
    assert result.exit_code == 0, result.output


def test_flops_command_bad_name():
    result = CliRunner().invoke(main, ["flops", "SIFAR-X-99"])
    assert result.exit_code != 0
    assert "unknown model 'SIFAR-X-99'" in result.output


def test_models_command_lists_every_model():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    assert "SIFAR-B-12" in result.output and "SIFAR-R50-C21-11" in result.output
    line = next(l for l in result.output.splitlines() if "SIFAR-B-14-16f" in l)
    assert "4x4" in line and "263.4" in line
