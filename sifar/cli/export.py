"""``sifar-tools export``: a training checkpoint as safetensors weights or an ONNX graph, its setup beside it."""

from __future__ import annotations

import click

from sifar.checkpoint import EMA_HELP
from sifar.checkpoint_file import CheckpointError
from sifar.export import FORMATS, export_checkpoint, setup_path
from sifar.io import check_local_folder


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "format", type=click.Choice(FORMATS), required=True,
              help="safetensors (weights, for PyTorch: sifar.export.load_exported) or onnx (a graph taking clips "
                   "(B, T, C, H, W) float32, already normalized; needs the export extra).")
@click.option("--output", required=True, type=click.Path(dir_okay=False),
              help="The file to write; the setup (model, clip, classes, normalization) goes to <output>.json.")
@click.option("--ema/--no-ema", default=None, help=EMA_HELP)
def export_command(checkpoint: str, format: str, output: str, ema: bool | None) -> None:
    """Export a sifar checkpoint's model for serving, with its setup in a JSON file beside it."""
    try:
        check_local_folder(output)
    except ValueError as err:
        raise click.UsageError(f"Invalid value for '--output': {err}") from err
    try:
        trained = export_checkpoint(checkpoint, output, format, ema)
    except (ImportError, CheckpointError) as err:
        raise click.ClickException(str(err)) from err
    except OSError as err:
        raise click.ClickException(f"could not write {output} ({err.strerror or err}); choose a writable "
                                   f"--output") from err
    click.echo(f"{trained.weights} weights of {checkpoint} -> {output} ({format}), setup -> {setup_path(output)}")


COMMANDS = [export_command]
