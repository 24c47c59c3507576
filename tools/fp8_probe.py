"""Where do fp8 training's NaN gradients come from? (issue 30, session 19)

On an H100, tests/test_gpu.py's fixed-batch fp8 test got NaN gradients where bf16 trains (docs/PERFORMANCE.md,
"fp8"). This probe runs that test's loop, fp8 only, in chosen ways (``eager``; ``compile`` as ``sifar-train``
compiles; ``compile-nopdl``, plain ``torch.compile``) and reports after each backward which parameters' gradients
are not finite, whether the logits were (a NaN born in the forward), and whether the step left non-finite weights
(the way stops there). In the eager way it also names the module where a NaN of the backward is born: backward
hooks on every module holding parameters record the first one (in backward order, so the innermost) whose output
gradients are finite and whose input gradients are not. A NaN born between a module's children (in a window
attention's FlexAttention call, between its ``qkv`` and ``proj``) names that module, where the first version's
hooks, on leaf modules only, named nothing. The birth is then replayed before the update: the module alone, on
copies of the inputs and output gradients it had, forward and backward again. A NaN that comes back is the
module's arithmetic on those values; one that does not depends on more than its inputs (on the H100, session 20's
replay of the FlexAttention call at stage 3 of SIFAR-T-6-96 on its own tensors was finite: docs/PERFORMANCE.md,
"fp8").

    python -m tools.fp8_probe --ways eager,compile --steps 4 --json fp8_probe.json
    python -m tools.fp8_probe --ways compile --recipe rowwise --steps 4   # does per-row scaling avoid it?
    python -m tools.fp8_probe --ways eager --attention sdpa --steps 4     # without FlexAttention?
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import click
import torch
from torch import nn

from sifar.cli.options import comma_items
from sifar.io import write_json
from sifar.models import create_model
from sifar.models.compile import compile_model
from sifar.models.float8 import FP8_RECIPES, convert_to_float8
from sifar.models.window_attention import ATTENTION_IMPLS
from sifar.precision import autocast_for

WAYS = ("eager", "compile", "compile-nopdl")
CLASSES = 10  # as tests/test_gpu.py's fp8 test: the same seed then gives the same batch


def _finite(tensors) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def _detached(value):
    return value.detach().clone() if torch.is_tensor(value) else value


class NanBirthWatch:
    """Hooks on every module of a model that holds parameters: ``born_in`` is the first module (in backward order,
    so the innermost) whose output gradients were finite and whose input gradients were not, or None. The module's
    inputs and output gradients of that backward are kept for :meth:`replay`. :meth:`clear` before each step."""

    def __init__(self, model: nn.Module):
        self.modules = {name: module for name, module in model.named_modules()
                        if any(p.requires_grad for p in module.parameters())}
        self.born_in: str | None = None
        self._inputs: dict[str, tuple] = {}
        self._grad_output: tuple | None = None
        for name, module in self.modules.items():
            module.register_forward_pre_hook(self._keep_inputs(name), with_kwargs=True)
            module.register_full_backward_hook(self._watch(name))

    def clear(self) -> None:
        self.born_in, self._grad_output = None, None
        self._inputs.clear()

    def _keep_inputs(self, name: str):
        def keep(_module, args, kwargs) -> None:
            if torch.is_grad_enabled():
                self._inputs[name] = (tuple(_detached(a) for a in args), {k: _detached(v) for k, v in kwargs.items()})
        return keep

    def _watch(self, name: str):
        def record(_module, grad_input, grad_output) -> None:
            if self.born_in is None and _finite(grad_output) and not _finite(grad_input):
                self.born_in, self._grad_output = name, tuple(_detached(g) for g in grad_output)
        return record

    def replay(self, autocast: Callable[[], contextlib.AbstractContextManager]) -> dict | None:
        """The module where the NaN was born, alone, forward and backward on copies of what it had (under
        ``autocast``): whether its input and parameter gradients are finite this time (None without a birth)."""
        if self.born_in is None:
            return None
        module = self.modules[self.born_in]
        args, kwargs = self._inputs[self.born_in]
        leaves = [a.clone().requires_grad_(a.is_floating_point()) if torch.is_tensor(a) else a for a in args]
        with autocast():
            out = module(*leaves, **kwargs)
        outputs = [out] if torch.is_tensor(out) else list(out)
        inputs = [a for a in leaves if torch.is_tensor(a) and a.requires_grad]
        params = [p for p in module.parameters() if p.requires_grad]
        pairs = [(o, g) for o, g in zip(outputs, self._grad_output) if g is not None]
        grads = torch.autograd.grad([o for o, _ in pairs], inputs + params, [g for _, g in pairs], allow_unused=True)
        return {"module": self.born_in, "input_grads_finite": _finite(grads[:len(inputs)]),
                "parameter_grads_finite": _finite(grads[len(inputs):])}


def stepper(way: str, model: nn.Module) -> nn.Module:
    """``model`` as ``way`` runs it."""
    if way == "eager":
        return model
    return compile_model(model, training=True) if way == "compile" else torch.compile(model)


def probe(way: str, model_name: str, frames: torch.Tensor, labels: torch.Tensor, steps: int, lr: float,
          seed: int, recipe: str = "tensorwise", attention: str = "auto") -> list[dict]:
    """One record a step of the fixed-batch loop, fp8 with torchao's ``recipe``, done ``way``."""
    device = frames.device
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=CLASSES, drop_path_rate=0.0, attention=attention).to(device)
    convert_to_float8(model, device, recipe)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    births = NanBirthWatch(model) if way == "eager" else None
    step_model = stepper(way, model)
    records = []
    for step in range(1, steps + 1):
        if births:
            births.clear()
        with autocast_for(device, "fp8"):
            logits = step_model(frames).float()
            loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        record = {"step": step, "loss": loss.item(), "logits_finite": _finite([logits]),
                  "non_finite_grads": [name for name, grad in grads.items() if not _finite([grad])],
                  "of": len(grads), "born_in": births.born_in if births else None,
                  # before the update: the replay runs the module with the weights it had
                  "replay": births.replay(lambda: autocast_for(device, "fp8")) if births else None}
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        record["non_finite_weights"] = [name for name, p in model.named_parameters() if not _finite([p])]
        records.append(record)
        print(f"{way} step {step}: loss {record['loss']:.4f}, {len(record['non_finite_grads'])} of {len(grads)} "
              f"gradients not finite" + (f", born in {record['born_in']}" if births else "")
              + (f", replayed alone: {record['replay']}" if record["replay"] else ""), flush=True)
        if record["non_finite_weights"]:
            break
    if way != "eager":
        torch._dynamo.reset()
    return records


@click.command(help=__doc__.splitlines()[0])
@click.option("--ways", default="eager,compile", show_default=True, help=f"comma-separated, of {', '.join(WAYS)}")
@click.option("--model", "model_name", default="SIFAR-T-6-96", show_default=True)
@click.option("--clips", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--frame-size", default=96, show_default=True, type=click.IntRange(min=16))
@click.option("--steps", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=2e-4, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True)
@click.option("--recipe", default="tensorwise", show_default=True, type=click.Choice(FP8_RECIPES),
              help="torchao's float8 scaling: one scale per tensor (sifar-train's) or per row")
@click.option("--attention", default="auto", show_default=True, type=click.Choice(ATTENTION_IMPLS),
              help="the Swin window attention (auto: FlexAttention on a GPU)")
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the records here")
def main(ways: str, model_name: str, clips: int, frame_size: int, steps: int, lr: float, seed: int, recipe: str,
         attention: str, device: str, json_path: str | None) -> None:
    chosen = comma_items(ways)
    unknown = [way for way in chosen if way not in WAYS]
    if unknown or not chosen:
        raise click.BadParameter(f"{', '.join(unknown) or 'none given'}: the ways are {', '.join(WAYS)}",
                                 param_hint="--ways")
    torch.manual_seed(seed)
    frames = torch.randn(clips, 8, 3, frame_size, frame_size, device=device)
    labels = torch.randint(0, CLASSES, (clips,), device=device)
    report = {"model": model_name, "clips": clips, "frame_size": frame_size, "lr": lr, "recipe": recipe,
              "attention": attention, "device": device,
              "ways": {way: probe(way, model_name, frames, labels, steps, lr, seed, recipe, attention)
                       for way in chosen}}
    if json_path:
        write_json(json_path, report)


if __name__ == "__main__":
    main()
