"""tools/fp8_probe.py on the CPU (torch's float8 matmuls): a healthy run reports nothing, a run made to diverge
stops at its non-finite weights, the hooks name the module where a backward NaN is born (between a module's children
too) and replay it alone."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from tools.fp8_probe import NanBirthWatch, main

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
        assert record["born_in"] is None and record["replay"] is None and record["of"] > 20


def test_the_attention_is_a_choice_and_a_bad_one_is_refused(tmp_path):
    records = run_probe(tmp_path, "--steps", "1", "--attention", "eager")
    assert records[0]["non_finite_grads"] == []
    result = CliRunner().invoke(main, [*TINY, "--attention", "triton"])
    assert result.exit_code == 2 and "--attention" in result.output


def test_a_diverging_run_stops_at_its_non_finite_weights(tmp_path):
    records = run_probe(tmp_path, "--steps", "4", "--lr", "1e30")
    assert len(records) == 2  # the second step's update made the weights non-finite: no third step
    assert records[0]["non_finite_grads"] == [] and not records[1]["logits_finite"]
    assert len(records[1]["non_finite_grads"]) == records[1]["of"] and records[1]["non_finite_weights"]
    assert records[1]["born_in"] is None  # born in the forward: no module got finite gradients and made NaN
    assert records[1]["replay"] is None


def test_the_hooks_name_the_module_whose_backward_overflows_and_replay_it():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1))
    with torch.no_grad():
        model[1].weight.fill_(3e38)  # finite, and its input is 0, so the forward is too
    watch = NanBirthWatch(model)
    out = model(torch.zeros(1, 2, requires_grad=True))
    assert torch.isfinite(out).all()
    (10 * out).sum().backward()  # 10 * 3e38 overflows in the gradient of module 1's input
    assert watch.born_in == "1"
    assert watch.replay(contextlib.nullcontext) == {"module": "1", "input_grads_finite": False,
                                                     "parameter_grads_finite": True}
    watch.clear()
    assert watch.born_in is None and watch.replay(contextlib.nullcontext) is None


class ExpBetweenChildren(nn.Module):
    """A NaN born in no child: exp's backward (exp(h) * 10) overflows where h = 88 (exp(88) = 1.7e38 is finite)."""

    def __init__(self):
        super().__init__()
        self.inner, self.outer = nn.Linear(1, 1), nn.Linear(1, 1)
        with torch.no_grad():
            self.inner.weight.fill_(1.0), self.inner.bias.fill_(88.0)
            self.outer.weight.fill_(1.0), self.outer.bias.zero_()

    def forward(self, x):
        return self.outer(self.inner(x).exp())


def test_a_nan_born_between_children_names_their_parent():
    model = nn.Sequential(nn.Linear(1, 1), ExpBetweenChildren())
    with torch.no_grad():
        model[0].weight.fill_(0.0), model[0].bias.fill_(0.0)  # ExpBetweenChildren's input: 0
    watch = NanBirthWatch(model)
    out = model(torch.zeros(1, 1))
    assert torch.isfinite(out).all()
    (10 * out).sum().backward()
    assert not torch.isfinite(model[1].inner.weight.grad).all()
    assert watch.born_in == "1"  # not "1.outer" (finite in and out), not "1.inner" (its output gradient is inf)
    assert watch.replay(contextlib.nullcontext)["input_grads_finite"] is False  # exp's arithmetic: it comes back


def test_an_unknown_way_is_refused_by_name():
    result = CliRunner().invoke(main, ["--ways", "eager,jit"])
    assert result.exit_code == 2 and "--ways" in result.output and "jit" in result.output
