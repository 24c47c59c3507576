"""``sifar-tools models`` and ``sifar-tools flops``: what each registered model is and costs."""

from __future__ import annotations

import click

from sifar.models import list_configs, resolve_config
from sifar.models.flops import count_cost


@click.command("models")
def models_command() -> None:
    """List every registered model: frames, layout, frame size, GFLOPs (multiply-adds) and parameters."""
    click.echo(f"{'name':40s} {'alias':18s} {'frames':>6s} {'layout':>6s} {'size':>5s} {'GFLOPs':>8s} {'params':>8s}")
    for config in list_configs():
        cost = count_cost(config.name)
        rows, cols = config.grid
        click.echo(
            f"{config.name:40s} {config.aliases[0]:18s} {config.num_frames:6d} {f'{rows}x{cols}':>6s} "
            f"{config.frame_size:5d} {cost.gflops:8.1f} {cost.params_m:7.1f}M"
        )


@click.command("flops")
@click.argument("name")
@click.option("--num-frames", "frames", type=int, default=None, help="Frames per clip (default: the model's).")
@click.option("--layout", default=None, help="Grid as ROWSxCOLS (default: the paper's rule for the frame count).")
@click.option("--frame-size", type=int, default=None, help="Frame side in pixels (default: the model's).")
@click.option("--num-classes", type=int, default=400, show_default=True, help="Classes of the head.")
def flops_command(name: str, frames: int | None, layout: str | None, frame_size: int | None, num_classes: int) -> None:
    """Print GFLOPs (multiply-adds, the paper's convention) and parameters of one clip's forward pass."""
    try:
        config = resolve_config(name)
        cost = count_cost(name, num_classes=num_classes, num_frames=frames, layout=layout, frame_size=frame_size)
    except (KeyError, ValueError) as err:
        raise click.ClickException(str(err.args[0] if err.args else err)) from err
    click.echo(f"{config.name}: {cost.gflops:.1f} GFLOPs, {cost.params_m:.1f}M parameters")


COMMANDS = [models_command, flops_command]
