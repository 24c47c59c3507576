"""``sifar-predict``: top-k classes of video files, decoded directly (no shards needed)."""

from __future__ import annotations

import json

import click
import torch

from sifar.checkpoint import model_from_checkpoint
from sifar.data.ffmpeg import DecodeError
from sifar.models.weights import CheckpointError
from sifar.predict import predict


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("videos", nargs=-1, required=True, type=click.Path())
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="A sifar checkpoint.")
@click.option("--topk", default=5, show_default=True, help="Classes to print per video.")
@click.option("--clips", default=1, show_default=True, help="Temporal clips per video.")
@click.option("--crops", default=3, show_default=True, type=click.Choice(["1", "3"]), help="Spatial crops per clip.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per video.")
@click.option("--device", default="auto", show_default=True)
def main(videos, checkpoint, topk, clips, crops, as_json, device) -> None:
    """Classify VIDEOS with the same sampling and views as evaluation."""
    target = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          ("cpu" if device == "auto" else device))
    try:
        model, classes = model_from_checkpoint(checkpoint)
    except (FileNotFoundError, CheckpointError) as err:
        raise click.ClickException(str(err)) from err
    model.to(target)
    for video in videos:
        try:
            result = predict(model, classes, video, target, topk=topk, clips=clips, crops=int(crops))
        except (DecodeError, ValueError, OSError) as err:
            raise click.ClickException(f"{video} is not a readable video: {err}") from err
        if as_json:
            click.echo(json.dumps(result.as_dict()))
            continue
        click.echo(video)
        for name, prob in zip(result.classes, result.probabilities):
            click.echo(f"  {prob:7.2%}  {name}")


if __name__ == "__main__":
    main()
