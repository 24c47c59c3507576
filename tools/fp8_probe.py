"""Where do fp8 training's NaN gradients come from? (issue 30, session 19)

On an H100, tests/test_gpu.py's fixed-batch fp8 test got NaN gradients where bf16 trains (docs/PERFORMANCE.md,
"fp8"). This probe runs that test's loop, fp8 only, in chosen ways (``eager``; ``compile`` as ``sifar-train``
compiles; ``compile-nopdl``, plain ``torch.compile``) and reports after each backward which parameters' gradients
are not finite, whether the logits were (a NaN born in the forward), and whether the step left non-finite weights
(the way stops there). In the eager way it also names the module where a NaN of the backward is born: backward
hooks on every leaf module with parameters record the first one (in backward order) whose output gradients are
finite and whose input gradients are not.

    python -m tools.fp8_probe --ways eager,compile --steps 4 --json fp8_probe.json
    python -m tools.fp8_probe --ways compile --recipe rowwise --steps 4   # does per-row scaling avoid it?
"""

from __future__ import annotations

import click
import torch
from torch import nn

from sifar.cli.options import comma_items
from sifar.io import write_json
from sifar.models import create_model
from sifar.models.compile import compile_model
from sifar.models.float8 import FP8_RECIPES, convert_to_float8
from sifar.precision import autocast_for

WAYS = ("eager", "compile", "compile-nopdl")
CLASSES = 10  # as tests/test_gpu.py's fp8 test: the same seed then gives the same batch


def _finite(tensors) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def watch_nan_birth(model: nn.Module) -> dict:
    """Backward hooks on ``model``'s leaf modules; the returned dict gets ``born_in``, the first module whose
    output gradients are finite and input gradients are not (None until one is seen)."""
    seen = {"born_in": None}

    def hook(name: str):
        def record(_module, grad_input, grad_output) -> None:
            if seen["born_in"] is None and _finite(grad_output) and not _finite(grad_input):
                seen["born_in"] = name
        return record

    for name, module in model.named_modules():
        if not list(module.children()) and any(p.requires_grad for p in module.parameters(recurse=False)):
            module.register_full_backward_hook(hook(name))
    return seen


def stepper(way: str, model: nn.Module) -> nn.Module:
    """``model`` as ``way`` runs it."""
    if way == "eager":
        return model
    return compile_model(model, training=True) if way == "compile" else torch.compile(model)


def probe(way: str, model_name: str, frames: torch.Tensor, labels: torch.Tensor, steps: int, lr: float,
          seed: int, recipe: str = "tensorwise") -> list[dict]:
    """One record a step of the fixed-batch loop, fp8 with torchao's ``recipe``, done ``way``."""
    device = frames.device
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=CLASSES, drop_path_rate=0.0).to(device)
    convert_to_float8(model, device, recipe)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    births = watch_nan_birth(model) if way == "eager" else None
    step_model = stepper(way, model)
    records = []
    for step in range(1, steps + 1):
        with autocast_for(device, "fp8"):
            logits = step_model(frames).float()
            loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        records.append({"step": step, "loss": loss.item(), "logits_finite": _finite([logits]),
                        "non_finite_grads": [name for name, grad in grads.items() if not _finite([grad])],
                        "of": len(grads), "born_in": births["born_in"] if births else None,
                        "non_finite_weights": [name for name, p in model.named_parameters() if not _finite([p])]})
        print(f"{way} step {step}: loss {records[-1]['loss']:.4f}, {len(records[-1]['non_finite_grads'])} of "
              f"{len(grads)} gradients not finite" + (f", born in {births['born_in']}" if births else ""),
              flush=True)
        if records[-1]["non_finite_weights"]:
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
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the records here")
def main(ways: str, model_name: str, clips: int, frame_size: int, steps: int, lr: float, seed: int, recipe: str,
         device: str, json_path: str | None) -> None:
    chosen = comma_items(ways)
    unknown = [way for way in chosen if way not in WAYS]
    if unknown or not chosen:
        raise click.BadParameter(f"{', '.join(unknown) or 'none given'}: the ways are {', '.join(WAYS)}",
                                 param_hint="--ways")
    torch.manual_seed(seed)
    frames = torch.randn(clips, 8, 3, frame_size, frame_size, device=device)
    labels = torch.randint(0, CLASSES, (clips,), device=device)
    report = {"model": model_name, "clips": clips, "frame_size": frame_size, "lr": lr, "recipe": recipe,
              "device": device,
              "ways": {way: probe(way, model_name, frames, labels, steps, lr, seed, recipe) for way in chosen}}
    if json_path:
        write_json(json_path, report)


if __name__ == "__main__":
    main()
