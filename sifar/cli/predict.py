"""``sifar-predict``: top-k classes of video files, decoded directly (no shards needed), and what the model looks at."""

from __future__ import annotations

import json

import click
from tqdm import tqdm

from sifar.cam import (
    METHODS,
    ClassActivationMap,
    UnknownClassError,
    class_index,
    write_cam,
)
from sifar.checkpoint_file import CheckpointError
from sifar.cli.options import command_settings, config_from_options, dataclass_options, usage_error
from sifar.config_fields import ConfigError
from sifar.data.ffmpeg import DecodeError
from sifar.predict import Prediction, PredictSettings, Predictor, explain
from sifar.progress import progress_bar


@command_settings("sifar-predict")
@click.argument("videos", nargs=-1, required=True, type=click.Path())
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="A sifar checkpoint.")
@dataclass_options(PredictSettings)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per video.")
@click.option("--device", default="auto", show_default=True)
@click.option("--cam", "cam_path", type=click.Path(dir_okay=False),
              help="Write the super image of the centre view (1 clip x 1 centre crop) with the class activation "
                   "map over it to this PNG (one video only).")
@click.option("--cam-frames", type=click.Path(file_okay=False),
              help="Write one overlaid PNG per frame, cut back out of the grid, to this folder (frame_000.png, ... "
                   "in time order).")
@click.option("--cam-method", default="ablation", show_default=True, type=click.Choice(METHODS),
              help="ablation: Ablation-CAM as in the paper (one backbone pass, then ceil(C/N) head passes for C "
                   "channels, e.g. 1024/N for Swin-B); gradcam: one backward pass through the head.")
@click.option("--class", "class_name", help="Class to explain (default: the top class of the centre view).")
@click.option("--cam-batch", default=128, show_default=True, type=click.IntRange(min=1),
              help="N: channels ablated per head pass; lower it if memory runs short.")
@click.option("--cam-stage", default=-1, show_default=True, type=int,
              help="Backbone stage whose feature map is weighed, from 0 (-1: the last, as in the paper). The last "
                   "has 2x2 positions per 64-px frame; each earlier stage doubles that, for small objects.")
def main(videos, checkpoint, as_json, device, cam_path, cam_frames, cam_method, class_name, cam_batch, cam_stage,
         **values) -> None:
    """Classify VIDEOS with the same sampling and views as evaluation.

    With --cam / --cam-frames, also show where the model looks (paper Fig. 5). Ablation-CAM runs the backbone
    once and then only the head (the stages after --cam-stage, final norm, pooling, classifier) on copies of the
    stage's feature map with one channel zeroed each, N copies per pass: ceil(C/N) extra head passes for C
    channels (Swin-B's last stage: 1024 channels, 8 passes at N=128). Grad-CAM costs one backward pass through
    the head.
    """
    try:
        settings = config_from_options(PredictSettings, values)
    except ConfigError as err:
        raise usage_error(err) from err
    explaining = cam_path is not None or cam_frames is not None
    if explaining and len(videos) != 1:
        raise click.UsageError(f"--cam and --cam-frames explain one video at a time, got {len(videos)}")
    if class_name is not None and not explaining:
        raise click.UsageError("--class picks the class to explain: use it with --cam or --cam-frames")
    try:
        predictor = Predictor.from_checkpoint(checkpoint, device, settings)
    except (FileNotFoundError, CheckpointError) as err:
        raise click.ClickException(str(err)) from err
    except ValueError as err:  # the device
        raise usage_error(err) from err
    trained, target = predictor.trained, predictor.device
    try:
        cam_class = None if class_name is None else class_index(trained.classes, class_name)
    except UnknownClassError as err:
        raise click.BadParameter(str(err), param_hint="--class") from err
    try:
        trained.model.stage_index(cam_stage)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--cam-stage") from err
    for video in progress_bar(videos, len(videos) > 1, desc="predicting", unit="video", leave=False):
        try:
            result = predictor.predict(video)
        except (DecodeError, ValueError, OSError) as err:
            raise click.ClickException(f"{video} is not a readable video: {err}") from err
        cam = _explain(trained, video, target, cam_class, cam_method, cam_batch, cam_stage) if explaining else None
        written = _write_cam(cam, cam_path, cam_frames) if cam is not None else []
        with tqdm.external_write_mode():  # each video's lines above the bar, not through it
            _echo(result, cam, written, as_json)


def _echo(result: Prediction, cam: ClassActivationMap | None, written: list, as_json: bool) -> None:
    """One video's result: a JSON line, or its classes (and the map's files) as lines."""
    if as_json:
        record = result.as_dict()
        if cam is not None:
            record["cam"] = {"class": cam.class_name, "probability": round(cam.probability, 6),
                             "method": cam.method, "stage": cam.stage, "files": [str(p) for p in written]}
        click.echo(json.dumps(record))
        return
    click.echo(result.video)
    for name, prob in zip(result.classes, result.probabilities):
        click.echo(f"  {prob:7.2%}  {name}")
    if cam is not None:
        click.echo(f"  {cam.method} map of {cam.class_name} ({cam.probability:.2%} on the centre view): "
                   f"{', '.join(map(str, written[:2]))}{' ...' if len(written) > 2 else ''}")


def _explain(trained, video, device, cam_class, method, batch, stage) -> ClassActivationMap:
    try:
        return explain(trained, video, device, cam_class, method, batch, stage)
    except ValueError as err:
        raise click.ClickException(f"no class activation map for {video}: {err}") from err


def _write_cam(cam: ClassActivationMap, cam_path, cam_frames) -> list:
    try:
        return write_cam(cam, cam_path, cam_frames)
    except OSError as err:
        raise click.ClickException(f"could not write the class activation map to {cam_path or cam_frames}: {err}") \
            from err


if __name__ == "__main__":
    main()
