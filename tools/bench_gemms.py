"""A SIFAR model's inference GEMMs, each timed as the model runs it and as cuBLASLt's autotuned best.

    python -m tools.bench_gemms [--model SIFAR-B-12] [--clips 32] [--crops 3] [--json gemms.json]

Every ``nn.Linear`` call of one inference step (``--clips`` x ``--crops`` super images), grouped by shape: the
rows it multiplies, its in and out features, and its epilogue (bias; bias and GELU for a Swin MLP's ``fc1``, which
half-precision inference runs through cuBLASLt's GELU epilogue, :mod:`sifar.models.mlp`). The shapes are read on
the CPU from forward hooks on one super image; on the GPU each shape is timed in bf16 (GPU us a call, between CUDA
events over back-to-back calls) two ways:

- torch: ``nn.Linear`` or ``sifar.models.mlp.linear_gelu``, cuBLAS's heuristic pick, as the model calls them;
- nvmath: the same product and epilogue through nvmath-python's ``Matmul``, planned and autotuned over
  cuBLASLt's algorithms (``tools.autotuned_linears.autotuned_linear``, the candidate's op);

and, to tell a slow epilogue from slow stores, the product alone (``x @ weight.T``, no bias or GELU: the same
bytes written, nothing computed on them).

Why: in session 27's inference profile fc1 with its GELU epilogue ran at ~470 TFLOP/s and qkv at ~530, against ~705
for fc2 and proj at stage 2: about their compute plus their 3-4x wider outputs' stores, unoverlapped. Whether
another cuBLASLt algorithm overlaps them is what this measures before any model path changes.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import torch
from torch import nn

from sifar.models import create_model, get_config
from sifar.models.mlp import GeluEpilogueMlp, linear_gelu
from tools.autotuned_linears import autotuned_linear, epilog_name
from tools.bench_train import back_to_back_ms


WAYS = ("torch", "nvmath", "product")  # as the model calls it, autotuned, the product alone


@dataclass(frozen=True)
class GemmShape:
    """One kind of ``nn.Linear`` call: ``layers`` names its modules (a stage's blocks as ``blocks.*``); ``calls`` a
    step."""

    layers: str
    rows: int
    in_features: int
    out_features: int
    bias: bool
    gelu: bool  # the tanh GELU in the GEMM's epilogue (fc1 in half-precision inference)
    calls: int

    @property
    def flops(self) -> int:
        return 2 * self.rows * self.in_features * self.out_features

    @property
    def epilogue(self) -> str:
        return epilog_name(self.gelu, self.bias)


def _gelu_fc1s(model: nn.Module) -> set[nn.Module]:
    """The ``fc1`` layers whose GELU half-precision inference runs in the GEMM's epilogue."""
    return {m.fc1 for m in model.modules() if isinstance(m, GeluEpilogueMlp) and m.gelu_epilogue}


def inference_gemms(model_name: str, super_images: int) -> list[GemmShape]:
    """The GEMM shapes of ``model_name``'s inference on ``super_images`` super images, in call order, found by
    running one random super image on the CPU with a hook on every ``nn.Linear``."""
    model = create_model(model_name, num_classes=400).eval()
    config = get_config(model_name)
    gelu = _gelu_fc1s(model)
    seen: dict[tuple, list] = {}

    def record(name: str):
        def hook(module: nn.Linear, args: tuple) -> None:
            rows = args[0].numel() // module.in_features * super_images
            key = (re.sub(r"blocks\.\d+", "blocks.*", name), rows, module.in_features, module.out_features,
                   module.bias is not None, module in gelu)
            seen.setdefault(key, [0])[0] += 1
        return hook

    handles = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules()
               if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(torch.randn(1, config.num_frames, 3, config.frame_size, config.frame_size))
    for handle in handles:
        handle.remove()
    return [GemmShape(*key, calls=count[0]) for key, count in seen.items()]


def _gpu_us(fn, iterations: int) -> float:
    """GPU microseconds a call of ``fn``, ``iterations`` calls back to back between two CUDA events."""
    return back_to_back_ms(fn, warmup=3, steps=iterations) * 1e3


@torch.no_grad()
def time_gemm(shape: GemmShape, iterations: int = 20) -> dict:
    """``shape`` in bf16 on the GPU: GPU us a call through torch (as the model calls it: ``nn.Linear``, or
    :func:`sifar.models.mlp.linear_gelu` for fc1), through nvmath (:func:`autotuned_linear`) and as the product
    alone, and the first two results' relative difference."""
    x = torch.randn(shape.rows, shape.in_features, device="cuda", dtype=torch.bfloat16)
    linear = nn.Linear(shape.in_features, shape.out_features, bias=shape.bias, device="cuda", dtype=torch.bfloat16)

    def through_torch():
        return linear_gelu(x, linear) if shape.gelu else linear(x)

    def through_nvmath():
        return autotuned_linear(x, linear.weight, linear.bias, shape.gelu)

    def product_alone():
        return x @ linear.weight.t()

    expected = through_torch().float()
    difference = ((through_nvmath().float() - expected).norm() / expected.norm()).item()
    ways = dict(zip(WAYS, (through_torch, through_nvmath, product_alone)))
    return {f"{way}_us": _gpu_us(fn, iterations) for way, fn in ways.items()} | {"relative_difference": difference}


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--model", "model_name", default="SIFAR-B-12", show_default=True)
@click.option("--clips", default=32, show_default=True, help="clips a step")
@click.option("--crops", default=3, show_default=True, help="super images a clip")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="write the rows here")
def main(model_name: str, clips: int, crops: int, json_path: Path | None) -> None:
    if not torch.cuda.is_available():
        raise click.UsageError("bench_gemms times cuBLAS on a CUDA GPU; this machine has none")
    rows, totals = [], dict.fromkeys((f"{way}_ms" for way in WAYS), 0.0)
    for shape in inference_gemms(model_name, clips * crops):
        timed = time_gemm(shape)
        rows.append(asdict(shape) | {"epilogue": shape.epilogue} | timed)
        us_by_way = {way: timed[f"{way}_us"] for way in WAYS}
        for way, us in us_by_way.items():
            totals[f"{way}_ms"] += shape.calls * us / 1e3
        columns = "  ".join(f"{way} {us:7.1f} us ({shape.flops / us / 1e6:4.0f} TFLOP/s)"
                            for way, us in us_by_way.items())
        print(f"{shape.layers:32s} x{shape.calls:<2d} {shape.rows:8d} x {shape.in_features:4d} -> "
              f"{shape.out_features:4d} {shape.epilogue:9s} {columns}  difference {timed['relative_difference']:.1e}",
              flush=True)
    print("a step's GEMMs: " + ", ".join(f"{way} {totals[f'{way}_ms']:.2f} ms" for way in WAYS))
    if json_path is not None:
        json_path.write_text(json.dumps({"model": model_name, "super_images": clips * crops, "gemms": rows,
                                         **totals, "device": torch.cuda.get_device_name()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
