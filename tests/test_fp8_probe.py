"""tools/fp8_probe.py on the CPU (torch's float8 matmuls): a healthy run reports nothing, a run made to diverge
stops at its non-finite weights, and the hooks name the module where a backward NaN is born."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from tools.fp8_probe import main, watch_nan_birth

pytest.importorskip("torchao", reason="fp8 training needs torchao (the fp8 extra)")

TINY = ["--ways", "eager", "--model", "SIFAR-N-6", "--clips", "2", "--frame-size", "64"]


def run_probe(tmp_path, *args: str) -> dict:
    result = CliRunner().invoke(main, [*TINY, *args, "--json", str(tmp_path / "probe.json")])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / "probe.json").read_text())["ways"]["eager"]


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_a_healthy_fp8_run_reports_no_non_finite_value(tmp_path, recipe):
    records = run_probe(tmp_path, "--steps", "2", "--recipe", recipe)
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert record["logits_finite"] and record["non_finite_grads"] == record["non_finite_weights"] == []
        assert record["born_in"] is None and record["of"] > 20


def test_a_diverging_run_stops_at_its_non_finite_weights(tmp_path):
    records = run_probe(tmp_path, "--steps", "4", "--lr", "1e30")
    assert len(records) == 2  # the second step's update made the weights non-finite: no third step
    assert records[0]["non_finite_grads"] == [] and not records[1]["logits_finite"]
    assert len(records[1]["non_finite_grads"]) == records[1]["of"] and records[1]["non_finite_weights"]
    assert records[1]["born_in"] is None  # born in the forward: no module got finite gradients and made NaN


def test_the_hooks_name_the_module_whose_backward_overflows():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1))
    with torch.no_grad():
        model[1].weight.fill_(3e38)  # finite, and its input is 0, so the forward is too
    seen = watch_nan_birth(model)
    out = model(torch.zeros(1, 2, requires_grad=True))
    assert torch.isfinite(out).all()
    (10 * out).sum().backward()  # 10 * 3e38 overflows in the gradient of module 1's input
    assert seen["born_in"] == "1"


def test_an_unknown_way_is_refused_by_name():
    result = CliRunner().invoke(main, ["--ways", "eager,jit"])
    assert result.exit_code == 2 and "--ways" in result.output and "jit" in result.output
